"""The planner: may an address of a failed NIC live on a survivor, and how does it move?

Theory of operation
-------------------
``plan_failover(config, snapshot, failed, ...)`` is a pure function. For every
address that is on the failed NIC now (or is homed there and placed nowhere),
it walks the candidate survivors in order and runs the eligibility checks
below against the configuration and the kernel snapshot. The first candidate
that passes every check gets the address, with the ordered move steps; if none
does, the address is refused and the refusal lists, per candidate, every
check that failed. Nothing here performs I/O: conflict findings (RFC 5227 /
DAD answers) and health verdicts (path probes, flap hold-down) are inputs.

Checks (stable codes; each failure carries one sentence for operators):

==================  ==========================================================
``same-network``    the survivor has an address (configured or in the kernel)
                    in a network that overlaps the address's network
``same-subnet``     ... and one in exactly the address's subnet (same prefix)
``survivor-healthy`` the survivor exists, is admin up, has carrier, and no
                    health verdict (path probes, flapping) holds it down
``capacity``        below ``max_addresses``; the kernel can hold the address
                    (IPv6 present and enabled on the survivor)
``mac-capacity``    for ``mac: move``: macvlan in the kernel, an Ethernet
                    survivor, and room for one more unicast MAC
``vlan``            for ``vlan: N``: 802.1Q in the kernel and VLAN N permitted
                    on the survivor
``conflict``        nobody else uses or is configured to use the address
==================  ==========================================================

Candidate order: the failed NIC's ``backups`` when configured (only those, in
that order); otherwise every other configured NIC, fewest addresses first
(counting the moves already planned), then by name -- so the result never
depends on the order of keys in the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ipshift.config import AddressConfig, Config, RouteConfig
from ipshift.model import Address, IPAddress, IPInterface, IPNetwork, Link, Snapshot
from ipshift.steps import (
    AddAddress, AddMacvlan, AddRoute, AddVlan, Announce, CheckConflict, DelAddress, DelLink, DelNeighbours,
    DelRoute, DemoteRoutes, FlushNeighbours, FlushRouteCache, RestoreRoutes, Step,
)

CHECK_CODES = (
    "same-network", "same-subnet", "survivor-healthy", "capacity", "mac-capacity", "vlan", "conflict",
)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed check: a stable code and a sentence."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A survivor that was considered and the checks it failed (empty: eligible)."""

    nic: str
    failures: tuple[Failure, ...]

    @property
    def eligible(self) -> bool:
        return not self.failures


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


