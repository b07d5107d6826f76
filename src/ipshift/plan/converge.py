"""Plans: which addresses move where, with the steps of each move (pure).

Theory of operation
-------------------
``plan_failover(config, snapshot, failed, ...)`` walks every address that is
on the failed NIC now (or is homed there and placed nowhere) and runs the
checks of :mod:`ipshift.plan.checks` for each candidate survivor in order. The
first candidate that passes every check gets the address, with the ordered
steps of :mod:`ipshift.plan.builders`; if none does, the address is refused
and the refusal lists, per candidate, every check that failed.

Candidate order: the failed NIC's ``backups`` when configured (only those, in
that order); otherwise every other configured NIC, fewest addresses first
(counting the moves already planned), then by name -- so the result never
depends on the order of keys in the configuration.

``plan_failback`` brings a healthy NIC's addresses home; ``converge`` asks
both for every NIC and returns the plans that bring the kernel to the
configured placement. Nothing here performs I/O.

Cost: planning a NIC's failure walks what that NIC holds and is configured
with; a healthy NIC whose addresses are all at home is skipped on counts kept
per device (:func:`ipshift.plan.index.settled`), and duplicates come from the
snapshot's set of IPs held twice -- so a failover does not cost what the rest
of the gateway holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from ipshift.config import AddressConfig, Config
from ipshift.model import IPAddress, IPInterface, Link, Route, Snapshot
from ipshift.plan.builders import (
    RouteLedger, carried_mac, failover_steps, own_mac_back, home_device, macvlan_name, return_steps, route_moves, settle_steps,
    vlan_device,
)
from ipshift.plan.checks import (
    Candidate, Load, addresses_on, evaluate, is_managed_address, managed_devices, nic_of, present_count,
)
from ipshift.plan.index import config_index, settled
from ipshift.steps import (
    AddAddress, AddMacvlan, AddVlan, Announce, DelAddress, DelLink, DemoteRoutes, FlushNeighbours, FlushRouteCache,
    RestoreRoutes, SetMac, Step, stand_in_mac,
)

PlanKind = Literal["failover", "failback"]


@dataclass(frozen=True, slots=True)
class Move:
    """An address that moves: from ``source`` to ``survivor`` (device ``target``)."""

    interface: IPInterface
    home: str
    source: str
    survivor: str
    target: str  # the device the address goes on: the survivor, its macvlan or VLAN device
    steps: tuple[Step, ...]
    passed_over: tuple[Candidate, ...] = ()  # candidates before the chosen one, with their failures


@dataclass(frozen=True, slots=True)
class Refusal:
    """An address that cannot move, with every failing check of every candidate."""

    interface: IPInterface
    home: str
    source: str
    candidates: tuple[Candidate, ...]
    reason: str = ""  # set when there was no candidate at all

    def codes(self) -> frozenset[str]:
        return frozenset(f.code for c in self.candidates for f in c.failures)

    def reasons(self) -> tuple[str, ...]:
        """One line per failed check of every candidate (or the reason there was none)."""
        lines = tuple(f"{c.nic}: [{f.code}] {f.reason}" for c in self.candidates for f in c.failures)
        return lines or (self.reason,)


@dataclass(frozen=True, slots=True)
class Plan:
    failed: str
    moves: tuple[Move, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    prelude: tuple[Step, ...] = ()  # NIC-level steps that run before the moves
    postlude: tuple[Step, ...] = ()  # NIC-level steps that run after the moves
    kind: PlanKind = "failover"

    @property
    def complete(self) -> bool:
        return not self.refusals


def candidates_for(config: Config, failed: str) -> list[str]:
    """Who may take over from ``failed``, before ordering by load."""
    cfg = config.interfaces.get(failed)
    if cfg is not None and cfg.backups is not None:
        return [b for b in cfg.backups if b != failed]
    return sorted(n for n in config.interfaces if n != failed)


def plan_failover(config: Config, snapshot: Snapshot, failed: str, *,
                  conflicts: Mapping[tuple[IPAddress, str], str] | None = None,
                  unhealthy: Mapping[str, str] | None = None, saved: Sequence[Route] = (),
                  seen: Mapping[str, Link] | None = None, own_macs: Mapping[str, str] | None = None) -> Plan:
    """Plan the move of every address on ``failed`` to survivors, and of its routes. Pure.

    With no address left to move, the plan still moves the routes that have not followed the
    addresses already moved (``saved``: the route ledger of ``failed``) -- a run that stopped
    between them -- and withdraws what is left of the NIC's routes."""
    conflicts = conflicts or {}
    unhealthy = dict(unhealthy or {})
    unhealthy.pop(failed, None)
    managed = managed_devices(config, snapshot)
    seen = seen or {}  # devices as last seen: a deleted NIC's MAC still moves
    load = Load(counts={n: present_count(snapshot, n) for n in config.interfaces},
                macs={n: len(snapshot.children(n, "macvlan")) for n in config.interfaces})
    moves: list[Move] = []
    refusals: list[Refusal] = []
    names = candidates_for(config, failed)
    explicit = config.interfaces.get(failed) is not None and config.interfaces[failed].backups is not None
    macvlan_planned: set[tuple[str, str]] = set()  # (survivor, MAC) that a macvlan is planned for
    macs_back: set[str] = set()  # NICs this plan gives their own MAC back (an address moves on to its home)
    moved: list[tuple[AddressConfig, str]] = []  # (address, the device it goes to), for the routes

    for home, addr in addresses_on(config, snapshot, failed):
        iface = addr.address
        order = names if explicit else sorted(names, key=lambda n: (load.counts.get(n, 0), n))
        considered: list[Candidate] = []
        chosen: str | None = None
        for nic in order:
            cand = evaluate(config, snapshot, addr, nic, load=load, unhealthy=unhealthy,
                            conflicts=conflicts, managed_devices=managed)
            considered.append(cand)
            if cand.eligible:
                chosen = nic
                break
        if chosen is None:
            reason = "" if order else f"no other NIC may take over from {failed} (backups is empty or only one NIC is configured)"
            refusals.append(Refusal(iface, home, failed, tuple(considered), reason))
            continue
        moved_mac = carried_mac(snapshot, home, addr, seen.get(home), (own_macs or {}).get(home))
        mac_back: tuple[Step, ...] = ()
        back = snapshot.link(home) if chosen == home else None
        if back is not None and moved_mac is not None:  # on to its home NIC: the NIC itself, with its MAC
            if back.mac == stand_in_mac(moved_mac) and home not in macs_back:
                mac_back = own_mac_back(config, snapshot, home, moved_mac)
                macs_back.add(home)
            moved_mac = None
        if addr.vlan is not None:
            target = vlan_device(snapshot, chosen, addr.vlan)
        elif moved_mac is not None:
            target = macvlan_name(snapshot.link(home) or seen.get(home), home, snapshot.link(chosen))
        else:
            target = chosen
        steps = (*mac_back, *failover_steps(config, snapshot, addr, failed, chosen, target, moved_mac))
        if moved_mac is not None and addr.vlan is None:
            if (chosen, moved_mac) in macvlan_planned:  # that MAC already goes there: one macvlan serves
                steps = tuple(s for s in steps if not isinstance(s, AddMacvlan))
            else:
                macvlan_planned.add((chosen, moved_mac))
                load.macs[chosen] = load.macs.get(chosen, 0) + 1
        load.counts[chosen] = load.counts.get(chosen, 0) + 1
        moves.append(Move(iface, home, failed, chosen, target, steps, tuple(considered[:-1])))
        moved.append((addr, target))

    if not moves:  # addresses that moved before (an earlier run): their routes must be there too
        for addr in config.interfaces[failed].addresses if failed in config.interfaces else ():
            found = snapshot.where_is(addr.address.ip)
            if len(found) == 1 and found[0].ifname in managed and nic_of(snapshot, found[0].ifname) != failed:
                moved.append((addr, found[0].ifname))
    routes = route_moves(config, snapshot, failed, moved, saved)
    left = any(r.proto != "kernel" for r in snapshot.routes_on(failed))
    postlude: tuple[Step, ...] = (*routes, DemoteRoutes(failed)) if moves or routes or (moved and left) else ()
    now = snapshot.link(failed)  # its MAC lives elsewhere now: it sends nothing from it when it is back
    if now is not None and now.mac and (any(isinstance(st, (AddMacvlan, AddVlan)) and st.mac == now.mac
                                            for m in moves for st in m.steps) or _mac_elsewhere(snapshot, now.mac, now)):
        postlude = (*postlude, SetMac(failed, stand_in_mac(now.mac)))
    return Plan(failed, tuple(moves), tuple(refusals), (), postlude)


