"""Addresses that left the configuration go home before ipshift forgets them (pure).

Theory of operation: an address ipshift had moved away from its home NIC and
that is no longer configured (:func:`ipshift.reload.leaving`) is brought back
to its home NIC once that NIC is usable, make before break, without conflict
probe or routes (they are not ipshift's any more); the daemon then drops it.
One plan per home NIC, of kind failback.
"""

from __future__ import annotations

from collections.abc import Mapping

from ipshift.config import AddressConfig, Config
from ipshift.model import Snapshot
from ipshift.plan.builders import home_device
from ipshift.plan.converge import Move, Plan
from ipshift.steps import AddAddress, Announce, DelAddress, FlushNeighbours, FlushRouteCache, Step


def plan_retire(config: Config, snapshot: Snapshot, leaving: Mapping[str, tuple[str, AddressConfig]],
                usable: Mapping[str, bool]) -> list[Plan]:
    """The moves home of the ``leaving`` addresses whose home is usable (``usable``: by configured
    NIC; a home no longer configured is usable when its link is)."""
    by_home: dict[str, list[Move]] = {}
    for home, addr in sorted(leaving.values(), key=lambda ha: (ha[0], ha[1].address.version, ha[1].address.ip)):
        iface = addr.address
        found = snapshot.where_is(iface.ip)
        link = snapshot.link(home)
        if link is None or not usable.get(home, link.healthy) or len(found) != 1:
            continue
        target = home_device(snapshot, home, addr)
        if found[0].ifname == target or snapshot.link(target) is None:
            continue
        steps: tuple[Step, ...] = (
            AddAddress(target, iface, nodad=iface.version == 6),
            Announce(target, iface.ip, config.announce.count, config.announce.interval),
            DelAddress(found[0].ifname, found[0].interface),
            FlushNeighbours(iface.network), FlushRouteCache(iface.version))
        by_home.setdefault(home, []).append(Move(iface, home, found[0].ifname, home, target, steps))
    return [Plan(home, tuple(moves), kind="failback") for home, moves in sorted(by_home.items())]