@dataclass(frozen=True, slots=True)
class Plan:
    failed: str
    moves: tuple[Move, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    prelude: tuple[Step, ...] = ()  # NIC-level steps that run before the moves
    postlude: tuple[Step, ...] = ()  # NIC-level steps that run after the moves
    kind: str = "failover"  # "failover" or "failback"

    @property
    def complete(self) -> bool:
        return not self.refusals


@dataclass(frozen=True, slots=True)
class Warning:
    code: str
    nic: str
    message: str


@dataclass(slots=True)
class _Load:
    """Addresses per NIC, counting moves planned so far (local to one planning run)."""

    counts: dict[str, int] = field(default_factory=dict)
    macs: dict[str, int] = field(default_factory=dict)
    # the distinct subnets of (NIC, VLAN), read once per run: config and snapshot do not change in it
    subnets: dict[tuple[str, int | None], tuple[IPNetwork, ...]] = field(default_factory=dict)


# --------------------------------------------------------------------------- what moves


def nic_of(snapshot: Snapshot, device: str) -> str:
    """The NIC under ``device``: its lower NIC for a macvlan/VLAN device, else the device itself."""
    link = snapshot.link(device)
    if link is not None and link.kind in ("macvlan", "vlan") and link.parent is not None:
        parent = snapshot.link_by_index(link.parent)
        if parent is not None:
            return parent.name
    return device


def _holder(snapshot: Snapshot, ip: IPAddress) -> str | None:
    """The NIC that holds ``ip`` now: for a macvlan/VLAN device, its lower NIC."""
    found = snapshot.where_is(ip)
    return nic_of(snapshot, found[0].ifname) if found else None


def _device_holding(snapshot: Snapshot, ip: IPAddress) -> str | None:
    found = snapshot.where_is(ip)
    return found[0].ifname if found else None


def addresses_on(config: Config, snapshot: Snapshot, nic: str) -> list[tuple[str, AddressConfig]]:
    """Configured addresses that would have to move if ``nic`` failed now, as (home, address).

    Those the kernel shows on ``nic`` (or on a macvlan/VLAN device stacked on it), and
    those homed on ``nic`` that are on no NIC at all yet.
    """
    result = []
    for home, addr in config.all_addresses():
        holder = _holder(snapshot, addr.address.ip)
        if holder == nic or (holder is None and home == nic):
            result.append((home, addr))
    result.sort(key=lambda item: (item[1].address.version, item[1].address.ip))
    return result


# --------------------------------------------------------------------------- the checks


def _is_managed_address(a: Address) -> bool:
    if a.scope != "global":
        return False
    return not (a.ip.version == 6 and a.ip.is_link_local)


def _survivor_networks(config: Config, snapshot: Snapshot, nic: str, vlan: int | None,
                       load: _Load) -> tuple[IPNetwork, ...]:
    """The distinct subnets ``nic`` is on for ``vlan`` (None: untagged), from config and kernel."""
    key = (nic, vlan)
    if key not in load.subnets:
        load.subnets[key] = tuple(dict.fromkeys(i.network for i in _survivor_interfaces(config, snapshot, nic, vlan)))
    return load.subnets[key]


def _survivor_interfaces(config: Config, snapshot: Snapshot, nic: str, vlan: int | None) -> list[IPInterface]:
    nets: list[IPInterface] = []
    iface_cfg = config.interfaces.get(nic)
    if iface_cfg is not None:
        nets.extend(a.address for a in iface_cfg.addresses if a.vlan == vlan)
    link = snapshot.link(nic)
    if link is not None:
        if vlan is None:
            devices = [nic] + [m.name for m in snapshot.children(nic, "macvlan")]
        else:
            devices = [v.name for v in snapshot.children(nic, "vlan") if v.vlan_id == vlan]
        for dev in devices:
            nets.extend(a.interface for a in snapshot.addresses_on(dev) if _is_managed_address(a))
    return nets


def _check_network(iface: IPInterface, nets: Sequence[IPNetwork], nic: str, vlan: int | None) -> list[Failure]:
    same_family = [n for n in nets if n.version == iface.version]
    where = f"{nic}" if vlan is None else f"VLAN {vlan} of {nic}"
    failures: list[Failure] = []
    if not any(n.overlaps(iface.network) for n in same_family):
        have = ", ".join(sorted({str(n) for n in same_family})) or f"no IPv{iface.version} address"
        failures.append(Failure("same-network",
                                f"{where} is not on the network of {iface.network} (it has {have})"))
    if iface.network not in same_family:
        have = ", ".join(sorted({str(n) for n in same_family})) or f"no IPv{iface.version} subnet"
        failures.append(Failure("same-subnet",
                                f"{where} is not on subnet {iface.network} (it has {have})"))
    return failures


def _check_health(link: Link | None, nic: str, unhealthy: Mapping[str, str]) -> list[Failure]:
    if link is None:
        return [Failure("survivor-healthy", f"{nic} does not exist in the kernel")]
    if not link.admin_up:
        return [Failure("survivor-healthy", f"{nic} is administratively down")]
    if not link.carrier:
        return [Failure("survivor-healthy", f"{nic} has no carrier (link down)")]
    if not link.healthy:
        return [Failure("survivor-healthy", f"{nic} is not operational (operstate {link.operstate})")]
    if nic in unhealthy:
        return [Failure("survivor-healthy", f"{nic} is held down: {unhealthy[nic]}")]
    return []


def _present_count(snapshot: Snapshot, nic: str) -> int:
    """Global addresses on ``nic`` and on the macvlan/VLAN devices stacked on it."""
    devices = [nic] + [l.name for kind in ("macvlan", "vlan") for l in snapshot.children(nic, kind)]
    return sum(1 for d in devices for a in snapshot.addresses_on(d) if _is_managed_address(a))


def _check_capacity(config: Config, snapshot: Snapshot, nic: str, iface: IPInterface,
                    load: _Load) -> list[Failure]:
    failures: list[Failure] = []
    limit = config.interfaces[nic].max_addresses if nic in config.interfaces else None
    held = load.counts.get(nic, 0)
    if limit is not None and held + 1 > limit:
        failures.append(Failure("capacity", f"{nic} already holds {held} addresses, its max_addresses is {limit}"))
    if iface.version == 6:
        if not snapshot.features.ipv6:
            failures.append(Failure("capacity", "this kernel has no IPv6 support"))
        elif snapshot.sysctl(nic).disable_ipv6 == 1:
            failures.append(Failure("capacity", f"IPv6 is disabled on {nic} (disable_ipv6=1)"))
    return failures


def _check_mac(config: Config, snapshot: Snapshot, link: Link | None, nic: str, load: _Load) -> list[Failure]:
    failures: list[Failure] = []
    if snapshot.features.macvlan is False:
        failures.append(Failure("mac-capacity", "this kernel has no macvlan support, so no NIC can take a second MAC"))
    if link is not None and not link.is_ethernet:
        failures.append(Failure("mac-capacity", f"{nic} is not an Ethernet NIC and cannot take another MAC"))
    limit = config.interfaces[nic].max_extra_macs if nic in config.interfaces else None
    if limit is not None:
        used = load.macs.get(nic, 0)
        if used + 1 > limit:
            failures.append(Failure("mac-capacity",
                                    f"{nic} already carries {used} extra MACs, its max_extra_macs is {limit}"))
    return failures


def _check_vlan(config: Config, snapshot: Snapshot, nic: str, vlan: int) -> list[Failure]:
    failures: list[Failure] = []
    if snapshot.features.vlan_8021q is False:
        failures.append(Failure("vlan", f"this kernel has no 802.1Q VLAN support (8021q), so {nic} cannot carry VLAN {vlan}"))
    allowed = config.interfaces[nic].vlans if nic in config.interfaces else None
    if allowed is not None and vlan not in allowed:
        failures.append(Failure("vlan", f"VLAN {vlan} is not permitted on {nic} (vlans: {sorted(allowed)})"))
    return failures


def _check_conflict(config: Config, snapshot: Snapshot, ip: IPAddress, nic: str,
                    conflicts: Mapping[tuple[IPAddress, str], str], managed_devices: frozenset[str]) -> list[Failure]:
    failures: list[Failure] = []
    if (ip, nic) in conflicts:
        failures.append(Failure("conflict", f"{ip} is in use on the network of {nic}: {conflicts[(ip, nic)]}"))
    for peer in config.peers:
        if ip in peer.addresses:
            failures.append(Failure("conflict", f"{ip} is configured on peer {peer.name}"))
    for addr in snapshot.where_is(ip):
        if addr.ifname not in managed_devices:
            failures.append(Failure("conflict", f"{ip} is already on {addr.ifname}, which ipshift does not manage"))
    return failures


# --------------------------------------------------------------------------- steps


def macvlan_name(failed_link: Link | None, failed: str) -> str:
    """The macvlan device that carries the failed NIC's MAC on a survivor."""
    suffix = str(failed_link.index) if failed_link is not None else str(sum(map(ord, failed)) % 10000)
    return f"ipsmv{suffix}"


def vlan_name(survivor: str, vlan: int) -> str:
    name = f"{survivor}.{vlan}"
    return name if len(name) <= 15 else f"ipsvl{vlan}.{abs(hash(survivor)) % 1000}"[:15]


def _routes_with(config: Config, snapshot: Snapshot, home: str, source: str,
                 iface: IPInterface) -> list[RouteConfig | tuple[IPNetwork, IPAddress | None, int | None]]:
    """Static routes that go through ``iface``'s subnet: configured on its home, or in the kernel."""
    routes: list[RouteConfig | tuple[IPNetwork, IPAddress | None, int | None]] = []
    seen: set[tuple[IPNetwork, IPAddress | None]] = set()
    home_cfg = config.interfaces.get(home)
    if home_cfg is not None:
        for r in home_cfg.routes:
            if r.via is not None and r.via in iface.network:
                routes.append(r)
                seen.add((r.to, r.via))
    for kr in snapshot.routes:
        if (kr.ifname == source and kr.gateway is not None and kr.gateway in iface.network
                and kr.proto in ("static", "boot") and kr.table == 254 and (kr.dst, kr.gateway) not in seen):
            routes.append((kr.dst, kr.gateway, kr.metric))
            seen.add((kr.dst, kr.gateway))
    return routes


def _route_tuple(r: RouteConfig | tuple[IPNetwork, IPAddress | None, int | None]
                 ) -> tuple[IPNetwork, IPAddress | None, int | None]:
    return (r.to, r.via, r.metric) if isinstance(r, RouteConfig) else r


@dataclass(slots=True)
class _RouteLedger:
    """Routes already placed in one plan: each moves with the first address of its gateway's subnet."""

    routes: set[tuple[IPNetwork, IPAddress | None]] = field(default_factory=set)
    subnets: set[tuple[IPNetwork, str, str]] = field(default_factory=set)  # (subnet, home, source)


def _move_steps(config: Config, snapshot: Snapshot, home: str, addr: AddressConfig, source: str,
                survivor: str, target: str, failed_link: Link | None,
                ledger: _RouteLedger | None = None) -> tuple[Step, ...]:
    """The ordered steps of one address's failover transaction.

    The first announcement leaves right after the address is added (the step
    the client is waiting for); clean-up of the failed NIC's routes and
    neighbours, the reinstalled routes and the flushes follow it. A route is
    removed from the failed NIC before it is added on the survivor (the kernel
    refuses a second route with the same destination and metric).
    """
    iface = addr.address
    steps: list[Step] = []
    if config.conflict_check.enabled:
        steps.append(CheckConflict(survivor, iface.ip, config.conflict_check.timeout))
    holding = _device_holding(snapshot, iface.ip)
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
    # a route goes with the first address of its gateway's subnet that moves, not with every one
    routes: list[tuple[IPNetwork, IPAddress | None, int | None]] = []
    if ledger is None or (iface.network, home, source) not in ledger.subnets:
        routes = [t for t in (_route_tuple(r) for r in _routes_with(config, snapshot, home, source, iface))
                  if ledger is None or (t[0], t[1]) not in ledger.routes]
    if ledger is not None:
        ledger.routes.update((dst, via) for dst, via, _ in routes)
        ledger.subnets.add((iface.network, home, source))
    for dst, via, metric in routes:
        if snapshot.has_route(dst, holding or source, via):
            steps.append(DelRoute(dst, holding or source, via, metric))
    steps.append(DelNeighbours(source, iface.network))
    for dst, via, metric in routes:
        steps.append(AddRoute(dst, target, via, metric))
    steps.append(FlushNeighbours(iface.network))
    steps.append(FlushRouteCache(iface.version))
    return tuple(steps)


def _home_device(config: Config, snapshot: Snapshot, nic: str, addr: AddressConfig) -> str:
    if addr.vlan is not None:
        for v in snapshot.children(nic, "vlan"):
            if v.vlan_id == addr.vlan:
                return v.name
        return vlan_name(nic, addr.vlan)
    return nic


@dataclass(slots=True)
class _RouteBook:
    """A failback plan's configured routes, by the subnet of their gateway; each is handed out once.

    Looked up once per (NIC, subnet), not once per address: with thousands of addresses on a
    subnet and hundreds of routes, a scan per address was most of the planning time."""

    config: Config
    done: set[tuple[IPNetwork, IPAddress | None]] = field(default_factory=set)
    seen: set[tuple[str, IPNetwork]] = field(default_factory=set)

    def take(self, nic: str, network: IPNetwork) -> list[RouteConfig]:
        """``nic``'s configured routes with a gateway on ``network`` not handed out before."""
        if (nic, network) in self.seen:
            return []
        self.seen.add((nic, network))
        routes = [r for r in self.config.interfaces[nic].routes
                  if r.via is not None and r.via in network and (r.to, r.via) not in self.done]
        self.done.update((r.to, r.via) for r in routes)
        return routes


def _return_steps(config: Config, snapshot: Snapshot, nic: str, addr: AddressConfig,
                  holders: tuple[str, ...], book: _RouteBook) -> tuple[Step, ...]:
    """Bring ``addr`` home to ``nic`` (failback, or first placement when it is nowhere).

    Make-before-break: the address is added and announced at home before it is
    removed from where it was, so clients see no gap.
    """
    iface = addr.address
    target = _home_device(config, snapshot, nic, addr)
    steps: list[Step] = []
    if not holders and config.conflict_check.enabled:
        # nobody here holds it: make sure nobody out there does either
        steps.append(CheckConflict(nic, iface.ip, config.conflict_check.timeout))
    if addr.vlan is not None and snapshot.link(target) is None:
        steps.append(AddVlan(nic, target, addr.vlan))
    steps.append(AddAddress(target, iface, nodad=iface.version == 6))
    steps.append(Announce(target, iface.ip, config.announce.count, config.announce.interval))
    cfg_routes = book.take(nic, iface.network)
    for holder in holders:
        steps.append(DelAddress(holder, iface))
        for r in cfg_routes:
            if snapshot.has_route(r.to, holder, r.via):
                steps.append(DelRoute(r.to, holder, r.via, r.metric))
    for r in cfg_routes:
        if not snapshot.has_route(r.to, target, r.via):
            steps.append(AddRoute(r.to, target, r.via, r.metric))
    if holders:
        steps.append(FlushNeighbours(iface.network))
        steps.append(FlushRouteCache(iface.version))
    return tuple(steps)


def _settle_steps(config: Config, snapshot: Snapshot, nic: str, addr: AddressConfig, target: str,
                  extra: tuple[str, ...], managed: frozenset[str], book: _RouteBook) -> tuple[Step, ...]:
    """``addr`` is at home already: finish what a failback interrupted (a crash between its steps).

    Copies on other devices go, after the address is announced at home (clients may still hold
    the other device's MAC); configured routes through its subnet that are on another managed
    device come home. Nothing to do: ``()``.
    """
    iface = addr.address
    cfg_routes = book.take(nic, iface.network)
    if not extra and not cfg_routes:
        return ()

    def own_route(dev: str, r: RouteConfig) -> bool:  # that device is configured with it too
        other = config.interfaces.get(dev)
        return other is not None and any(o.to == r.to and o.via == r.via for o in other.routes)

    strays = [(r, kr.ifname, kr.metric) for r in cfg_routes for kr in snapshot.routes_to(r.to, r.via)
              if kr.table == 254 and kr.ifname is not None
              and kr.ifname != target and kr.ifname in managed and not own_route(kr.ifname, r)]
    missing = [r for r in cfg_routes if not snapshot.has_route(r.to, target, r.via)]
    if not extra and not strays:
        return ()
    steps: list[Step] = [Announce(target, iface.ip, config.announce.count, config.announce.interval)]
    steps.extend(DelAddress(h, iface) for h in extra)
    steps.extend(DelRoute(r.to, dev, r.via, metric) for r, dev, metric in strays)
    steps.extend(AddRoute(r.to, target, r.via, r.metric) for r in missing)
    steps.append(FlushNeighbours(iface.network))
    steps.append(FlushRouteCache(iface.version))
    return tuple(steps)


# --------------------------------------------------------------------------- the planner


def candidates_for(config: Config, failed: str) -> list[str]:
    """Who may take over from ``failed``, before ordering by load."""
    cfg = config.interfaces.get(failed)
    if cfg is not None and cfg.backups is not None:
        return [b for b in cfg.backups if b != failed]
    return sorted(n for n in config.interfaces if n != failed)


def evaluate(config: Config, snapshot: Snapshot, addr: AddressConfig, nic: str,
             *, load: _Load, unhealthy: Mapping[str, str], conflicts: Mapping[tuple[IPAddress, str], str],
             managed_devices: frozenset[str]) -> Candidate:
    """Every check for moving ``addr`` onto ``nic``."""
    iface = addr.address
    link = snapshot.link(nic)
    failures: list[Failure] = []
    trunked = addr.vlan is not None and nic in config.interfaces and addr.vlan in (config.interfaces[nic].vlans or ())
    if not trunked:  # a NIC that declares VLAN N carries VLAN N's network, whatever addresses it has on it
        failures += _check_network(iface, _survivor_networks(config, snapshot, nic, addr.vlan, load), nic, addr.vlan)
    failures += _check_health(link, nic, unhealthy)
    failures += _check_capacity(config, snapshot, nic, iface, load)
    if addr.mac == "move":
        failures += _check_mac(config, snapshot, link, nic, load)
    if addr.vlan is not None:
        failures += _check_vlan(config, snapshot, nic, addr.vlan)
    failures += _check_conflict(config, snapshot, iface.ip, nic, conflicts, managed_devices)
    return Candidate(nic, tuple(failures))


def managed_devices(config: Config, snapshot: Snapshot) -> frozenset[str]:
    names = set(config.interfaces)
    for link in snapshot.links:
        if link.kind in ("macvlan", "vlan") and link.parent is not None:
            parent = snapshot.link_by_index(link.parent)
            if parent is not None and parent.name in config.interfaces:
                names.add(link.name)
    return frozenset(names)


def plan_failover(config: Config, snapshot: Snapshot, failed: str, *,
                  conflicts: Mapping[tuple[IPAddress, str], str] | None = None,
                  unhealthy: Mapping[str, str] | None = None) -> Plan:
    """Plan the move of every address on ``failed`` to survivors. Pure."""
    conflicts = conflicts or {}
    unhealthy = dict(unhealthy or {})
    unhealthy.pop(failed, None)
    managed = managed_devices(config, snapshot)
    failed_link = snapshot.link(failed)
    load = _Load(counts={n: _present_count(snapshot, n) for n in config.interfaces},
                 macs={n: len(snapshot.children(n, "macvlan")) for n in config.interfaces})
    moves: list[Move] = []
    refusals: list[Refusal] = []
    names = candidates_for(config, failed)
    explicit = config.interfaces.get(failed) is not None and config.interfaces[failed].backups is not None
    macvlan_planned: dict[str, str] = {}  # survivor -> macvlan device planned on it
    ledger = _RouteLedger()

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
        if addr.vlan is not None:
            target = vlan_name(chosen, addr.vlan)
        elif addr.mac == "move":
            target = macvlan_name(failed_link, failed)
        else:
            target = chosen
        steps = _move_steps(config, snapshot, home, addr, failed, chosen, target, failed_link, ledger)
        if addr.mac == "move" and addr.vlan is None:
            if chosen in macvlan_planned:  # the MAC already moves to this survivor: one macvlan serves
                steps = tuple(s for s in steps if not isinstance(s, AddMacvlan))
            else:
                macvlan_planned[chosen] = target
                load.macs[chosen] = load.macs.get(chosen, 0) + 1
        load.counts[chosen] = load.counts.get(chosen, 0) + 1
        moves.append(Move(iface, home, failed, chosen, target, steps, tuple(considered[:-1])))

    postlude: tuple[Step, ...] = (DemoteRoutes(failed),) if moves else ()
    return Plan(failed, tuple(moves), tuple(refusals), (), postlude)


def plan_failback(config: Config, snapshot: Snapshot, nic: str, *, bring_back: bool = True,
                  unhealthy: Mapping[str, str] | None = None,
                  conflicts: Mapping[tuple[IPAddress, str], str] | None = None) -> Plan:
    """Addresses homed on ``nic`` that are not there: bring them home. Pure.

    Addresses held by another NIC come home only with ``bring_back`` (failback
    mode auto, or an operator's ``ipshift failback``); addresses held by no NIC
    at all (first start, a crash in the middle of a move, someone deleted
    them) are always placed. Copies of a home address on other devices are
    removed, and its configured routes come home (:func:`_settle_steps`).
    Every placement is checked like a failover candidate.
    """
    unhealthy = dict(unhealthy or {})
    conflicts = conflicts or {}
    managed = managed_devices(config, snapshot)
    moves: list[Move] = []
    refusals: list[Refusal] = []
    iface_cfg = config.interfaces.get(nic)
    if iface_cfg is None:
        return Plan(nic, kind="failback")
    load = _Load(counts={n: _present_count(snapshot, n) for n in config.interfaces})
    emptied: dict[str, int] = {}
    book = _RouteBook(config)
    for addr in sorted(iface_cfg.addresses, key=lambda a: (a.address.version, a.address.ip)):
        iface = addr.address
        home_dev = _home_device(config, snapshot, nic, addr)
        holders = tuple(a.ifname for a in snapshot.where_is(iface.ip))
        if home_dev in holders:
            extra = tuple(h for h in holders if h != home_dev and h in managed)
            steps: tuple[Step, ...] = _settle_steps(config, snapshot, nic, addr, home_dev, extra, managed,
                                                    book)
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
        steps = _return_steps(config, snapshot, nic, addr, holders, book)
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
            left = sum(1 for a in snapshot.addresses_on(dev) if _is_managed_address(a)) - n
            if left <= 0:
                cleanup.append(DelLink(dev))
    return Plan(nic, tuple(moves), tuple(refusals), (RestoreRoutes(nic),), tuple(cleanup), kind="failback")


def _vlan_made_for_a_move(config: Config, snapshot: Snapshot, link: Link) -> bool:
    """A VLAN device on a NIC that is configured with no address on that VLAN: ipshift made it."""
    parent = snapshot.link_by_index(link.parent) if link.parent is not None else None
    if parent is None or parent.name not in config.interfaces:
        return False
    return not any(a.vlan == link.vlan_id for a in config.interfaces[parent.name].addresses)


def converge(config: Config, snapshot: Snapshot, usable: Mapping[str, bool], *,
             unhealthy: Mapping[str, str] | None = None, bring_back: frozenset[str] = frozenset(),
             conflicts: Mapping[tuple[IPAddress, str], str] | None = None) -> list[Plan]:
    """Every plan that brings the kernel to the configured placement. Pure.

    ``usable``: per configured NIC, whether it may carry addresses now (health).
    NICs that are not usable and hold addresses fail over; usable NICs get
    their missing home addresses, and those held elsewhere when the NIC is in
    ``bring_back``. Plans without moves are left out.
    """
    reasons = dict(unhealthy or {})
    for nic, ok in usable.items():
        if not ok and nic not in reasons:
            reasons[nic] = "not usable"
    plans: list[Plan] = []
    for nic in sorted(config.interfaces):
        if not usable.get(nic, False):
            p = plan_failover(config, snapshot, nic, conflicts=conflicts, unhealthy=reasons)
            if p.moves or p.refusals:
                plans.append(p)
    for nic in sorted(config.interfaces):
        if usable.get(nic, False):
            p = plan_failback(config, snapshot, nic, bring_back=nic in bring_back,
                              unhealthy=reasons, conflicts=conflicts)
            if p.moves or p.refusals:
                plans.append(p)
    return plans


# --------------------------------------------------------------------------- sysctl warnings


def sysctl_warnings(config: Config, snapshot: Snapshot) -> list[Warning]:
    """Kernel settings on the configured NICs that make failover lose addresses or traffic."""
    warnings: list[Warning] = []
    for nic in sorted(config.interfaces):
        s = snapshot.sysctl(nic)
        if snapshot.link(nic) is None:
            warnings.append(Warning("missing-nic", nic, f"{nic} is configured but does not exist in the kernel"))
            continue
        if s.promote_secondaries == 0:
            warnings.append(Warning("promote_secondaries", nic,
                                    f"{nic}: promote_secondaries=0: removing a primary address also removes "
                                    "the secondary addresses of its subnet"))
        if s.arp_ignore == 0:
            warnings.append(Warning("arp_ignore", nic,
                                    f"{nic}: arp_ignore=0: every NIC answers ARP for every local address, so "
                                    "clients may use the wrong NIC's MAC before any failure (set 1)"))
        if s.arp_announce == 0:
            warnings.append(Warning("arp_announce", nic,
                                    f"{nic}: arp_announce=0: ARP requests may carry another NIC's address as "
                                    "sender (set 2)"))
        if s.ignore_routes_with_linkdown == 0:
            warnings.append(Warning("ignore_routes_with_linkdown", nic,
                                    f"{nic}: ignore_routes_with_linkdown=0: the gateway's replies keep leaving "
                                    "through this NIC when it loses carrier (ipshift withdraws its routes "
                                    "while it is failed)"))
    return warnings


def all_plans(config: Config, snapshot: Snapshot, *, conflicts: Mapping[tuple[IPAddress, str], str] | None = None,
              unhealthy: Mapping[str, str] | None = None) -> list[Plan]:
    """``plan_failover`` for every configured NIC, as if it failed now."""
    return [plan_failover(config, snapshot, nic, conflicts=conflicts, unhealthy=unhealthy)
            for nic in sorted(config.interfaces)]

