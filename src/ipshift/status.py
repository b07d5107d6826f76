"""What ``ipshift status``, a metrics scrape and the state file report: pure views, in slices.

Theory of operation
-------------------
Each view is a pure function of read-only values the daemon's parts hand
over -- the configuration, the kernel view's immutable
:class:`~ipshift.model.Snapshot`, the NICs' health, where the plan runner put
each address and when, the history's serialised records -- written as a
generator that *yields* after every ``SLICE`` addresses and *returns* the
view. :func:`drive` runs such a generator on the event loop and lets the loop
run other work at every yield, and waits while a plan runs (``idle`` clear): a
status request or a scrape at 10,000 addresses never holds the loop for more
than one slice, and never slows a failover down. :func:`run_now` runs one to
the end at once (tests; the CLI's ``check``).

The records are not serialised here: :meth:`ipshift.records.History.parts`
hands over the text each record got when it ended.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ipshift import health as hl
from ipshift.config import AddressConfig, Config
from ipshift.journal import DurableState, NicRecord, Placement
from ipshift.metrics import View
from ipshift.model import Link, Snapshot
from ipshift.plan import nic_of

SLICE = 256  # addresses between two yields
T = TypeVar("T")
Sliced = Generator[None, None, T]


async def drive(gen: Sliced[T], idle: asyncio.Event) -> T:
    """Run ``gen`` on the loop, one slice per turn, only while ``idle`` is set."""
    while True:
        await idle.wait()
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)


def run_now(gen: Sliced[T]) -> T:
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class StatusInputs:
    """The read-only views ``status`` is made of."""

    config: Config
    config_path: str
    pid: int
    ready: bool
    health: Mapping[str, hl.NicHealth]
    snapshot: Snapshot
    arrived: Mapping[str, tuple[str, float]]  # address -> (device it arrived on, wall clock)
    now_mono: float
    now_wall: float
    conflicts: Mapping[str, Any] | None = None  # the background conflict probes' report (None: off)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def nics_doc(inp: StatusInputs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for nic, h in sorted(inp.health.items()):
        link = inp.snapshot.link(nic)
        out[nic] = {
            "state": "drained" if h.drained else h.state,
            "health": h.state,
            "since": inp.now_wall - (inp.now_mono - h.since),
            "reason": h.reason,
            "path": h.path,
            "link": None if link is None else {"admin_up": link.admin_up, "carrier": link.carrier,
                                                "operstate": link.operstate, "mac": link.mac},
        }
    return out


def status_parts(inp: StatusInputs, records: Sequence[str]) -> Sliced[list[str]]:
    """The status document as JSON text parts (``records``: the history's parts, already text)."""
    head = _dumps({"pid": inp.pid, "ready": inp.ready, "config": inp.config_path,
                   "failback": inp.config.failback.mode, "nics": nics_doc(inp),
                   "conflict_check": inp.conflicts})
    parts = [head[:-1], ',"addresses":{']
    first = True
    entries: dict[str, Any] = {}
    for i, (home, addr) in enumerate(inp.config.all_addresses()):
        devices = [a.ifname for a in inp.snapshot.where_is(addr.address.ip)]
        dev, since = inp.arrived.get(str(addr.address.ip), (devices[0] if devices else "", 0.0))
        entries[str(addr.address)] = {"home": home, "on": devices, "since": since if dev in devices else None}
        if i % SLICE == SLICE - 1:
            parts.append(("" if first else ",") + _dumps(entries)[1:-1])
            first, entries = False, {}
            yield
    if entries:
        parts.append(("" if first else ",") + _dumps(entries)[1:-1])
    parts.append('},"failovers":[')
    parts.extend(records)
    parts.append("]}")
    return parts


def metrics_view(config: Config, snapshot: Snapshot, health: Mapping[str, hl.NicHealth], ready: bool,
                 probing: bool, conflicts: Mapping[str, Any] | None = None) -> Sliced[View]:
    """What a metrics scrape reports besides the tally."""
    held: dict[str, int] = {}
    away = missing = 0
    for i, (home, addr) in enumerate(config.all_addresses()):
        found = snapshot.where_is(addr.address.ip)
        if not found:
            missing += 1
        for a in found:
            held[a.ifname] = held.get(a.ifname, 0) + 1
            if nic_of(snapshot, a.ifname) != home:
                away += 1
        if i % SLICE == SLICE - 1:
            yield
    states = {nic: "drained" if h.drained else h.state for nic, h in health.items()}
    path = {nic: h.path for nic, h in health.items()} if probing else {}
    return View(ready=ready, nic_states=states, path=path, held=held, away=away, missing=missing,
                conflicts=tuple((str(c["address"]), str(c["nic"])) for c in (conflicts or {}).get("conflicts", ())),
                background_probes=None if conflicts is None else int(conflicts["probes"]))


def durable_state(config: Config, snapshot: Snapshot, arrived: Mapping[str, tuple[str, float]],
                  drained: Sequence[str], nics: Mapping[str, NicRecord], boot: str, pid: int, now: float,
                  leaving: Mapping[str, tuple[str, AddressConfig]], seen: Mapping[str, Link],
                  own_macs: Mapping[str, str]) -> Sliced[DurableState]:
    """What the state file keeps (see :class:`ipshift.journal.DurableState`); ``seen``: every device
    as last seen, of which the configured NICs' ifindex and own MAC (``own_macs``) are kept."""
    placements = yield from away_placements(config, snapshot, arrived)
    return DurableState(pid, now, None, placements, {}, tuple(drained), boot, dict(nics),
                        {a: (home, addr.mac, addr.vlan) for a, (home, addr) in leaving.items()},
                        {n: (seen[n].index, own_macs.get(n) or seen[n].mac) for n in config.interfaces
                         if n in seen and (own_macs.get(n) or seen[n].mac)})


def away_placements(config: Config, snapshot: Snapshot,
                    arrived: Mapping[str, tuple[str, float]]) -> Sliced[dict[str, Placement]]:
    """The configured addresses that are on a device other than their home NIC's, with when they
    arrived there (the state file's ``placements``)."""
    out: dict[str, Placement] = {}
    for i, (home, addr) in enumerate(config.all_addresses()):
        found = snapshot.where_is(addr.address.ip)
        if len(found) == 1 and nic_of(snapshot, found[0].ifname) != home:
            dev, since = arrived.get(str(addr.address.ip), (found[0].ifname, 0.0))
            out[str(addr.address)] = Placement(home, found[0].ifname, since if dev == found[0].ifname else 0.0)
        if i % SLICE == SLICE - 1:
            yield
    return out
