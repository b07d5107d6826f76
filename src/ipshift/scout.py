"""Conflict knowledge before the failure: background RFC 5227 / DAD probes from candidate survivors.

Theory of operation
-------------------
A conflict probe asks "does anyone else use this address on this NIC's
segment?", a question that can be asked long before anything fails. The
:class:`ConflictScout` keeps, per (address, candidate NIC), a
:class:`Finding`: when it was last asked and what came back ("" = nobody
else answered, else who did). The candidates of an address are the NICs a
plan could put it on: its home NIC and the NICs that may take over from the
one holding it now (``backups``, else every other configured NIC), among those
on the address's subnet, minus the holder itself (:func:`pairs`).

Pacing (:func:`pace`): every pair is asked once per ``background.every``
(a batch's wait for answers never holds the schedule: batches overlap),
spread evenly, at most ``background.max_rate`` probes per second for the whole
gateway (more pairs than that allows stretch the cycle, and the start-up log
says so); the first sweep after start goes at ``max_rate``, so the knowledge
is there within ``pairs / max_rate`` seconds. Probes go out in ticks of at
least :data:`TICK` seconds, at most ``ceil(max_rate * TICK)`` per tick: the
wire never sees a burst, and an idle gateway with a few addresses wakes only
when a probe is due. A probe waits ``conflict_check.timeout`` for answers;
answers from this host's own MACs (every link in the kernel view) are never
a conflict. Nothing is probed while a plan changes the kernel (the runner's
``idle``), from a NIC that is not usable, or for an address a NIC holds.

A finding is *fresh* (:meth:`ConflictScout.fresh`) for two cycles, and only if
it is newer than the NIC's last health change (a NIC that lost its link may
come back on another segment). At failure, the runner moves an address whose
fresh finding is clear at once and defends it after the move the way
optimistic mode does (the probe runs while the move goes on; an answer within
the timeout undoes it); a fresh "in use" finding is a planning input that keeps
refusing that NIC (:meth:`in_use`); a stale or missing finding leaves the
move to ``conflict_check.mode``. A conflict found while the address is at
home is a duplicate address on the network today: it is logged (once, and
when it clears), shown by ``status`` and counted in the metrics
(:meth:`report`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ipshift.config import Config
from ipshift.model import IPAddress, IPNetwork, Snapshot
from ipshift.nics import NicStates
from ipshift.plan.checks import is_managed_address, nic_of
from ipshift.plan.converge import candidates_for
from ipshift.status import SLICE, Sliced, drive
from ipshift.view import KernelView

log = logging.getLogger("ipshift.scout")

TICK = 0.1  # seconds: the shortest gap between two batches of background probes
IDLE_RECHECK = 5.0  # seconds: how often a scout with nothing to do looks at the configuration again

Probe = Callable[[str, str, Sequence[IPAddress], float, Collection[str]], Awaitable[dict[IPAddress, str]]]


@dataclass(frozen=True, slots=True)
class Finding:
    at: float  # monotonic: when the probe's wait ended
    reason: str  # "" = nobody else answered; else who uses the address


@dataclass(frozen=True, slots=True)
class Pace:
    period: float  # seconds between two probes
    cycle: float  # seconds until every pair has been asked again
    stretched: bool  # max_rate made the cycle longer than ``every``


def pace(pairs: int, every: float, max_rate: float) -> Pace:
    """How often to probe ``pairs`` pairs, each once per ``every``, at most ``max_rate`` per second."""
    if pairs <= 0:
        return Pace(every, every, False)
    period = max(every / pairs, 1.0 / max_rate)
    return Pace(period, period * pairs, period * pairs > every * 1.0001)


def pairs(config: Config, snapshot: Snapshot) -> Sliced[list[tuple[IPAddress, str]]]:
    """Every (address, candidate NIC) worth asking about now (see the module docstring); a sliced
    view (:func:`ipshift.status.drive`): it yields every ``SLICE`` addresses."""
    nets: dict[str, set[IPNetwork]] = {}
    for nic, iface in config.interfaces.items():
        found = {a.address.network for a in iface.addresses if a.vlan is None}
        devices = [nic] + [m.name for m in snapshot.children(nic, "macvlan")]
        found.update(a.interface.network for d in devices for a in snapshot.addresses_on(d) if is_managed_address(a))
        nets[nic] = found
    out: list[tuple[IPAddress, str]] = []
    for i, (home, addr) in enumerate(config.all_addresses()):
        if i % SLICE == SLICE - 1:
            yield
        if addr.vlan is not None:  # its segment is the VLAN's: asked for at failure, as configured
            continue
        ip = addr.address.ip
        held = snapshot.where_is(ip)
        holder = nic_of(snapshot, held[0].ifname) if held else home
        for nic in dict.fromkeys([home, *candidates_for(config, holder)]):
            if nic != holder and addr.address.network in nets.get(nic, ()):
                out.append((ip, nic))
    return out


class ConflictScout:
    """Background conflict probes and their findings (see the module docstring)."""

    def __init__(self, config: Callable[[], Config], view: KernelView, nics: NicStates, idle: asyncio.Event,
                 probe: Probe | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._view = view
        self._nics = nics
        self._idle = idle
        self._probe = probe
        self._clock = clock
        self._findings: dict[tuple[IPAddress, str], Finding] = {}
        self._in_use: dict[tuple[IPAddress, str], Finding] = {}  # the findings of someone else: read per plan
        self._cycle = 0.0  # the current cycle's length (0: no sweep done yet)
        self.probes = 0  # sent, in all
        self.seen = 0  # conflicts found, in all (a pair in use counts once until it clears)
        self.swept = False  # the first sweep after start is done: every pair has a finding

    # ------------------------------------------------------------------ reads

    def _max_age(self) -> float:
        bg = self._config().conflict_check.background
        return 0.0 if bg is None or self._cycle <= 0 else 2.0 * self._cycle + self._config().conflict_check.timeout

    def fresh(self, ip: IPAddress, nic: str) -> Finding | None:
        """The finding for (``ip``, ``nic``) if it is fresh enough to act on, else None."""
        f = self._findings.get((ip, nic))
        if f is None or self._clock() - f.at > self._max_age():
            return None
        h = self._nics.health().get(nic)
        return f if h is not None and f.at >= h.since else None

    def in_use(self) -> dict[tuple[IPAddress, str], str]:
        """(address, NIC) -> who uses it, for every fresh finding of someone else: a planning input."""
        return {k: f"in use on the segment of {k[1]}: {f.reason} (background probe)"
                for k, f in self._in_use.items() if self.fresh(*k) is not None}

    def report(self) -> dict[str, Any]:
        """What ``status`` and the metrics show: probes sent, the cycle, and the conflicts seen now
        (another host answered for an address on the segment of a NIC)."""
        now = self._clock()
        seen = [{"address": str(ip), "nic": nic, "reason": f.reason, "age_s": round(now - f.at, 1)}
                for (ip, nic), f in self._in_use.items()]
        cc = self._config().conflict_check
        return {"background": cc.enabled and cc.background is not None, "swept": self.swept,
                "probes": self.probes, "cycle_s": round(self._cycle, 1), "known": len(self._findings),
                "conflicts": seen}

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Probe forever (a task of the daemon); ends only by cancellation."""
        from ipshift.wire.conflict import probe_conflicts_many

        probe = self._probe or (lambda nic, mac, ips, timeout, own: probe_conflicts_many(
            nic, mac, ips, timeout, own_macs=own))
        first = True
        while True:
            cfg = self._config()
            bg = cfg.conflict_check.background
            todo = (await drive(pairs(cfg, self._view.snapshot()), self._idle)
                    if cfg.conflict_check.enabled and bg is not None else [])
            if bg is None or not todo:
                self._cycle = 0.0 if bg is None else self._cycle
                await asyncio.sleep(IDLE_RECHECK)
                continue
            p = pace(len(todo), bg.every, bg.max_rate)
            if p.stretched and first:
                log.warning("background conflict probes: %d (address, NIC) pairs at most %g per second: each "
                            "is asked every %.0f s, not every %g s", len(todo), bg.max_rate, p.cycle, bg.every)
            self._cycle = max(p.cycle, cfg.conflict_check.timeout)  # findings of this cycle count at once
            period = 1.0 / bg.max_rate if first else p.period
            per_tick = max(1, math.ceil(TICK / period))
            t = self._clock() + (0.0 if first else period * per_tick)
            waiting: set[asyncio.Task[None]] = set()  # batches still listening: the schedule does not wait
            try:
                for i in range(0, len(todo), per_tick):
                    await asyncio.sleep(max(0.0, t - self._clock()))
                    await self._idle.wait()
                    task = asyncio.ensure_future(self._batch(todo[i:i + per_tick], cfg.conflict_check.timeout, probe))
                    waiting.add(task)
                    task.add_done_callback(waiting.discard)
                    t += period * per_tick
                if waiting:
                    await asyncio.gather(*waiting)
            finally:
                for task in waiting:
                    task.cancel()
            first, self.swept = False, True

    async def _batch(self, batch: Iterable[tuple[IPAddress, str]], timeout: float, probe: Probe) -> None:
        snap = self._view.snapshot()
        usable = self._nics.usable()
        by_nic: dict[str, list[IPAddress]] = {}
        for ip, nic in batch:
            held = snap.where_is(ip)
            if usable.get(nic) and not any(nic_of(snap, a.ifname) == nic for a in held):
                by_nic.setdefault(nic, []).append(ip)
        if not by_nic:
            return
        own = frozenset(link.mac for link in snap.links if link.mac)

        async def one(nic: str, ips: list[IPAddress]) -> None:
            link = snap.link(nic)
            if link is None or not link.mac:
                return
            try:
                found = await probe(nic, link.mac, ips, timeout, own)
            except OSError as exc:
                log.debug("background conflict probe from %s failed: %s", nic, exc)
                return
            self.probes += len(ips)
            self._record(nic, ips, found, snap)

        await asyncio.gather(*(one(nic, ips) for nic, ips in by_nic.items()))

    def _record(self, nic: str, ips: Sequence[IPAddress], found: dict[IPAddress, str], snap: Snapshot) -> None:
        now = self._clock()
        for ip in ips:
            reason = found.get(ip, "")
            before = self._findings.get((ip, nic))
            self._findings[(ip, nic)] = finding = Finding(now, reason)
            if reason:
                self._in_use[(ip, nic)] = finding
            else:
                self._in_use.pop((ip, nic), None)
            where = ", ".join(sorted({nic_of(snap, a.ifname) for a in snap.where_is(ip)})) or "nowhere here"
            if reason and (before is None or not before.reason):
                self.seen += 1
                log.warning("conflict: %s is in use by another host on the segment of %s (%s) while this "
                            "gateway holds it on %s: a duplicate address on the network", ip, nic, reason, where)
            elif before is not None and before.reason and not reason:
                log.info("conflict cleared: nobody else answers for %s on the segment of %s", ip, nic)
