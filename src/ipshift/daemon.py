"""The daemon: wiring of the parts, the lifecycle, event dispatch, the converge loop, commands.

Theory of operation
-------------------
One asyncio loop and a few parts, each the one owner of its state, talking by
plain method calls (no task, queue or await between a link event and the
first netlink request of a failover): the :class:`~ipshift.view.KernelView`
(links, addresses, routes), the :class:`~ipshift.nics.NicStates` (health and
its inputs, triggers, timers), the :class:`~ipshift.runner.PlanRunner`
(transactions, phase by phase), the :class:`~ipshift.records.History` (records,
serialised once) and the :class:`~ipshift.journal.StateFile` (what a restart
needs to know).

The netlink monitor (bound before the first dump, so no change is lost)
feeds :meth:`Daemon.dispatch`: the view applies each event, link events of
configured NICs go to the NIC states, and when a NIC's usability changes the
converge task wakes, asks the pure planner (:func:`ipshift.plan.converge`)
for the plans that bring the kernel to the configured placement and hands
each to the runner. The view is re-read in the background after every
converge round and on a monitor overrun. Signals only set flags (SIGTERM,
SIGINT: stop, addresses stay where they are; SIGHUP: reload, an invalid new
config is refused and the old one keeps running).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Callable

from ipshift import policy
from ipshift.config import AddressConfig, Config, reload_config
from ipshift.control import Answer, Servers
from ipshift.events import AddressEvent, KernelEvent, LinkEvent, LinkGone, Resync
from ipshift.journal import StateFile, boot_id
from ipshift.kernel.withdraw import Withdrawn
from ipshift.kernel.monitor import KernelMonitor
from ipshift.kernel.sysctl import apply_sysctl_policy
from ipshift.lock import StateLock
from ipshift.model import IPAddress, Snapshot
from ipshift.nics import NicStates
from ipshift.probing import Probing
from ipshift.plan import converge
from ipshift.plan.retire import plan_retire
from ipshift.reload import diff, leaving, still_leaving
from ipshift.steps import RestoreRoutes
from ipshift.records import History, Record, RefusalLog
from ipshift.runner import Executes, PlanRunner, Verifier
from ipshift.scout import ConflictScout
from ipshift.tasks import Tasks, no_cycle_collection, raise_failure
from ipshift.status import StatusInputs, drive, durable_state, metrics_view, status_parts
from ipshift.view import KernelView

log = logging.getLogger("ipshift.daemon")

MAX_ROUNDS = 8  # converge rounds in a row before waiting for the next event


class Daemon:
    """Construct, then ``await run()``; nothing happens in the constructor. Tests hand in an
    ``executor`` and a ``reader`` instead, and drive :meth:`dispatch` and the commands."""

    def __init__(self, config: Config, config_path: str, *, socket_path: str | None = None,
                 kill_at: str | None = None, executor: Executes | None = None,
                 reader: Callable[[], Snapshot] | None = None, verifier: Verifier | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.config_path, self.kill_at = config, config_path, kill_at
        self.socket_path = socket_path or config.socket
        self.ready = asyncio.Event()
        self._dirty, self._stop, self._reload = asyncio.Event(), asyncio.Event(), False
        self._converge_lock = asyncio.Lock()  # one converge at a time: the loop's rounds, the commands
        self._tasks = Tasks()
        self.servers: Servers | None = None
        self.leaving: dict[str, tuple[str, AddressConfig]] = {}  # no longer configured, on the way home
        self._interrupted: set[IPAddress] = set()  # the addresses of the move a killed previous run left
        self.refusals = RefusalLog()
        self.nics = NicStates(config, on_change=self._dirty.set, clock=clock)
        self.history = History()
        self.state: StateFile | None = None
        self.view = KernelView(reader)
        self.probing = Probing(self.view, self.nics)
        self.executor: Executes  # set by _attach: given here, or opened by run()
        self.runner: PlanRunner
        if executor is not None:
            self._attach(executor, verifier)

    def _attach(self, executor: Executes, verifier: Verifier | None) -> None:
        self.executor = executor
        self.view.listen(executor)
        self.runner = PlanRunner(executor, self.view, self.history, self.config, journal=self.state,
                                 verifier=verifier)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        from ipshift.kernel.apply import Executor
        from ipshift.verify import PathVerifier

        lock = StateLock(self.config.state_dir)
        lock.acquire()  # before anything touches the kernel: one daemon per gateway
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self._stop.set), (signal.SIGINT, self._stop.set),
                             (signal.SIGHUP, self._on_hup)):
            loop.add_signal_handler(sig, handler)
        self.state = StateFile(self.config.state_dir)
        self.state.start()
        durable = self.state.read()
        self.history = History.open(self.config.state_dir)
        # the test hook kills without a flush first: a real crash does none either
        executor = await Executor.open(kill_at=self.kill_at, on_kill=lambda: os.kill(os.getpid(), signal.SIGKILL),
                                       withdrawn=Withdrawn.open(self.config.state_dir, legacy=durable.withdrawn))
        self._attach(executor, PathVerifier(self.config.announce.interval, self.config.announce.verify_rounds))
        self.runner.arrived.update(durable.arrived())  # what the last run left: where it put what,
        self._interrupted = durable.interrupted()  # and the move it stopped in the middle of
        self.leaving = durable.leaving_addresses()
        self.view.remember(durable.seen_links())
        try:
            async with KernelMonitor() as monitor:
                await self.view.reread("start")
                apply_sysctl_policy(self.config, self.view.snapshot())
                executor.ready_nics(list(self.config.interfaces))
                saved = durable.nics if durable.boot_id and durable.boot_id == boot_id() else {}
                self.nics.start(self.view.links, drained=durable.drained, saved=saved)
                await self.runner.run_steps(policy.startup_routes(self.config, self.view.snapshot()),
                                            what="start-up route")
                self.probing.start(self.config, {n: r.path for n, r in saved.items()})
                self.servers = await Servers.open(self, self.socket_path, self.config.metrics, self.scrape)
                self.runner.refresh(lambda: policy.refresh_announcements(self.config, self.view.snapshot()))
                self._tasks.spawn(self.history.worker(self.runner.idle))
                self._tasks.spawn(self.probing.carrier.run(self.dispatch, self.runner.idle))  # detect.carrier_poll
                self.runner.scout_ahead(ConflictScout(lambda: self.config, self.view, self.nics, self.runner.idle))
                converger = self._tasks.spawn(self._converge_loop())
                self._dirty.set()
                events = self._tasks.spawn(self._consume(monitor))
                stop = self._tasks.spawn(self._stop.wait())
                log.info("ipshift running: %d NICs, %d addresses, pid %d",
                         len(self.config.interfaces), len(self.config.all_addresses()), os.getpid())
                await asyncio.wait({events, stop, converger}, return_when=asyncio.FIRST_COMPLETED)
                # a monitor or converge loop that died must not leave a daemon that no longer fails
                # over: end with its error (the supervisor restarts ipshift; start-up converges again)
                raise_failure(events, converger)
        finally:
            log.info("ipshift stopping; addresses stay where they are")
            await self._tasks.cancel()
            self.nics.close()
            self.probing.stop()
            if self.servers is not None:
                await self.servers.close()
            await self.runner.close()
            self.history.close()
            await self._persist()
            self.state.close()
            await executor.close()
            lock.release()
        return 0

    def _on_hup(self) -> None:
        self._reload = True  # the converge task reloads before its next round
        self._dirty.set()

    # ------------------------------------------------------------------ events

    async def _consume(self, monitor: KernelMonitor) -> None:
        async for ev in monitor.events():
            # while a plan changes the kernel, its notifications wait in the kernel's socket buffer
            await self.runner.idle.wait()
            await self.dispatch(ev)
            if isinstance(ev, LinkEvent) and self._dirty.is_set():
                await asyncio.sleep(0)  # a failure: let the converge task start before reading on

    async def dispatch(self, ev: KernelEvent) -> None:
        """One kernel event into the parts."""
        match ev:
            case LinkEvent(link=link, at=at):
                change = self.view.apply_link(link)
                if change.renamed_from is not None:
                    self._gone(change.renamed_from, at, f"renamed to {link.name}")
                if change.new:
                    self._tasks.spawn(self.view.reread("new link", after=0.05))  # its addresses follow
                self._link(link.name, at)
            case LinkGone(name=name, at=at):
                self.view.remove_link(name)
                self._gone(name, at, "device removed")
            case AddressEvent(added=added, ifname=ifname, interface=iface):
                self.view.apply_address(added, ifname, iface)
            case Resync(reason=reason, at=at):
                log.warning("netlink monitor overran (%s): re-reading the kernel state", reason)
                await self.view.reread("overrun")
                for nic in self.config.interfaces:
                    self._link(nic, at, "state after resync")
                self._dirty.set()
            case _:
                raise AssertionError(f"unknown kernel event {ev!r}")

    def _link(self, nic: str, at: float, reason: str = "") -> None:
        if nic in self.config.interfaces:
            self.probing.link(nic, at, reason)

    def _gone(self, name: str, at: float, why: str) -> None:
        if name in self.config.interfaces:
            self.nics.link_changed(name, None, at, why)
            self.probing.gone(name)

    # ------------------------------------------------------------------ converge

    async def _converge_loop(self) -> None:
        first = True
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            with no_cycle_collection():  # while a failover is planned and run
                async with self._converge_lock:
                    await self.converge_round()
            if first:
                gc.freeze()  # what start-up built lives as long as the daemon
                first = False
                self.ready.set()

    async def converge_round(self) -> list[Record]:
        """Converge until nothing is left to do (at most MAX_ROUNDS plans in a row); the records."""
        if self._reload:
            self._reload = False
            await self.reload()
        done: list[Record] = []
        for _ in range(MAX_ROUNDS):
            recs = await self.converge_once()
            if not recs:
                break
            done += recs
            await self.view.reread("between rounds")
        moved = {ipaddress.ip_interface(m.address).ip: m.target for r in done for m in r.moves if m.ok}
        self.nics.placed((nic, ip) for ip, nic in moved.items())
        for what, again in policy.announce_again(self.config, self.view.snapshot(), self.nics.take_confirmed(),
                                                 self._interrupted, moved, self.nics.usable()):
            await self.runner.run_steps(again, what=what)
        self._interrupted = set()
        self.leaving = still_leaving(self.leaving, self.view.snapshot())
        self.runner.findings.clear()
        self.runner.restored.clear()
        self.nics.failback_done()
        await self._persist()
        await self.view.reread("after converge")
        return done

    async def converge_once(self, *, only: str | None = None) -> list[Record]:
        """Plan and run what brings the kernel to the configured placement, one plan at a time, each
        planned from the view as the plans before it left it (a plan from a stale view could put an
        address back where another one just took it from). Returns the records."""
        records: list[Record] = []
        ran: set[tuple[str, str]] = set()
        for i in range(2 * len(self.config.interfaces) + 2):  # each kind of plan of a NIC once
            snap, usable = self.view.snapshot(), self.nics.usable()
            plans = converge(self.config, snap, usable, unhealthy=self.nics.unhealthy(),
                             bring_back=self.nics.bring_back(), conflicts=self.runner.conflicts(),
                             saved=self.executor.withdrawn.routes, last_seen=self.view.remembered(),
                             own_macs=self.view.own_macs(),
                             restore=self.executor.withdrawn.pending() - self.runner.restored)
            plans += plan_retire(self.config, snap, self.leaving, usable)
            if i == 0:
                self.refusals.seen(plans, only)
            todo = [p for p in plans if (p.moves or p.postlude) and (only is None or p.failed == only)
                    and (p.kind, p.failed) not in ran]
            if not todo:
                break
            ran.add((todo[0].kind, todo[0].failed))
            records.append(await self.runner.run(todo[0], self.nics.take_trigger(todo[0].failed, todo[0].kind)))
        return records

    async def _persist(self) -> None:
        if self.state is None:
            return
        self.state.write(await drive(durable_state(self.config, self.view.snapshot(), self.runner.arrived,
                                                   self.nics.drained(), self.nics.records(), boot_id(), os.getpid(),
                                                   time.time(), self.leaving, self.view.remembered(),
                                                   self.view.own_macs()), self.runner.idle))

    async def reload(self) -> None:
        """Read the configuration file again (SIGHUP) and apply it as a diff (:mod:`ipshift.reload`);
        an invalid one is refused, the old one stays."""
        new = reload_config(self.config_path, self.config)
        if new is None:
            return
        old, self.config = self.config, new
        change = diff(old, new)
        self.leaving.update(leaving(old, change, self.view.snapshot()))
        self.runner.config = new
        self.nics.reconfigure(new, self.view.links)
        self.probing.reconfigure(old, new)
        gone = [RestoreRoutes(n) for n in sorted(change.removed_nics) if n in self.executor.withdrawn.pending()]
        await self.runner.run_steps(gone, what="the routes of a NIC no longer configured")
        if change.refresh:
            self.runner.refresh(lambda: policy.refresh_announcements(self.config, self.view.snapshot()))
        if change.servers and self.servers is not None:
            self.socket_path = new.socket if self.socket_path == old.socket else self.socket_path
            await self.servers.reconfigure(self.socket_path, new.metrics)
        apply_sysctl_policy(self.config, self.view.snapshot())

    # ------------------------------------------------------------------ operators

    async def status(self, records: int | None = None) -> list[str]:
        """``ipshift status`` as JSON text parts (built in slices, while no plan runs); ``records``:
        only the last so many records."""
        await self.history.settled()
        inp = StatusInputs(self.config, self.config_path, os.getpid(), self.ready.is_set(), self.nics.health(),
                           self.view.snapshot(), self.runner.arrived, time.monotonic(), time.time(), self.runner.seen())
        return await drive(status_parts(inp, self.history.parts(records)), self.runner.idle)

    async def scrape(self, accept: str) -> tuple[bytes, str]:
        """A metrics scrape: the exposition and its content type."""
        from ipshift import metrics

        view = await drive(metrics_view(self.config, self.view.snapshot(), self.nics.health(), self.ready.is_set(),
                                        self.probing.active, self.runner.seen()), self.runner.idle)
        return metrics.exposition(metrics.families(view, self.history.tally), accept)

    async def cmd_failover(self, nic: str) -> Answer:
        if nic not in self.config.interfaces:
            return Answer(False, f"{nic} is not a configured interface")
        self.nics.drain(nic)
        return await self._answer(await self._converge_now(nic))

    async def cmd_failback(self, nic: str) -> Answer:
        if nic not in self.config.interfaces:
            return Answer(False, f"{nic} is not a configured interface")
        error = self.nics.undrain(nic)
        if error:
            await self._persist()
            return Answer(False, error)
        self.nics.ask_failback(nic)
        recs = await self._converge_now(nic)
        self.nics.failback_done(nic)
        return await self._answer(recs)

    async def _converge_now(self, nic: str) -> list[Record]:
        async with self._converge_lock:  # after a round under way: never two plans at once
            recs = await self.converge_once(only=nic)
        await self._persist()
        self._dirty.set()
        return recs

    async def _answer(self, recs: list[Record]) -> Answer:
        await self.history.settled()
        return Answer(all(m.ok for r in recs for m in r.moves), "", self.history.parts_of([r.id for r in recs]))
