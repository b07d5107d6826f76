"""The steps of one address's move, in the order they must run (pure).

Theory of operation
-------------------
Three builders, one per kind of move:

* :func:`failover_steps` -- from the failed NIC to a survivor. Make before
  break: the address arrives on the survivor (or its macvlan/VLAN device) and
  is announced at once -- the step the client is waiting for; then the failed
  NIC's routes are kept (``SaveRoutes``) and the address leaves it (with the
  prefix the kernel has, which a reload may have changed), and its neighbours
  and the caches are flushed. :func:`route_moves` gives the plan's routes:
  every route of the failed NIC whose gateway is on a subnet that moves goes
  with it, whatever its protocol, as one plan-level step per survivor.
* :func:`return_steps` -- home again (failback, or first placement when the
  address is nowhere). Make before break: added and announced at home before
  it is removed from where it was, so clients see no gap.
* :func:`settle_steps` -- the address is home already: finish what an
  interrupted failback left (copies elsewhere, routes on another device).

A failback's configured routes go home with the first address of their
gateway's subnet, not with every one: one :class:`RouteLedger` per plan hands
each route out once.
Device names are stable across restarts: a VLAN device is the survivor's
existing VLAN-N child whatever its name, else ``NIC.N`` (or a name derived
with CRC-32 when that is too long); a moved MAC lives on ``ipsmvINDEX``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ipshift.config import AddressConfig, Config
from ipshift.model import IPAddress, IPNetwork, Link, Route, Snapshot
from ipshift.steps import (
    AddAddress, AddMacvlan, AddRoute, AddVlan, Announce, CheckConflict, DelAddress, DelNeighbours, DelRoute,
    FlushNeighbours, FlushRouteCache, MoveRoutes, SaveRoutes, SetMac, Step,
)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route a move carries: destination, gateway, metric."""

    dst: IPNetwork
    via: IPAddress | None
    metric: int | None


@dataclass(slots=True)
class RouteLedger:
    """The routes one plan moves: each with the first address of its gateway's subnet, once."""

    placed: set[tuple[IPNetwork, IPAddress | None]] = field(default_factory=set)
    subnets: set[tuple[IPNetwork, str, str]] = field(default_factory=set)  # (subnet, home, source)

    def claim(self, subnet: IPNetwork, home: str, source: str,
              routes: Callable[[], Iterable[RouteSpec]]) -> list[RouteSpec]:
        """``routes()`` for the first address of ``subnet`` (homed on ``home``, leaving ``source``)
        in this plan, less those placed before; later addresses of that subnet get none, and
        ``routes`` is not called for them."""
        key = (subnet, home, source)
        if key in self.subnets:
            return []
        self.subnets.add(key)
        out = [r for r in routes() if (r.dst, r.via) not in self.placed]
        self.placed.update((r.dst, r.via) for r in out)
        return out


# --------------------------------------------------------------------------- device names


def macvlan_name(owner: Link | None, home: str, survivor: Link | None) -> str:
    """The macvlan device that carries NIC ``home``'s MAC (``owner``: that NIC as last seen) on a
    survivor: one name per (home NIC, survivor), the same in every process."""
    def number(link: Link | None, name: str) -> int:
        return link.index if link is not None else zlib.crc32(name.encode()) % 10000
    return f"ipsmv{number(owner, home)}s{number(survivor, '')}"[:15]


def carried_mac(snapshot: Snapshot, home: str, addr: AddressConfig, seen: Link | None,
                own: str | None = None) -> str | None:
    """The MAC a ``mac: move`` address carries: its home NIC's own (``own``, when the daemon knows
    it), else the one of the macvlan that carries it, else the home NIC's (``seen``: as last seen,
    if it is gone)."""
    if addr.mac != "move":
        return None
    if own:
        return own
    for a in snapshot.where_is(addr.address.ip):
        link = snapshot.link(a.ifname)
        if link is not None and link.kind == "macvlan" and link.name.startswith("ipsmv"):
            return link.mac or None
    owner = snapshot.link(home) or seen
    return owner.mac if owner is not None and owner.mac else None