def _mac_elsewhere(snapshot: Snapshot, mac: str, nic: Link) -> bool:
    """A macvlan ipshift made on another NIC than ``nic`` carries ``mac``."""
    return any(l.kind == "macvlan" and l.name.startswith("ipsmv") and l.mac == mac and l.parent != nic.index
               for l in snapshot.links)


def _stand_ins(config: Config, snapshot: Snapshot, usable: Mapping[str, bool], own_macs: Mapping[str, str],
               plans: Sequence[Plan]) -> list[Plan]:
    """A usable NIC that still has its stand-in MAC though no macvlan carries its own any more (a
    run stopped between the address coming home and the MAC, or the address came home from nowhere):
    its own MAC back, and its addresses announced with it."""
    out: list[Plan] = []
    for nic in sorted(config.interfaces):
        link, own = snapshot.link(nic), own_macs.get(nic)
        if (usable.get(nic, False) and link is not None and own and link.mac == stand_in_mac(own)
                and not _mac_elsewhere(snapshot, own, link)
                and not any(isinstance(st, SetMac) and st.ifname == nic for p in plans for m in p.moves
                            for st in m.steps)):
            out.append(Plan(nic, postlude=own_mac_back(config, snapshot, nic, own), kind="failback"))
    return out


def plan_failback(config: Config, snapshot: Snapshot, nic: str, *, bring_back: bool = True,
                  unhealthy: Mapping[str, str] | None = None,
                  conflicts: Mapping[tuple[IPAddress, str], str] | None = None, restore: bool = False) -> Plan:
    """Addresses homed on ``nic`` that are not there: bring them home. Pure.

    Addresses held by another NIC come home only with ``bring_back`` (failback
    mode auto, or an operator's ``ipshift failback``); addresses held by no NIC
    at all (first start, a crash in the middle of a move, someone deleted
    them) are always placed. Copies of a home address on other devices are
    removed, and its configured routes come home (``settle_steps``).
    Every placement is checked like a failover candidate. ``restore``: the route ledger still
    holds routes of ``nic``: a plan of only ``RestoreRoutes`` when nothing else moves and every
    address of ``nic`` is home (with failback manual, the routes stay with the addresses).
    """
    unhealthy = dict(unhealthy or {})
    conflicts = conflicts or {}
    managed = managed_devices(config, snapshot)
    moves: list[Move] = []
    refusals: list[Refusal] = []
    iface_cfg = config.interfaces.get(nic)
    if iface_cfg is None:
        return Plan(nic, kind="failback")
    if settled(config, snapshot, nic, managed):  # every address at home as configured: nothing to walk
        return Plan(nic, postlude=(RestoreRoutes(nic),) if restore else (), kind="failback")
    load = Load(counts={n: present_count(snapshot, n) for n in config.interfaces})
    emptied: dict[str, int] = {}
    ledger = RouteLedger()
    mac_back = False  # a move of this plan gives the NIC its own MAC again
    away = False  # an address of the NIC stays elsewhere (failback manual): so do its routes
    for addr in sorted(iface_cfg.addresses, key=lambda a: (a.address.version, a.address.ip)):
        iface = addr.address
        home_dev = home_device(snapshot, nic, addr)
        holders = tuple(a.ifname for a in snapshot.where_is(iface.ip))
        away = away or bool(holders and home_dev not in holders)
        if home_dev in holders:
            extra = tuple(h for h in holders if h != home_dev and h in managed)
            steps: tuple[Step, ...] = settle_steps(config, snapshot, nic, addr, home_dev, extra, managed, ledger)
            here = next(a for a in snapshot.where_is(iface.ip) if a.ifname == home_dev)
            if here.interface != iface:  # a reload changed its prefix: the kernel's goes, the new one comes
                steps = (DelAddress(home_dev, here.interface), AddAddress(home_dev, iface, nodad=iface.version == 6),
                         Announce(home_dev, iface.ip, config.announce.count, config.announce.interval),
                         *[st for st in steps if not isinstance(st, Announce)])
            if steps:
                moves.append(Move(iface, nic, extra[0] if extra else home_dev, nic, home_dev, steps))
            continue
        if holders and not bring_back:
            continue
        cand = evaluate(config, snapshot, addr, nic, load=load, unhealthy=unhealthy,
                        conflicts=conflicts, managed_devices=managed)
        if not cand.eligible:
            refusals.append(Refusal(iface, nic, holders[0] if holders else nic, (cand,)))
            continue
        steps = return_steps(config, snapshot, nic, addr, holders, ledger)
        mine = snapshot.link(nic)
        own = next((l.mac for h in holders if (l := snapshot.link(h)) is not None and l.kind == "macvlan"
                    and l.name.startswith("ipsmv")), None) if addr.mac == "move" else None
        if own and mine is not None and mine.mac == stand_in_mac(own) and not mac_back:
            steps, mac_back = (*own_mac_back(config, snapshot, nic, own), *steps), True  # its MAC comes home too
        for h in holders:
            emptied[h] = emptied.get(h, 0) + 1
        load.counts[nic] = load.counts.get(nic, 0) + 1
        moves.append(Move(iface, nic, holders[0] if holders else nic, nic, home_dev, steps))
    # macvlan devices ipshift made that this plan leaves without an address
    cleanup: list[Step] = []
    for dev, n in sorted(emptied.items()):
        link = snapshot.link(dev)
        if link is not None and (link.kind == "macvlan" and dev.startswith("ipsmv")
                                 or link.kind == "vlan" and _vlan_made_for_a_move(config, snapshot, link)):
            left = sum(1 for a in snapshot.addresses_on(dev) if is_managed_address(a)) - n
            if left <= 0:
                cleanup.append(DelLink(dev))
    if not moves and not refusals:
        return Plan(nic, postlude=(RestoreRoutes(nic),) if restore and not away else (), kind="failback")
    # the withdrawn routes come back before the moves (what can: a route whose gateway is on a
    # subnet the NIC gets back only with its addresses waits) and again after them
    return Plan(nic, tuple(moves), tuple(refusals), (RestoreRoutes(nic),), (*cleanup, RestoreRoutes(nic)),
                kind="failback")


