"""The steps of one address's move, in the order they must run (pure).

Theory of operation
-------------------
Three builders, one per kind of move:

* :func:`failover_steps` -- from the failed NIC to a survivor. Break before
  make: the address leaves the failed NIC, arrives on the survivor (or its
  macvlan/VLAN device) and is announced at once -- the step the client is
  waiting for; the failed NIC's neighbours, the reinstalled routes and the
  flushes follow it. A route is removed from the failed NIC before it is added
  on the survivor (the kernel refuses a second route with the same destination
  and metric).
* :func:`return_steps` -- home again (failback, or first placement when the
  address is nowhere). Make before break: added and announced at home before
  it is removed from where it was, so clients see no gap.
* :func:`settle_steps` -- the address is home already: finish what an
  interrupted failback left (copies elsewhere, routes on another device).

Routes go with the first address of their gateway's subnet that moves, not
with every one: one :class:`RouteLedger` per plan hands each route out once.
Device names are stable across restarts: a VLAN device is the survivor's
existing VLAN-N child whatever its name, else ``NIC.N`` (or a name derived
with CRC-32 when that is too long); a moved MAC lives on ``ipsmvINDEX``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ipshift.config import AddressConfig, Config
from ipshift.model import IPAddress, IPNetwork, Link, Snapshot
from ipshift.steps import (
    AddAddress, AddMacvlan, AddRoute, AddVlan, Announce, CheckConflict, DelAddress, DelNeighbours, DelRoute,
    FlushNeighbours, FlushRouteCache, Step,
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


def macvlan_name(failed_link: Link | None, failed: str) -> str:
    """The macvlan device that carries the failed NIC's MAC on a survivor."""
    suffix = str(failed_link.index) if failed_link is not None else str(zlib.crc32(failed.encode()) % 10000)
    return f"ipsmv{suffix}"


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


def _routes_through(config: Config, snapshot: Snapshot, home: str, source: str,
                    addr: AddressConfig) -> list[RouteSpec]:
    """Static routes that go through ``addr``'s subnet: configured on its home, or in the kernel."""
    net = addr.address.network
    routes: list[RouteSpec] = []
    seen: set[tuple[IPNetwork, IPAddress | None]] = set()
    home_cfg = config.interfaces.get(home)
    if home_cfg is not None:
        for r in home_cfg.routes:
            if r.via is not None and r.via in net:
                routes.append(RouteSpec(r.to, r.via, r.metric))
                seen.add((r.to, r.via))
    for kr in snapshot.routes:
        if (kr.ifname == source and kr.gateway is not None and kr.gateway in net
                and kr.proto in ("static", "boot") and kr.table == 254 and (kr.dst, kr.gateway) not in seen):
            routes.append(RouteSpec(kr.dst, kr.gateway, kr.metric))
            seen.add((kr.dst, kr.gateway))
    return routes


def failover_steps(config: Config, snapshot: Snapshot, home: str, addr: AddressConfig, source: str,
                   survivor: str, target: str, failed_link: Link | None, ledger: RouteLedger) -> tuple[Step, ...]:
    """The ordered steps of one address's failover transaction (see the module docstring)."""
    iface = addr.address
    steps: list[Step] = []
    if config.conflict_check.enabled:
        steps.append(CheckConflict(survivor, iface.ip, config.conflict_check.timeout))
    found = snapshot.where_is(iface.ip)
    holding = found[0].ifname if found else None
    if holding is not None:
        steps.append(DelAddress(holding, iface))
    moved_mac = failed_link.mac if addr.mac == "move" and failed_link is not None else None
    if addr.vlan is not None:
        if snapshot.link(target) is None:
            steps.append(AddVlan(survivor, target, addr.vlan, moved_mac))
    elif moved_mac is not None:
        steps.append(AddMacvlan(survivor, target, moved_mac))
    steps.append(AddAddress(target, iface, nodad=iface.version == 6))
    steps.append(Announce(target, iface.ip, config.announce.count, config.announce.interval))
    routes = ledger.claim(iface.network, home, source,
                          lambda: _routes_through(config, snapshot, home, source, addr))
    for r in routes:
        if snapshot.has_route(r.dst, holding or source, r.via):
            steps.append(DelRoute(r.dst, holding or source, r.via, r.metric))
    steps.append(DelNeighbours(source, iface.network))
    steps.extend(AddRoute(r.dst, target, r.via, r.metric) for r in routes)
    steps.append(FlushNeighbours(iface.network))
    steps.append(FlushRouteCache(iface.version))
    return tuple(steps)


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
        steps.append(DelAddress(holder, iface))
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
    steps.extend(DelAddress(h, iface) for h in extra)
    steps.extend(DelRoute(r.dst, dev, r.via, metric) for r, dev, metric in strays)
    steps.extend(AddRoute(r.dst, target, r.via, r.metric) for r in missing)
    steps.append(FlushNeighbours(iface.network))
    steps.append(FlushRouteCache(iface.version))
    return tuple(steps)
