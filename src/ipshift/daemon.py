"""The daemon: kernel events -> health -> plans -> executor, and nothing else.

Theory of operation
-------------------
One asyncio loop. The netlink monitor (bound before the first dump, so no
change is lost between the two) feeds :class:`ipshift.events` values; link
events of configured NICs go through the pure health machine
(:mod:`ipshift.health`); whenever a NIC's usability changes, the converge task
wakes and asks the pure planner (:func:`ipshift.plan.converge`) for the plans
that bring the kernel to the configured placement from the daemon's cached
view of the kernel, then runs them with the executor:

1. the conflict probes of every move, concurrently (one timeout in all);
2. every move's remaining steps, the moves concurrently; a failed step undoes
   that move's completed steps in reverse and records why, and the next
   converge round tries the next candidate for that address;
3. the plan's NIC-level steps (withdraw or restore routes, remove an emptied
   macvlan).

Every step is timed and logged; every plan run becomes a record that
``ipshift status`` shows. The cached kernel view is updated from events on the
hot path (no re-dump before acting) and re-read in the background after every
converge round and on a monitor overrun.

Signals only set flags (SIGTERM/SIGINT: stop, addresses stay where they are;
SIGHUP: reload, an invalid new config is refused and the old one keeps
running).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import ipaddress
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ipshift import health as hl
from ipshift.config import Config, ConfigError, load_config
from ipshift.events import AddressEvent, LinkEvent, LinkGone, Resync
from ipshift.metrics import Tally, View
from ipshift.model import Address, IPAddress, Link, Route, Snapshot
from ipshift.plan import Move, Plan, converge, managed_devices, nic_of, sysctl_warnings
from ipshift.steps import AddAddress, AddRoute, Announce, CheckConflict, DelAddress, DelRoute, Step

log = logging.getLogger("ipshift.daemon")

MAX_RECORDS = 50
MAX_HISTORY = 20  # records in the history file
# Records keep one entry per moved address: with 10,000 addresses, 50 records would be 500,000
# entries (hundreds of MiB). The oldest records go first beyond this many entries in all.
MAX_KEPT_MOVES = 50_000
BULK = 16  # a plan with more moves than this runs phase by phase, each phase one batch
MAX_ROUNDS = 8  # converge rounds in a row before waiting for the next event

MANAGED_SYSCTLS = {
    "arp_ignore": "1",
    "arp_announce": "2",
    "promote_secondaries": "1",
    "ignore_routes_with_linkdown": "1",
}


@dataclass
class StepRecord:
    op: str
    text: str
    at_ms: float  # since the record's t0
    ms: float
    ok: bool
    error: str = ""


@dataclass
class MoveRecord:
    address: str
    source: str
    target: str
    device: str
    ok: bool = False
    error: str = ""
    first_announce_ms: float | None = None
    steps: list[StepRecord] = field(default_factory=list)
    verified: str = ""  # "", "checking", "confirmed by <target>", "unconfirmed: ..."
    confirmed_ms: float | None = None  # since the record's t0


@dataclass
class Record:
    id: int
    kind: str  # failover | failback
    nic: str
    trigger: str
    started: float  # wall clock
    t0: float  # monotonic: when the trigger reached the daemon
    moves: list[MoveRecord] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    nic_steps: list[StepRecord] = field(default_factory=list)
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Daemon:
    """The running daemon. Construct, then ``await run()``; nothing happens in the constructor."""

    def __init__(self, config: Config, config_path: str, *, socket_path: str | None = None,
                 kill_at: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.socket_path = socket_path or config.socket
        self.kill_at = kill_at
        self.health: dict[str, hl.NicHealth] = {}
        self.links: dict[str, Link] = {}
        self.addresses: dict[tuple[str, IPAddress], Address] = {}
        self.snapshot = Snapshot()
        self.drained: set[str] = set()
        self.bring_back_once: set[str] = set()
        self.findings: dict[tuple[IPAddress, str], str] = {}
        self.since: dict[str, tuple[str, float]] = {}  # address -> (device, wall time)
        self.records: deque[Record] = deque(maxlen=MAX_RECORDS)
        self._history: deque[dict[str, Any]] = deque(maxlen=MAX_HISTORY)  # finished records as dicts (journal)
        self.tally = Tally()  # counters for the metrics since start
        self._last_doc: dict[str, Any] = {}
        self.last_trigger: dict[str, tuple[str, float]] = {}
        self._record_id = 0
        self._dirty = asyncio.Event()
        self._cool = asyncio.Event()  # clear while moves run: the monitor waits (see _consume)
        self._cool.set()
        self._stop = asyncio.Event()
        self._reload = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._warned: set[tuple[str, str]] = set()
        self._refused_logged: set[str] = set()
        self.link_ok: dict[str, bool] = {}
        self.path: dict[str, str] = {}  # NIC -> path verdict (unverified | up | failed) when probing
        self.prober: Any = None
        self._interrupted: set[IPAddress] = set()  # addresses of the move a killed previous run left
        # per kernel dump in flight: the links and addresses events changed meanwhile (None: gone)
        self._overlays: list[tuple[dict[str, Link | None], dict[tuple[str, IPAddress], Address | None]]] = []
        # our own route changes while a re-read runs (routes have no notifications here): replayed on it
        self._route_logs: list[list[tuple[bool, Route]]] = []
        # one converge at a time: the loop's rounds and the operator's commands
        self._converge_lock = asyncio.Lock()
        self.executor: Any = None
        self.journal: Any = None
        self.history_journal: Any = None
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------ timing

    @property
    def timing(self) -> hl.Timing:
        fb = self.config.failback
        return hl.Timing(delay=fb.delay, flap_count=fb.flap_count, flap_window=fb.flap_window)

    # ------------------------------------------------------------------ main

    async def run(self) -> int:
        from ipshift.journal import HISTORY_FILE, Journal, read_state
        from ipshift.kernel.apply import Executor
        from ipshift.kernel.monitor import KernelMonitor

        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                             (signal.SIGHUP, self._on_hup)):
            loop.add_signal_handler(sig, handler)

        self.journal = Journal(self.config.state_dir)
        self.journal.start()
        self.history_journal = Journal(self.config.state_dir, HISTORY_FILE)
        self.history_journal.start()
        state = read_state(self.config.state_dir)
        self.executor = await Executor.open(kill_at=self.kill_at, on_kill=self._kill_self)
        for nic, routes in (state.get("demoted") or {}).items():
            self.executor.demoted[nic] = [_route_from_dict(r) for r in routes]
        self.drained = set(state.get("drained") or []) & set(self.config.interfaces)
        if state.get("in_progress"):
            log.warning("the previous run stopped in the middle of: %s; converging from the kernel's state",
                        state["in_progress"].get("what", "a move"))
            for m in state["in_progress"].get("moves") or []:
                try:
                    self._interrupted.add(ipaddress.ip_interface(m[0]).ip)
                except (ValueError, TypeError, IndexError):
                    continue
        for item in read_state(self.config.state_dir, HISTORY_FILE).get("history") or []:
            rec = _record_from_dict(item)
            if rec is not None:
                self.records.append(rec)
                self._history.append(item)
                self._record_id = max(self._record_id, rec.id)
        self._trim_records()

        server = None
        metrics_server: asyncio.Server | None = None
        try:
            async with KernelMonitor() as monitor:
                await self._resync("start")
                self._apply_sysctls()
                for nic in self.config.interfaces:
                    if nic in self.links:
                        self.executor.keep_secondaries(nic)
                now = time.monotonic()
                for nic in self.config.interfaces:
                    link = self.links.get(nic)
                    self.link_ok[nic] = link is not None and link.healthy
                    self.health[nic] = hl.initial(nic, self.link_ok[nic], now)
                    if link is not None:
                        try:
                            self.executor.prepare(nic)
                        except OSError as exc:
                            log.warning("cannot open a frame socket on %s: %s", nic, exc)
                    else:
                        log.warning("configured NIC %s does not exist", nic)
                self._log_health()
                await self._install_routes()
                self._start_prober()
                if self.config.announce.refresh:
                    self._spawn(self._refresh_announcements(self.config.announce.refresh))
                from ipshift.control import ControlServer
                server = ControlServer(self, self.socket_path)
                await server.start()
                if self.config.metrics is not None:
                    from ipshift import metrics

                    m = self.config.metrics
                    try:
                        metrics_server = await metrics.serve(
                            m.host, m.port,
                            lambda accept: metrics.exposition(metrics.families(self.metrics_view(), self.tally),
                                                              accept))
                        log.info("metrics on http://%s/metrics", m.listen)
                    except OSError as exc:  # failover matters more than its metrics: keep running
                        log.error("cannot serve metrics on %s: %s; running without metrics", m.listen, exc)
                converger = self._spawn(self._converge_loop())
                self._dirty.set()
                events = self._spawn(self._consume(monitor))
                stop = self._spawn(self._stop.wait())
                log.info("ipshift running: %d NICs, %d addresses, pid %d",
                         len(self.config.interfaces), len(self.config.all_addresses()), os.getpid())
                await asyncio.wait({events, stop, converger}, return_when=asyncio.FIRST_COMPLETED)
                # A monitor or converge loop that died must not leave a daemon that no longer fails
                # over: end with an error (the supervisor restarts it; start-up converges from the
                # kernel and the journal).
                for task in (events, converger):
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        log.error("ipshift stops: %s failed", task.get_coro().__name__,  # type: ignore[union-attr]
                                  exc_info=task.exception())
                        raise task.exception()  # type: ignore[misc]
        finally:
            log.info("ipshift stopping; addresses stay where they are")
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for h in self._timers.values():
                h.cancel()
            if self.prober is not None:
                self.prober.stop()
            if server is not None:
                await server.stop()
            if metrics_server is not None:
                metrics_server.close()
            self._journal_now()
            self.journal.close()
            if self.history_journal is not None:
                self.history_journal.close()
            await self.executor.close()
        return 0

    def _on_stop(self) -> None:
        self._stop.set()

    def _on_hup(self) -> None:
        self._reload = True
        self._dirty.set()

    def _kill_self(self) -> None:
        self.journal.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ kernel view

    async def _resync(self, why: str) -> None:
        from ipshift.kernel.snapshot import read_snapshot

        # Events handled while the dump runs may be newer than what it read: they win.
        overlay: tuple[dict[str, Link | None], dict[tuple[str, IPAddress], Address | None]] = ({}, {})
        route_log: list[tuple[bool, Route]] = []
        self._overlays.append(overlay)
        self._route_logs.append(route_log)
        try:
            snap = await asyncio.get_running_loop().run_in_executor(None, read_snapshot)
        finally:
            # by identity: two re-reads can run at once (the converge loop's and the monitor's after
            # an overrun), and their overlays compare equal until an event reaches only one of them
            self._overlays = [o for o in self._overlays if o is not overlay]
            self._route_logs = [r for r in self._route_logs if r is not route_log]
        if route_log:  # route steps that ended while the dump ran may be newer than what it read
            snap = replace(snap, routes=_with_route_changes(snap.routes, route_log))
        self.snapshot = snap
        links: dict[str, Link] = {l.name: l for l in snap.links}
        for name, newer in overlay[0].items():
            if newer is None:
                links.pop(name, None)
            else:
                links[name] = replace(links[name], index=newer.index, mac=newer.mac, admin_up=newer.admin_up,
                                      carrier=newer.carrier, operstate=newer.operstate) \
                    if name in links else newer
        addresses = {(a.ifname, a.ip): a for a in snap.addresses if a.ifname in links}
        for key, addr in overlay[1].items():
            if addr is None:
                addresses.pop(key, None)
            else:
                addresses[key] = addr
        self.links = links
        self.addresses = addresses
        for link in snap.links:
            self.executor.learn_link(link.name, link.index, link.mac)
        log.debug("kernel state read (%s): %d links, %d addresses", why, len(snap.links), len(snap.addresses))

    def _view(self) -> Snapshot:
        """The cached kernel view as a snapshot (links and addresses kept current by events)."""
        return replace(self.snapshot, links=tuple(self.links.values()), addresses=tuple(self.addresses.values()))

    async def _consume(self, monitor: Any) -> None:
        async for ev in monitor.events():
            if not self._cool.is_set():
                # a move is under way: the notifications it causes wait in the kernel's socket
                # buffer rather than being decoded while the move waits for its netlink answers
                await self._cool.wait()
            match ev:
                case LinkEvent():
                    self._on_link(ev)
                    if self._dirty.is_set():
                        # a failure: let the converge task start the move before decoding the
                        # notifications that follow this one (the monitor reads without waiting
                        # while the socket has data)
                        await asyncio.sleep(0)
                case LinkGone(name=name):
                    self.links.pop(name, None)
                    for ol, oa in self._overlays:
                        ol[name] = None
                        for key in [k for k in oa if k[0] == name]:
                            oa[key] = None
                    self.executor.forget_link(name)
                    self.addresses = {k: v for k, v in self.addresses.items() if k[0] != name}
                    if name in self.health:
                        self._observe(name, False, ev.at, "device removed")
                case AddressEvent(added=added, ifname=ifname, interface=iface):
                    key = (ifname, iface.ip)
                    if added:
                        self.addresses[key] = Address(ifname=ifname, interface=iface)
                    else:
                        self.addresses.pop(key, None)
                    for _, oa in self._overlays:
                        oa[key] = self.addresses.get(key)
                case Resync(reason=reason):
                    log.warning("netlink monitor overran (%s): re-reading the kernel state", reason)
                    await self._resync("overrun")
                    for nic, link in self.links.items():
                        if nic in self.health:
                            self.link_ok[nic] = link.healthy
                            self._observe(nic, self._nic_ok(nic), time.monotonic(), "state after resync")
                    self._dirty.set()
                case _:
                    raise AssertionError(f"unknown kernel event {ev!r}")

    def _on_link(self, ev: LinkEvent) -> None:
        old = self.links.get(ev.name)
        if old is None:
            link = Link(name=ev.name, index=ev.index, mac=ev.mac, admin_up=ev.admin_up, carrier=ev.carrier,
                        operstate=ev.operstate, kind=ev.kind)
            self._spawn(self._refresh_later())
        else:
            link = replace(old, index=ev.index, mac=ev.mac, admin_up=ev.admin_up, carrier=ev.carrier,
                           operstate=ev.operstate)
        self.links[ev.name] = link
        for ol, _ in self._overlays:
            ol[ev.name] = link
        self.executor.learn_link(ev.name, ev.index, ev.mac)
        if ev.name in self.health:
            why = ("administratively down" if not ev.admin_up else
                   "carrier lost" if not ev.carrier else f"operstate {ev.operstate}")
            self.link_ok[ev.name] = ev.link_ok
            if ev.link_ok and self.path.get(ev.name) == "failed":
                why = self.health[ev.name].reason
            self._observe(ev.name, self._nic_ok(ev.name), ev.at, why)
            if self.prober is not None and ev.name not in self.prober.nics and ev.mac:
                self.prober.add(ev.name, ev.mac)

    def _nic_ok(self, nic: str) -> bool:
        """Link up, and the path probes (when configured) have not failed."""
        return self.link_ok.get(nic, False) and self.path.get(nic) != "failed"

    def _on_path(self, nic: str, verdict: str, why: str, at: float) -> None:
        """A path-probe verdict changed (called by the prober, on the loop)."""
        self.path[nic] = verdict
        log.info("%s path %s%s", nic, verdict, f": {why}" if why else "")
        if nic in self.health:
            self._observe(nic, self._nic_ok(nic), at, why or f"path {verdict}")

    def _probe_source(self, nic: str, target: IPAddress) -> IPAddress | None:
        """The address a path probe from ``nic`` uses: its own, in the target's subnet (IPv6: or its
        link-local); None (0.0.0.0 for ARP) when it holds none, e.g. after its addresses moved away."""
        link_local: IPAddress | None = None
        for (ifname, ip), a in self.addresses.items():
            if ifname != nic or ip.version != target.version:
                continue
            if target in a.network and not (ip.version == 6 and ip.is_link_local):
                return ip
            if ip.version == 6 and ip.is_link_local:
                link_local = ip
        return link_local

    def _start_prober(self) -> None:
        from ipshift.pathprobe import PathProber

        if self.prober is not None:
            self.prober.stop()
            self.prober = None
        probe = self.config.detect.probe
        if probe is None:
            self.path.clear()
            return
        self.prober = PathProber(probe.targets, probe.interval, probe.misses, probe.rises, probe.mode,
                                 self._on_path, self._probe_source, timeout=probe.reply_timeout)
        for nic in self.config.interfaces:
            link = self.links.get(nic)
            if link is not None and link.mac:
                self.prober.add(nic, link.mac)
                self.path.setdefault(nic, "unverified")
        self.prober.start()
        log.info("path probing %s every %.0f ms from %s (%d misses fail a NIC, %d answers restore it)",
                 ", ".join(map(str, probe.targets)), probe.interval * 1000, ", ".join(sorted(self.prober.nics)),
                 probe.misses, probe.rises)

    async def _refresh_later(self) -> None:
        await asyncio.sleep(0.05)
        await self._resync("new link")

    # ------------------------------------------------------------------ health

    def _observe(self, nic: str, ok: bool, at: float, why: str) -> None:
        h, outputs = hl.observe(self.health[nic], ok, time.monotonic(), self.timing, reason=why)
        self.health[nic] = h
        self._outputs(outputs, at)

    def _outputs(self, outputs: tuple[hl.Output, ...], at: float) -> None:
        for out in outputs:
            match out:
                case hl.Failed(nic=nic, reason=reason):
                    log.warning("%s failed: %s", nic, reason)
                    self.last_trigger[nic] = (reason, at)
                    self._dirty.set()
                case hl.Recovered(nic=nic):
                    log.info("%s is healthy again", nic)
                    self.last_trigger[nic] = ("recovered", time.monotonic())
                    self._dirty.set()
                case hl.Held(nic=nic, reason=reason):
                    log.warning("%s held down: %s", nic, reason)
                case hl.Wakeup(nic=nic, at=when):
                    self._wake(nic, when)
                case _:
                    raise AssertionError(f"unknown health output {out!r}")

    def _wake(self, nic: str, when: float) -> None:
        old = self._timers.pop(nic, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - time.monotonic())
        self._timers[nic] = loop.call_later(delay, self._tick, nic)

    def _tick(self, nic: str) -> None:
        self._timers.pop(nic, None)
        if nic not in self.health:
            return
        h, outputs = hl.tick(self.health[nic], time.monotonic(), self.timing)
        self.health[nic] = h
        self._outputs(outputs, time.monotonic())

    def usable(self) -> dict[str, bool]:
        return {nic: h.usable and nic not in self.drained for nic, h in self.health.items()}

    def unhealthy(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for nic, h in self.health.items():
            if nic in self.drained:
                out[nic] = "drained by the operator (ipshift failover)"
            elif not h.usable:
                out[nic] = h.reason or h.state
        return out

    def _log_health(self) -> None:
        for nic, h in sorted(self.health.items()):
            log.info("%s: %s%s", nic, h.state, f" ({h.reason})" if h.reason else "")

    # ------------------------------------------------------------------ converge

    async def _converge_loop(self) -> None:
        first = True
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # No cycle collection while a failover is planned and run: a full collection of a
            # daemon holding 1,000 addresses took 37 ms, at whatever moment the allocation counters
            # picked (pyroute2's decoded messages form reference cycles: each re-read of the kernel
            # leaves tens of thousands of them). The garbage is collected below, when nothing waits.
            gc_was_on = gc.isenabled()
            gc.disable()
            try:
                async with self._converge_lock:
                    await self._converge_round()
            finally:
                if gc_was_on:
                    gc.enable()
            gc.collect()
            if first:
                # what start-up built lives as long as the daemon: keep it out of later collections
                gc.freeze()
                first = False
                self.ready.set()

    async def _converge_round(self) -> None:
        if self._reload:
            self._reload = False
            self._do_reload()
        moved: set[str] = set()
        for _ in range(MAX_ROUNDS):
            recs = await self.converge_once()
            if not recs:
                break
            moved.update(m.address for r in recs for m in r.moves if m.ok)
            await self._resync("between rounds")
        if self._interrupted:
            await self._announce_interrupted(moved)
        self.findings.clear()
        self.bring_back_once.clear()
        self._journal_now()
        await self._resync("after converge")

    async def _announce_interrupted(self, moved: set[str]) -> None:
        """Announce the addresses of the move the previous run died in, where they are now.

        It may have died between adding an address and announcing it: the kernel then looks
        converged, but the network still sends to the old MAC. Addresses this run has moved
        (and announced) since, held twice, or on a NIC that is not usable are left alone.
        """
        ips, self._interrupted = self._interrupted, set()
        moved_ips = {ipaddress.ip_interface(a).ip for a in moved}
        view = self._view()
        usable = self.usable()
        for ip in ips - moved_ips:
            found = view.where_is(ip)
            if len(found) != 1:
                continue
            dev = found[0].ifname
            if not usable.get(nic_of(view, dev), False):
                continue
            step = Announce(dev, ip, self.config.announce.count, self.config.announce.interval)
            sr = await self._timed(step, time.monotonic())
            log.info("announced %s on %s again: the previous run stopped in the middle of moving it%s",
                     ip, dev, "" if sr.ok else f" (failed: {sr.error})")

    async def converge_once(self, *, only: str | None = None) -> list[Record]:
        """Plan and run what brings the kernel to the configured placement. Returns the records."""
        view = self._view()
        bring_back = frozenset(
            n for n, ok in self.usable().items()
            if ok and (self.config.failback.mode == "auto" or n in self.bring_back_once))
        plans = converge(self.config, view, self.usable(), unhealthy=self.unhealthy(),
                         bring_back=bring_back, conflicts=self.findings)
        records: list[Record] = []
        for plan in plans:
            if only is not None and plan.failed != only:
                continue
            if not plan.moves:
                key = f"{plan.failed}:" + ",".join(sorted(str(r.interface) for r in plan.refusals))
                if key not in self._refused_logged:
                    self._refused_logged.add(key)
                    for r in plan.refusals:
                        reasons = "; ".join(f"{c.nic}: [{f.code}] {f.reason}" for c in r.candidates
                                            for f in c.failures) or r.reason
                        log.warning("%s stays on %s: no NIC can take it (%s)", r.interface, r.source, reasons)
                continue
            records.append(await self.execute(plan))
        return records

    async def execute(self, plan: Plan) -> Record:
        # a trigger is used by the first plan it causes; later rounds are timed from their own start
        trigger, t0 = self.last_trigger.pop(plan.failed, ("converge", time.monotonic()))
        if plan.kind == "failback" and trigger != "recovered":
            trigger = "placement" if trigger == "converge" else trigger
        self._record_id += 1
        rec = Record(self._record_id, plan.kind, plan.failed, trigger, time.time(), t0)
        for r in plan.refusals:
            rec.refused.append({"address": str(r.interface), "codes": sorted(r.codes()),
                                "reasons": [f"{c.nic}: [{f.code}] {f.reason}" for c in r.candidates
                                            for f in c.failures] or [r.reason]})
        self._journal_now(in_progress={"what": f"{plan.kind} of {plan.failed}",
                                       "moves": [(str(m.interface), m.source, m.target) for m in plan.moves]})
        for step in plan.prelude:
            rec.nic_steps.append(await self._timed(step, rec.t0))
        move_recs = [MoveRecord(str(m.interface), m.source, m.survivor, m.target) for m in plan.moves]
        rec.moves = move_recs
        # 1. conflict probes, all at once (strict mode: before anything moves)
        probes = [(i, s) for i, m in enumerate(plan.moves) for s in m.steps if isinstance(s, CheckConflict)]
        bulk = len(plan.moves) > BULK
        if probes and bulk:
            await self._bulk_probes(plan, move_recs, probes, rec)
        elif probes and self.config.conflict_check.mode == "strict":
            results = await asyncio.gather(*(self._timed(s, rec.t0) for _, s in probes))
            for (i, step), sr in zip(probes, results):
                move_recs[i].steps.append(sr)
                if not sr.ok:
                    move_recs[i].error = sr.error
                    assert isinstance(step, CheckConflict)
                    self.findings[(step.ip, step.ifname)] = sr.error
                    log.warning("%s not moved to %s: %s", plan.moves[i].interface, step.ifname, sr.error)
        # 2. the moves, concurrently (one move: run it inline, no task hand-off before its first request)
        todo = [(m, r) for m, r in zip(plan.moves, move_recs) if not r.error]
        # the monitor waits until the NIC-level steps are done too: decoding the notifications of
        # 10,000 moved addresses (about 0.4 ms each) would otherwise hold up the last step by seconds
        self._cool.clear()
        try:
            if bulk:
                await self._run_bulk(todo, rec)
            elif len(todo) == 1:
                await self._run_move(todo[0][0], todo[0][1], rec.t0)
            else:
                await asyncio.gather(*(self._run_move(m, r, rec.t0) for m, r in todo))
            # 3. NIC-level steps
            if any(r.ok for r in move_recs):
                for step in plan.postlude:
                    rec.nic_steps.append(await self._timed(step, rec.t0))
        finally:
            self._cool.set()
        rec.total_ms = (time.monotonic() - rec.t0) * 1000.0
        self.tally.record(rec.kind, rec.nic, rec.total_ms / 1000.0, sum(1 for m in rec.moves if m.ok),
                          sum(1 for m in rec.moves if not m.ok), len(rec.refused), time.time())
        self.records.append(rec)
        self._history.append(rec.as_dict())
        self._trim_records()
        if self.history_journal is not None:
            self.history_journal.submit({"history": list(self._history)})
        self._journal_now()
        self._log_record(rec)
        return rec

    async def _bulk_probes(self, plan: Plan, move_recs: list[MoveRecord], probes: Sequence[tuple[int, Step]],
                           rec: Record) -> None:
        """Conflict probes of a large plan: one socket and one timeout per survivor (either mode)."""
        from ipshift.wire.sender import probe_conflicts_many

        by_nic: dict[str, list[tuple[int, CheckConflict]]] = {}
        for i, step in probes:
            assert isinstance(step, CheckConflict)
            by_nic.setdefault(step.ifname, []).append((i, step))
        start = time.monotonic()
        own = frozenset(l.mac for l in self.links.values() if l.mac)
        for nic, items in by_nic.items():
            link = self.links.get(nic)
            if link is None:
                continue
            found = await probe_conflicts_many(nic, link.mac, [st.ip for _, st in items],
                                               self.config.conflict_check.timeout, own_macs=own)
            for i, st in items:
                if st.ip in found:
                    move_recs[i].error = f"{st.describe()}: {found[st.ip]}"
                    self.findings[(st.ip, nic)] = found[st.ip]
        rec.nic_steps.append(StepRecord("CheckConflict", f"conflict probes for {len(probes)} addresses",
                                        (start - rec.t0) * 1000.0, (time.monotonic() - start) * 1000.0,
                                        not any(m.error for m in move_recs),
                                        f"{sum(1 for m in move_recs if m.error)} in use elsewhere"
                                        if any(m.error for m in move_recs) else ""))

    async def _run_bulk(self, todo: list[tuple[Move, MoveRecord]], rec: Record) -> None:
        """Many moves, phase by phase: every move's steps of one kind in one batch, in the order of
        a single move (remove, devices, add, announce, routes, flushes). A move whose step fails is
        undone (its earlier phases reversed) and left for the next round, as a single move is."""
        alive = list(todo)
        done: dict[int, list[Step]] = {id(m): [] for m, _ in todo}
        kinds: list[type] = []
        for m, _ in todo:
            for st in m.steps:
                if type(st) not in kinds and not isinstance(st, CheckConflict):
                    kinds.append(type(st))
        for kind in kinds:
            batch = [(m, r, st) for m, r in alive for st in m.steps if type(st) is kind]
            if not batch:
                continue
            start = time.monotonic()
            if kind in (DelAddress, AddAddress, DelRoute, AddRoute, Announce):
                errors = await self.executor.bulk([st for _, _, st in batch])
            else:  # devices, neighbour and cache flushes: few distinct ones, each once
                errors = []
                seen: dict[Step, str] = {}
                for _, _, st in batch:
                    if st not in seen:
                        sr = await self._timed(st, rec.t0)
                        seen[st] = "" if sr.ok else sr.error
                    errors.append(seen[st])
            end = time.monotonic()
            failed = {id(m) for (m, _, _), e in zip(batch, errors) if e}
            self._note_many([st for (_, _, st), e in zip(batch, errors) if not e])
            for (m, r, st), e in zip(batch, errors):
                if e:
                    if not r.error:
                        r.error = f"{st.describe()}: {e}"
                    continue
                done[id(m)].append(st)
                if isinstance(st, Announce) and r.first_announce_ms is None:
                    r.first_announce_ms = (end - rec.t0) * 1000.0
            n_err = sum(1 for e in errors if e)
            rec.nic_steps.append(StepRecord(kind.__name__, f"{batch[0][2].describe()} and {len(batch) - 1} more"
                                            if len(batch) > 1 else batch[0][2].describe(),
                                            (start - rec.t0) * 1000.0, (end - start) * 1000.0, n_err == 0,
                                            f"{n_err} failed" if n_err else ""))
            if failed:
                for m, r in [(m, r) for m, r in alive if id(m) in failed]:
                    await self._undo(m, r, done[id(m)], rec.t0, "bulk step", r.error)
                alive = [(m, r) for m, r in alive if id(m) not in failed]
        for m, r in alive:
            r.ok = True
            self.since[str(m.interface.ip)] = (m.target, time.time())

    async def _run_move(self, move: Move, mr: MoveRecord, t0: float) -> None:
        """One address's transaction. In optimistic conflict mode the probe runs alongside the move
        (as IPv6 optimistic DAD does) and a conflict found within the timeout undoes the move."""
        done: list[Step] = []
        probe: asyncio.Task[StepRecord] | None = None
        for step in move.steps:
            if isinstance(step, CheckConflict):
                if self.config.conflict_check.mode == "optimistic":
                    probe = asyncio.get_running_loop().create_task(self._timed(step, t0))
                continue
            sr = await self._timed(step, t0)
            mr.steps.append(sr)
            if not sr.ok:
                await self._undo(move, mr, done, t0, sr.text, sr.error)
                if probe is not None:
                    probe.cancel()
                return
            if isinstance(step, Announce) and mr.first_announce_ms is None:
                mr.first_announce_ms = sr.at_ms + sr.ms
            done.append(step)
        if probe is not None:
            sr = await probe
            mr.steps.append(sr)
            if not sr.ok:
                await self._undo(move, mr, done, t0, sr.text, sr.error)
                return
        mr.ok = True
        self.since[str(move.interface.ip)] = (move.target, time.time())
        targets = self._verify_targets(move)
        if targets:
            mr.verified = "checking"
            self._spawn(self._verify(move, mr, targets, t0))

    def _verify_targets(self, move: Move) -> list[IPAddress]:
        """Probe targets and configured gateways in the moved address's subnet."""
        net = move.interface.network
        out: list[IPAddress] = []
        if self.config.detect.probe is not None:
            out += [t for t in self.config.detect.probe.targets if t.version == net.version and t in net]
        for iface in self.config.interfaces.values():
            out += [r.via for r in iface.routes if r.via is not None and r.via.version == net.version
                    and r.via in net and r.via not in out]
        return out

    async def _verify(self, move: Move, mr: MoveRecord, targets: list[IPAddress], t0: float) -> None:
        from ipshift.verify import verify_path

        link = self.links.get(move.target)
        if link is None or not link.mac:
            mr.verified = "unconfirmed: the device's MAC is unknown"
            return
        step = Announce(move.target, move.interface.ip, 1, 0.0)
        ann = self.config.announce

        def reannounce() -> None:
            self._spawn(self.executor.run_step(step))

        try:
            at, who = await verify_path(move.target, link.mac, move.interface.ip, targets, ann.interval,
                                        max(ann.verify_rounds, 1), reannounce)
        except OSError as exc:
            mr.verified = f"unconfirmed: {exc}"
            return
        if at is None:
            mr.verified = (f"unconfirmed: no answer from {', '.join(map(str, targets))} "
                           f"after {ann.verify_rounds} rounds")
            log.warning("%s on %s: path %s", move.interface, move.target, mr.verified)
        else:
            mr.confirmed_ms = (at - t0) * 1000.0
            mr.verified = f"confirmed by {who}"
            log.info("%s on %s: path confirmed by %s at %.1f ms", move.interface, move.target, who,
                     mr.confirmed_ms)
        self._history_refresh(mr)

    def _history_refresh(self, changed: MoveRecord) -> None:
        """Rewrite the history file after a move's path was confirmed: only the record holding
        ``changed`` is serialized again."""
        kept = {int(d.get("id", -1)): d for d in self._history}
        fresh = []
        for r in list(self.records)[-MAX_HISTORY:]:
            if r.id not in kept or any(m is changed for m in r.moves):
                fresh.append(r.as_dict())
            else:
                fresh.append(kept[r.id])
        self._history = deque(fresh, maxlen=MAX_HISTORY)
        if self.history_journal is not None:
            self.history_journal.submit({"history": list(self._history)})

    def _trim_records(self) -> None:
        """Drop the oldest records while they hold more than MAX_KEPT_MOVES moves (the newest stays)."""
        total = sum(len(r.moves) for r in self.records)
        while len(self.records) > 1 and total > MAX_KEPT_MOVES:
            total -= len(self.records.popleft().moves)
        ids = {r.id for r in self.records}
        if any(int(d.get("id", -1)) not in ids for d in self._history):
            self._history = deque((d for d in self._history if int(d.get("id", -1)) in ids), maxlen=MAX_HISTORY)

    async def _refresh_announcements(self, every: float) -> None:
        """announce.refresh: re-announce every address where it is, for long ARP timeouts upstream."""
        while True:
            await asyncio.sleep(every)
            view = self._view()
            for _, addr in self.config.all_addresses():
                for a in view.where_is(addr.address.ip):
                    try:
                        await self.executor.run_step(Announce(a.ifname, a.ip, 1, 0.0))
                    except Exception as exc:  # noqa: BLE001 - a refresh must never stop the daemon
                        log.debug("refresh announcement of %s on %s: %s", a.ip, a.ifname, exc)

    async def _undo(self, move: Move, mr: MoveRecord, done: list[Step], t0: float, text: str, error: str) -> None:
        mr.error = f"{text}: {error}"
        log.error("move of %s to %s failed at '%s': %s; undoing", move.interface, move.survivor, text, error)
        for prev in reversed(done):
            undo = self.executor.undo_of(prev)
            if undo is not None:
                ur = await self._timed(undo, t0)
                mr.steps.append(replace(ur, op=f"undo:{ur.op}"))
        self.findings[(move.interface.ip, move.survivor)] = error

    async def _timed(self, step: Step, t0: float) -> StepRecord:
        from ipshift.kernel.apply import StepFailed

        start = time.monotonic()
        try:
            await self.executor.run_step(step)
            ok, err = True, ""
        except StepFailed as exc:
            ok, err = False, exc.reason
        end = time.monotonic()
        if ok:
            self._note(step)
        sr = StepRecord(type(step).__name__, step.describe(), (start - t0) * 1000.0, (end - start) * 1000.0, ok, err)
        log.debug("step %s: %.3f ms%s", sr.text, sr.ms, f" FAILED: {err}" if err else "")
        return sr

    def _note(self, step: Step) -> None:
        """What a completed step changed, into the cached kernel view at once.

        The monitor's events say the same a moment later (harmless twice); without this the
        next converge round could plan from a view that does not show our own changes yet.
        """
        match step:
            case AddAddress(ifname=ifname, interface=iface):
                key = (ifname, iface.ip)
                self.addresses[key] = Address(ifname=ifname, interface=iface)
            case DelAddress(ifname=ifname, interface=iface):
                key = (ifname, iface.ip)
                self.addresses.pop(key, None)
            case AddRoute() | DelRoute():
                self._note_routes([step])
                return
            case _:
                return
        for _, oa in self._overlays:
            oa[key] = self.addresses.get(key)

    def _note_many(self, steps: Sequence[Step]) -> None:
        """:meth:`_note` for a batch: route changes applied to the view in one pass, not one per step
        (1,000 route steps against 1,000 routes were a million comparisons)."""
        routes = [st for st in steps if isinstance(st, (AddRoute, DelRoute))]
        for st in steps:
            if not isinstance(st, (AddRoute, DelRoute)):
                self._note(st)
        if routes:
            self._note_routes(routes)

    def _note_routes(self, steps: Sequence[AddRoute | DelRoute]) -> None:
        changes = [(isinstance(st, AddRoute), Route(dst=st.dst, ifname=st.ifname, gateway=st.via,
                                                    metric=st.metric if isinstance(st, AddRoute) else None))
                   for st in steps]
        self.snapshot = replace(self.snapshot, routes=_with_route_changes(self.snapshot.routes, changes))
        for log_ in self._route_logs:
            log_.extend(changes)

    def _log_record(self, rec: Record) -> None:
        for m in rec.moves:
            if m.ok:
                log.info("%s of %s: %s -> %s%s in %.2f ms (first announcement at %.2f ms)", rec.kind, rec.nic,
                         m.address, m.device, "", sum(s.ms for s in m.steps),
                         m.first_announce_ms if m.first_announce_ms is not None else float("nan"))
            else:
                log.warning("%s of %s: %s not moved to %s: %s", rec.kind, rec.nic, m.address, m.device, m.error)
            for s in m.steps:
                log.info("    %-14s %8.3f ms  %s%s", s.op, s.ms, s.text, f"  FAILED: {s.error}" if not s.ok else "")
        for s in rec.nic_steps:
            log.info("    %-14s %8.3f ms  %s", s.op, s.ms, s.text)

    # ------------------------------------------------------------------ start-up pieces

    async def _install_routes(self) -> None:
        """Configured routes that are missing, on the device holding an address of their gateway's subnet."""
        from ipshift.steps import AddRoute

        view = self._view()
        managed = managed_devices(self.config, view)
        present = {(kr.dst, kr.gateway) for kr in view.routes}
        for nic, iface in self.config.interfaces.items():
            for r in iface.routes:
                if r.via is None or (r.to, r.via) in present:
                    continue
                holders = [a.ifname for a in view.addresses if a.ip.version == r.via.version
                           and r.via in a.network and a.ifname in managed]
                if not holders or any(kr.dst == r.to and kr.gateway == r.via for kr in view.routes):
                    continue
                dev = nic if nic in holders else holders[0]
                sr = await self._timed(AddRoute(r.to, dev, r.via, r.metric), time.monotonic())
                if sr.ok:
                    log.info("installed route %s via %s dev %s", r.to, r.via, dev)
                else:
                    log.warning("cannot install route %s via %s: %s", r.to, r.via, sr.error)

    def _apply_sysctls(self) -> None:
        if self.config.sysctl == "manage":
            for nic in self.config.interfaces:
                if nic not in self.links:
                    continue
                for key, value in MANAGED_SYSCTLS.items():
                    path = f"/proc/sys/net/ipv4/conf/{nic}/{key}"
                    try:
                        with open(path) as f:
                            cur = f.read().strip()
                        if cur != value:
                            with open(path, "w") as f:
                                f.write(value)
                            log.info("sysctl net.ipv4.conf.%s.%s: %s -> %s", nic, key, cur, value)
                    except OSError as exc:
                        log.warning("cannot set net.ipv4.conf.%s.%s: %s", nic, key, exc)
            return
        for w in sysctl_warnings(self.config, self._view()):
            if (w.nic, w.code) not in self._warned:
                self._warned.add((w.nic, w.code))
                log.warning("%s", w.message)

    def _do_reload(self) -> None:
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            return
        old = self.config
        self.config = new
        now = time.monotonic()
        for nic in new.interfaces:
            if nic not in self.health:
                link = self.links.get(nic)
                self.health[nic] = hl.initial(nic, link is not None and link.healthy, now)
        for nic in list(self.health):
            if nic not in new.interfaces:
                del self.health[nic]
        added = set(new.interfaces) - set(old.interfaces)
        removed = set(old.interfaces) - set(new.interfaces)
        for nic in new.interfaces:
            link = self.links.get(nic)
            self.link_ok.setdefault(nic, link is not None and link.healthy)
        self._start_prober()
        log.info("configuration reloaded from %s (NICs added: %s; removed: %s)", self.config_path,
                 ", ".join(sorted(added)) or "none", ", ".join(sorted(removed)) or "none")
        self._apply_sysctls()

    # ------------------------------------------------------------------ journal and status

    def _journal_now(self, in_progress: dict[str, Any] | None = None) -> None:
        """Hand the journal a new state document (written on its thread; see ipshift.journal).

        With ``in_progress`` (just before a plan runs: the hot path) only that field changes and
        the rest of the last document is reused, so nothing here walks the addresses.
        """
        if self.journal is None:
            return
        if in_progress is not None and self._last_doc:
            self.journal.submit({**self._last_doc, "updated": time.time(), "in_progress": in_progress})
            return
        demoted = {nic: [_route_to_dict(r) for r in routes] for nic, routes in self.executor.demoted.items()}
        self._last_doc = {
            "pid": os.getpid(),
            "updated": time.time(),
            "in_progress": in_progress,
            "placements": self.placements(),
            "demoted": demoted,
            "drained": sorted(self.drained),
        }
        self.journal.submit(self._last_doc)

    def placements(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        view = self._view()
        for home, addr in self.config.all_addresses():
            devices = [a.ifname for a in view.where_is(addr.address.ip)]
            key = str(addr.address.ip)
            dev, since = self.since.get(key, (devices[0] if devices else "", 0.0))
            out[str(addr.address)] = {"home": home, "on": devices, "since": since if dev in devices else None}
        return out

    def metrics_view(self) -> View:
        """What a metrics scrape reports (on the loop: nothing changes while it is read)."""
        held: dict[str, int] = {}
        away = missing = 0
        view = self._view()
        for home, addr in self.config.all_addresses():
            found = view.where_is(addr.address.ip)
            if not found:
                missing += 1
            for a in found:
                held[a.ifname] = held.get(a.ifname, 0) + 1
                if nic_of(view, a.ifname) != home:
                    away += 1
        states = {nic: "drained" if nic in self.drained else h.state for nic, h in self.health.items()}
        path = {nic: self.path.get(nic) for nic in self.config.interfaces} if self.prober is not None else {}
        return View(ready=self.ready.is_set(), nic_states=states, path=path, held=held, away=away,
                    missing=missing)

    def status(self) -> dict[str, Any]:
        now_m = time.monotonic()
        now_w = time.time()
        nics = {}
        for nic, h in sorted(self.health.items()):
            link = self.links.get(nic)
            nics[nic] = {
                "state": "drained" if nic in self.drained else h.state,
                "health": h.state,
                "since": now_w - (now_m - h.since),
                "reason": h.reason,
                "path": self.path.get(nic),
                "link": None if link is None else {"admin_up": link.admin_up, "carrier": link.carrier,
                                                    "operstate": link.operstate, "mac": link.mac},
            }
        return {
            "pid": os.getpid(),
            "ready": self.ready.is_set(),  # the start-up convergence is done
            "config": self.config_path,
            "failback": self.config.failback.mode,
            "nics": nics,
            "addresses": self.placements(),
            "failovers": [r.as_dict() for r in self.records],
        }

    # ------------------------------------------------------------------ operator commands

    async def cmd_failover(self, nic: str) -> dict[str, Any]:
        if nic not in self.config.interfaces:
            return {"ok": False, "error": f"{nic} is not a configured interface"}
        self.drained.add(nic)
        self.last_trigger[nic] = ("operator: ipshift failover", time.monotonic())
        recs = await self._converge_now(nic)
        return {"ok": all(m.ok for r in recs for m in r.moves), "records": [r.as_dict() for r in recs]}

    async def cmd_failback(self, nic: str) -> dict[str, Any]:
        if nic not in self.config.interfaces:
            return {"ok": False, "error": f"{nic} is not a configured interface"}
        self.drained.discard(nic)
        h = self.health.get(nic)
        if h is not None and not h.usable:
            self._journal_now()
            return {"ok": False, "error": f"{nic} is {h.state}: {h.reason}; its addresses come back when it is up"}
        self.bring_back_once.add(nic)
        self.last_trigger[nic] = ("operator: ipshift failback", time.monotonic())
        recs = await self._converge_now(nic)
        self.bring_back_once.discard(nic)
        return {"ok": all(m.ok for r in recs for m in r.moves), "records": [r.as_dict() for r in recs]}

    async def _converge_now(self, nic: str) -> list[Record]:
        async with self._converge_lock:  # after a round under way: never two plans at once
            recs = await self.converge_once(only=nic)
        self._journal_now()
        self._dirty.set()
        return recs


def _with_route_changes(routes: Sequence[Route], changes: Sequence[tuple[bool, Route]]) -> tuple[Route, ...]:
    """``routes`` after ``changes`` ((added?, route), in order). A route step names a destination,
    a gateway and a device: an addition replaces what had those three, a removal drops it."""
    by_key: dict[tuple[Any, ...], list[Route]] = {}
    for r in routes:
        by_key.setdefault((r.dst, r.ifname, r.gateway), []).append(r)
    for added, route in changes:
        key = (route.dst, route.ifname, route.gateway)
        by_key.pop(key, None)
        if added:
            by_key[key] = [route]
    return tuple(r for rs in by_key.values() for r in rs)


def _route_to_dict(r: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
                                          ipaddress.IPv6Network)) else v)
            for k, v in dataclasses.asdict(r).items()}


def _route_from_dict(d: dict[str, Any]) -> Any:
    from ipshift.model import Route

    return Route(dst=ipaddress.ip_network(d["dst"]), ifname=d.get("ifname"),
                 gateway=ipaddress.ip_address(d["gateway"]) if d.get("gateway") else None,
                 table=d.get("table", 254), proto=d.get("proto", "static"), scope=d.get("scope", "universe"),
                 type=d.get("type", "unicast"), metric=d.get("metric"), linkdown=d.get("linkdown", False),
                 src=ipaddress.ip_address(d["src"]) if d.get("src") else None)


def _record_from_dict(d: dict[str, Any]) -> Record | None:
    try:
        moves = [MoveRecord(**{**m, "steps": [StepRecord(**s) for s in m["steps"]]}) for m in d["moves"]]
        nic_steps = [StepRecord(**s) for s in d.get("nic_steps", [])]
        return Record(**{**d, "moves": moves, "nic_steps": nic_steps})
    except (TypeError, KeyError):
        return None