def _vlan_made_for_a_move(config: Config, snapshot: Snapshot, link: Link) -> bool:
    """A VLAN device on a NIC that is configured with no address on that VLAN: ipshift made it."""
    parent = snapshot.link_by_index(link.parent) if link.parent is not None else None
    if parent is None or parent.name not in config.interfaces:
        return False
    return not any(a.vlan == link.vlan_id for a in config.interfaces[parent.name].addresses)


def converge(config: Config, snapshot: Snapshot, usable: Mapping[str, bool], *,
             unhealthy: Mapping[str, str] | None = None, bring_back: frozenset[str] = frozenset(),
             conflicts: Mapping[tuple[IPAddress, str], str] | None = None,
             saved: Mapping[str, Sequence[Route]] | None = None, restore: frozenset[str] = frozenset(),
             last_seen: Mapping[str, Link] | None = None, own_macs: Mapping[str, str] | None = None) -> list[Plan]:
    """Every plan that brings the kernel to the configured placement. Pure.

    ``usable``: per configured NIC, whether it may carry addresses now (health).
    NICs that are not usable and hold addresses fail over; usable NICs get
    their missing home addresses, and those held elsewhere when the NIC is in
    ``bring_back``. ``saved``: the route ledger (routes kept of each failed NIC); ``restore``: the
    usable NICs whose routes it still holds; ``last_seen``: devices as they were last seen (a NIC
    deleted); ``own_macs``: each NIC's own MAC. Plans with no steps and no refusals are left out.
    """
    reasons = dict(unhealthy or {})
    for nic, ok in usable.items():
        if not ok and nic not in reasons:
            reasons[nic] = "not usable"
    plans: list[Plan] = []
    for nic in sorted(config.interfaces):
        if not usable.get(nic, False):
            p = plan_failover(config, snapshot, nic, conflicts=conflicts, unhealthy=reasons,
                              saved=(saved or {}).get(nic, ()), seen=last_seen, own_macs=own_macs)
            if p.moves or p.refusals or p.postlude:
                plans.append(p)
    for nic in sorted(config.interfaces):
        if usable.get(nic, False):
            p = plan_failback(config, snapshot, nic, bring_back=nic in bring_back,
                              unhealthy=reasons, conflicts=conflicts, restore=nic in restore)
            if p.moves or p.refusals or p.postlude:
                plans.append(p)
    return (plans + _leftovers(config, snapshot, plans) + _duplicates(config, snapshot, usable)
            + _stand_ins(config, snapshot, usable, own_macs or {}, plans))