def own_mac_back(config: Config, snapshot: Snapshot, nic: str, mac: str) -> tuple[Step, ...]:
    """``nic`` gets its own MAC back from its stand-in: every address that stays on it is announced
    again, with that MAC (its neighbours still hold the stand-in for them)."""
    return (SetMac(nic, mac), *(Announce(nic, a.interface.ip, config.announce.count, config.announce.interval)
                                for a in snapshot.addresses_on(nic)))


def vlan_device(snapshot: Snapshot, nic: str, vlan: int) -> str:
    """The device of VLAN ``vlan`` on ``nic``: the existing VLAN child whatever its name, else the
    name ipshift gives a new one (the same in every process: a restarted daemon finds it)."""
    for child in snapshot.children(nic, "vlan"):
        if child.vlan_id == vlan:
            return child.name
    name = f"{nic}.{vlan}"
    return name if len(name) <= 15 else f"ipsvl{vlan}.{zlib.crc32(nic.encode()) % 1000}"


def home_device(snapshot: Snapshot, nic: str, addr: AddressConfig) -> str:
    return nic if addr.vlan is None else vlan_device(snapshot, nic, addr.vlan)


# --------------------------------------------------------------------------- failover


def failover_steps(config: Config, snapshot: Snapshot, addr: AddressConfig, source: str, survivor: str,
                   target: str, moved_mac: str | None) -> tuple[Step, ...]:
    """The ordered steps of one address's failover transaction (see the module docstring);
    ``moved_mac``: the MAC that goes with it (``mac: move``)."""
    iface = addr.address
    steps: list[Step] = []
    if config.conflict_check.enabled:
        steps.append(CheckConflict(survivor, iface.ip, config.conflict_check.timeout))
    if addr.vlan is not None:
        if snapshot.link(target) is None:
            steps.append(AddVlan(survivor, target, addr.vlan, moved_mac))
    elif moved_mac is not None:
        steps.append(AddMacvlan(survivor, target, moved_mac))
    steps.append(AddAddress(target, iface, nodad=iface.version == 6))
    steps.append(Announce(target, iface.ip, config.announce.count, config.announce.interval))
    found = snapshot.where_is(iface.ip)
    if found:
        # the NIC's routes are kept before its addresses go: with its last IPv4 address, the kernel
        # deletes every IPv4 route through it; the delete names the prefix the kernel has
        steps.append(SaveRoutes(source))
        steps.extend(DelAddress(a.ifname, a.interface) for a in found if a.ifname != target)
    steps.append(DelNeighbours(source, iface.network))
    steps.append(FlushNeighbours(iface.network))
    steps.append(FlushRouteCache(iface.version))
    return tuple(steps)


def route_moves(config: Config, snapshot: Snapshot, failed: str, moved: Sequence[tuple[AddressConfig, str]],
                saved: Sequence[Route] = ()) -> tuple[MoveRoutes, ...]:
    """The routes of ``failed`` that go with its moved addresses (``moved``: (address, the device it
    goes to), in plan order): every route whose gateway is on a moved subnet, whatever its protocol
    (static, boot, dhcp, ra, routing daemons), and the IPv6 routes via a link-local gateway (router
    advertisements), each to the device the first address of that subnet (or family) goes to --
    whatever happens to that one address: the device is on the subnet. Configured routes of the
    failed NIC that the kernel does not hold go too, as static routes, and so do the routes the
    ledger ``saved`` of it (a run that stopped between the address and its routes); a route already
    on its device is left alone."""
    by_net: dict[IPNetwork, str] = {}
    v6_first: str | None = None
    for addr, device in moved:
        by_net.setdefault(addr.address.network, device)
        if addr.address.version == 6 and v6_first is None:
            v6_first = device
    by_target: dict[str, list[Route]] = {}
    seen: set[tuple[object, ...]] = set()

    def goes_to(gateway: IPAddress | None) -> str | None:
        if gateway is None:
            return None
        if gateway.version == 6 and gateway.is_link_local:
            return v6_first
        return next((device for net, device in by_net.items() if gateway in net), None)

    for kr in (*snapshot.routes_on(failed), *saved):
        if kr.table != 254 or kr.proto == "kernel" or kr.type != "unicast":
            continue
        to = goes_to(kr.gateway)
        if to is not None and (kr.dst, kr.gateway) not in seen and not snapshot.has_route(kr.dst, to, kr.gateway):
            seen.add((kr.dst, kr.gateway))
            by_target.setdefault(to, []).append(kr)
    cfg = config.interfaces.get(failed)
    for r in cfg.routes if cfg is not None else ():
        to = goes_to(r.via)
        if to is not None and (r.to, r.via) not in seen and not snapshot.has_route(r.to, to, r.via):
            seen.add((r.to, r.via))
            by_target.setdefault(to, []).append(Route(dst=r.to, ifname=failed, gateway=r.via, metric=r.metric))
    return tuple(MoveRoutes(failed, device, tuple(routes)) for device, routes in by_target.items())