def _duplicates(config: Config, snapshot: Snapshot, usable: Mapping[str, bool]) -> list[Plan]:
    """An address held twice (a run that stopped in the middle of a move, or someone else) whose
    home does not settle it (home down, or not holding it): the copy on its home NIC if that is
    usable, else one on a usable NIC, stays and is announced; the others go. With no copy on a
    usable NIC it stays put."""
    managed = managed_devices(config, snapshot)
    by_nic: dict[str, list[Move]] = {}
    idx = config_index(config)
    twice = sorted((ip for ip in snapshot.table.multi if ip in idx.by_ip), key=lambda ip: idx.order[ip])
    for home, addr in (idx.by_ip[ip] for ip in twice):  # (in configuration order)
        found = [a for a in snapshot.where_is(addr.address.ip) if a.ifname in managed]
        if len(found) < 2 or (usable.get(home, False) and any(nic_of(snapshot, a.ifname) == home for a in found)):
            continue  # at most once, or its home settles it (plan_failback)
        keep = sorted((a for a in found if usable.get(nic_of(snapshot, a.ifname), False)),
                      key=lambda a: (nic_of(snapshot, a.ifname) != home, a.ifname))
        if not keep:
            continue
        iface, gone = addr.address, [a for a in found if a is not keep[0]]
        steps: tuple[Step, ...] = (
            Announce(keep[0].ifname, iface.ip, config.announce.count, config.announce.interval),
            *(DelAddress(a.ifname, a.interface) for a in gone),
            FlushNeighbours(iface.network), FlushRouteCache(iface.version))
        nic = nic_of(snapshot, gone[0].ifname)
        by_nic.setdefault(nic, []).append(Move(iface, home, gone[0].ifname, nic_of(snapshot, keep[0].ifname),
                                               keep[0].ifname, steps))
    return [Plan(nic, tuple(moves)) for nic, moves in sorted(by_nic.items())]


def _leftovers(config: Config, snapshot: Snapshot, plans: Sequence[Plan]) -> list[Plan]:
    """macvlan devices ipshift made that hold no address and that no plan uses (left by a run that
    stopped between making one and putting an address on it): removed, if still empty then."""
    used = {m.target for p in plans for m in p.moves} | {st.name for p in plans for st in p.postlude
                                                          if isinstance(st, DelLink)}
    out: list[Plan] = []
    for l in snapshot.links:
        parent = snapshot.link_by_index(l.parent) if l.parent is not None else None
        if (l.kind == "macvlan" and l.name.startswith("ipsmv") and l.name not in used and parent is not None
                and parent.name in config.interfaces
                and not any(is_managed_address(a) for a in snapshot.addresses_on(l.name))):
            out.append(Plan(parent.name, postlude=(DelLink(l.name, if_empty=True),), kind="failback"))
    return out


def all_plans(config: Config, snapshot: Snapshot, *, conflicts: Mapping[tuple[IPAddress, str], str] | None = None,
              unhealthy: Mapping[str, str] | None = None) -> list[Plan]:
    """``plan_failover`` for every configured NIC, as if it failed now."""
    return [plan_failover(config, snapshot, nic, conflicts=conflicts, unhealthy=unhealthy)
            for nic in sorted(config.interfaces)]