# --------------------------------------------------------------------------- failback


def _configured_routes(config: Config, nic: str, network: IPNetwork) -> list[RouteSpec]:
    return [RouteSpec(r.to, r.via, r.metric) for r in config.interfaces[nic].routes
            if r.via is not None and r.via in network]


def return_steps(config: Config, snapshot: Snapshot, nic: str, addr: AddressConfig,
                 holders: tuple[str, ...], ledger: RouteLedger) -> tuple[Step, ...]:
    """Bring ``addr`` home to ``nic``: make before break (see the module docstring)."""
    iface = addr.address
    target = home_device(snapshot, nic, addr)
    steps: list[Step] = []
    if not holders and config.conflict_check.enabled:
        # nobody here holds it: make sure nobody out there does either
        steps.append(CheckConflict(nic, iface.ip, config.conflict_check.timeout))
    if addr.vlan is not None and snapshot.link(target) is None:
        steps.append(AddVlan(nic, target, addr.vlan))
    steps.append(AddAddress(target, iface, nodad=iface.version == 6))
    steps.append(Announce(target, iface.ip, config.announce.count, config.announce.interval))
    routes = ledger.claim(iface.network, nic, nic, lambda: _configured_routes(config, nic, iface.network))
    for holder in holders:
        steps.extend(DelAddress(a.ifname, a.interface) for a in snapshot.where_is(iface.ip) if a.ifname == holder)
        steps.extend(DelRoute(r.dst, holder, r.via, r.metric) for r in routes
                     if snapshot.has_route(r.dst, holder, r.via))
    steps.extend(AddRoute(r.dst, target, r.via, r.metric) for r in routes
                 if not snapshot.has_route(r.dst, target, r.via))
    if holders:
        steps.append(FlushNeighbours(iface.network))
        steps.append(FlushRouteCache(iface.version))
    return tuple(steps)


def settle_steps(config: Config, snapshot: Snapshot, nic: str, addr: AddressConfig, target: str,
                 extra: tuple[str, ...], managed: frozenset[str], ledger: RouteLedger) -> tuple[Step, ...]:
    """``addr`` is at home already: finish what a failback interrupted (a crash between its steps).

    Copies on other devices go, after the address is announced at home (clients may still hold
    the other device's MAC); configured routes through its subnet that are on another managed
    device come home. Nothing to do: ``()``.
    """
    iface = addr.address
    routes = ledger.claim(iface.network, nic, nic, lambda: _configured_routes(config, nic, iface.network))
    if not extra and not routes:
        return ()

    def own_route(dev: str, r: RouteSpec) -> bool:  # that device is configured with it too
        other = config.interfaces.get(dev)
        return other is not None and any(o.to == r.dst and o.via == r.via for o in other.routes)

    strays = [(r, kr.ifname, kr.metric) for r in routes for kr in snapshot.routes_to(r.dst, r.via)
              if kr.table == 254 and kr.ifname is not None
              and kr.ifname != target and kr.ifname in managed and not own_route(kr.ifname, r)]
    if not extra and not strays:
        return ()
    missing = [r for r in routes if not snapshot.has_route(r.dst, target, r.via)]
    steps: list[Step] = [Announce(target, iface.ip, config.announce.count, config.announce.interval)]
    steps.extend(DelAddress(a.ifname, a.interface) for a in snapshot.where_is(iface.ip) if a.ifname in extra)
    steps.extend(DelRoute(r.dst, dev, r.via, metric) for r, dev, metric in strays)
    steps.extend(AddRoute(r.dst, target, r.via, r.metric) for r in missing)
    steps.append(FlushNeighbours(iface.network))
    steps.append(FlushRouteCache(iface.version))
    return tuple(steps)
