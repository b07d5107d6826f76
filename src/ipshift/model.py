"""The kernel state ipshift reasons about, as immutable values.

Theory of operation: the kernel adapters (``ipshift.kernel``) translate netlink
messages into these frozen objects at the edge; everything above them (the
planner, health smoothing, the daemon's decisions) sees only these values and
never a raw netlink dict. A :class:`Snapshot` is one consistent reading of a
namespace: links, addresses, routes, neighbours, the per-NIC sysctls that
matter for failover, and what the kernel can do (802.1Q, macvlan).

A snapshot's addresses are kept per device (:class:`AddressTable` of
:class:`DeviceAddresses`): the kernel view builds one without copying every
address, shares each unchanged device's table between snapshots, and readers
keep what they derive from a device's table in its ``memo``.

This module does no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeAlias, overload

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# ARPHRD_ETHER: the link layer of physical NICs, veth and macvlan devices.
ARPHRD_ETHER = 1
# Operational states (RFC 2863) in which a link cannot carry traffic whatever its flags say:
# DORMANT is a port waiting for 802.1X authentication, TESTING one in a self-test.
LINK_DOWN_OPERSTATES = frozenset({"DOWN", "LOWERLAYERDOWN", "NOTPRESENT", "DORMANT", "TESTING"})


@dataclass(frozen=True, slots=True)
class Link:
    """One network device."""

    name: str
    index: int
    mac: str  # lower-case "aa:bb:cc:dd:ee:ff"; "" when the device has none
    admin_up: bool  # IFF_UP
    carrier: bool  # IFF_LOWER_UP
    operstate: str  # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN", ...
    kind: str = ""  # IFLA_INFO_KIND: "veth", "macvlan", "vlan", "bridge", "" for physical
    mtu: int = 1500
    link_type: int = ARPHRD_ETHER  # ifi_type
    parent: int | None = None  # IFLA_LINK (lower device) for macvlan / vlan
    vlan_id: int | None = None  # for kind == "vlan"
    promisc: bool = False  # IFF_PROMISC

    @property
    def is_ethernet(self) -> bool:
        return self.link_type == ARPHRD_ETHER and self.mac != ""

    @property
    def healthy(self) -> bool:
        """Admin up with carrier: able to send and receive."""
        return self.admin_up and self.carrier and self.operstate not in LINK_DOWN_OPERSTATES


@dataclass(frozen=True, slots=True)
class Address:
    """An IP address assigned to a link."""

    ifname: str
    interface: IPInterface  # address with its prefix, e.g. 192.0.2.10/24
    primary: bool = True  # False for IFA_F_SECONDARY (IPv4 only)
    scope: str = "global"  # "global", "link", "host"
    tentative: bool = False  # IPv6 DAD not finished
    dadfailed: bool = False  # IPv6 DAD found a duplicate
    label: str = ""

    @property
    def ip(self) -> IPAddress:
        return self.interface.ip

    @property
    def network(self) -> IPNetwork:
        return self.interface.network


@dataclass(frozen=True, slots=True)
class Route:
    """A route in the main table (or another table when ``table`` says so)."""

    dst: IPNetwork
    ifname: str | None
    gateway: IPAddress | None = None
    table: int = 254
    proto: str = "static"  # "kernel", "boot", "static", "dhcp", ... or a number as text
    scope: str = "universe"  # "universe", "link", "host"
    type: str = "unicast"
    metric: int | None = None
    linkdown: bool = False  # RTNH_F_LINKDOWN
    src: IPAddress | None = None


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A neighbour (ARP / NDP) table entry."""

    ifname: str
    ip: IPAddress
    mac: str | None
    state: str  # "REACHABLE", "STALE", "PERMANENT", "FAILED", ...


@dataclass(frozen=True, slots=True)
class LinkSysctls:
    """Per-NIC sysctls that change failover behaviour (None: not readable)."""

    arp_ignore: int | None = None
    arp_announce: int | None = None
    promote_secondaries: int | None = None
    ignore_routes_with_linkdown: int | None = None
    disable_ipv6: int | None = None
    accept_dad: int | None = None


@dataclass(frozen=True, slots=True)
class KernelFeatures:
    """What the running kernel can do, as probed (None: unknown)."""

    vlan_8021q: bool | None = None
    macvlan: bool | None = None
    ipv6: bool = True


class DeviceAddresses:
    """The addresses of one device, by IP: never changed once made. The view shares it between the
    snapshots in which the device's addresses did not change, so what a reader derives from it once
    (``memo``: the planner's per-device counts) stays valid as long as the object lives."""

    __slots__ = ("name", "by_ip", "_all", "memo")

    def __init__(self, name: str, by_ip: dict[IPAddress, Address]) -> None:
        self.name = name
        self.by_ip = by_ip
        self._all: tuple[Address, ...] | None = None
        self.memo: dict[object, object] = {}

    @property
    def all(self) -> tuple[Address, ...]:
        if self._all is None:
            self._all = tuple(self.by_ip.values())
        return self._all

    def __len__(self) -> int:
        return len(self.by_ip)


class AddressTable(Sequence[Address]):
    """A snapshot's addresses, device by device (what :attr:`Snapshot.addresses` holds when the
    view made the snapshot: no per-snapshot copy of every address). ``multi``: the IPs that more
    than one device holds (kept up to date by the view, so duplicates are found without a scan)."""

    __slots__ = ("_devs", "_multi", "_flat")

    def __init__(self, devs: Mapping[str, DeviceAddresses], multi: frozenset[IPAddress] | None = None) -> None:
        self._devs = devs
        self._flat: tuple[Address, ...] | None = None
        if multi is None:
            count: dict[IPAddress, int] = {}
            for d in devs.values():
                for ip in d.by_ip:
                    count[ip] = count.get(ip, 0) + 1
            multi = frozenset(ip for ip, n in count.items() if n > 1)
        self._multi = multi

    @classmethod
    def of(cls, addresses: Iterable[Address]) -> AddressTable:
        by_dev: dict[str, dict[IPAddress, Address]] = {}
        for a in addresses:
            by_dev.setdefault(a.ifname, {})[a.ip] = a
        return cls({name: DeviceAddresses(name, m) for name, m in by_dev.items()})

    def device(self, name: str) -> DeviceAddresses | None:
        return self._devs.get(name)

    def devices(self) -> Mapping[str, DeviceAddresses]:
        return self._devs

    def on(self, name: str) -> tuple[Address, ...]:
        d = self._devs.get(name)
        return d.all if d is not None else ()

    def where_is(self, ip: IPAddress) -> tuple[Address, ...]:
        out = []
        for d in self._devs.values():
            a = d.by_ip.get(ip)
            if a is not None:
                out.append(a)
        return tuple(out)

    @property
    def multi(self) -> frozenset[IPAddress]:
        return self._multi

    def _tuple(self) -> tuple[Address, ...]:
        if self._flat is None:
            self._flat = tuple(a for d in self._devs.values() for a in d.by_ip.values())
        return self._flat

    def __len__(self) -> int:
        return sum(len(d.by_ip) for d in self._devs.values())

    def __iter__(self) -> Iterator[Address]:
        for d in self._devs.values():
            yield from d.by_ip.values()

    @overload
    def __getitem__(self, i: int) -> Address: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Address, ...]: ...

    def __getitem__(self, i: int | slice) -> Address | tuple[Address, ...]:
        return self._tuple()[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AddressTable):
            return self._tuple() == other._tuple()
        if isinstance(other, tuple):
            return self._tuple() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AddressTable({self._tuple()!r})"


class _RouteIndex:
    """Routes by (destination, gateway) and by device, of one routes tuple."""

    __slots__ = ("routes", "by_key", "by_dev")

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        by_key: dict[tuple[IPNetwork, IPAddress | None], list[Route]] = {}
        by_dev: dict[str | None, list[Route]] = {}
        for r in routes:
            by_key.setdefault((r.dst, r.gateway), []).append(r)
            by_dev.setdefault(r.ifname, []).append(r)
        self.by_key = {k: tuple(v) for k, v in by_key.items()}
        self.by_dev = {k: tuple(v) for k, v in by_dev.items()}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One reading of a namespace's network state.

    ``addresses``: a tuple, or the view's :class:`AddressTable`; the lookups below use the table
    (built on first use from a tuple)."""

    links: tuple[Link, ...] = ()
    addresses: Sequence[Address] = ()
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    sysctls: Mapping[str, LinkSysctls] = field(default_factory=dict)
    features: KernelFeatures = field(default_factory=KernelFeatures)
    # lookup indexes, built on first use (a snapshot never changes, so they never go stale)
    _table: AddressTable | None = field(default=None, init=False, compare=False, repr=False)
    _by_name: dict[str, Link] | None = field(default=None, init=False, compare=False, repr=False)
    _routes: _RouteIndex | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def table(self) -> AddressTable:
        """The addresses by device (see :class:`AddressTable`)."""
        if self._table is None:
            table = self.addresses if isinstance(self.addresses, AddressTable) else AddressTable.of(self.addresses)
            object.__setattr__(self, "_table", table)
            return table
        return self._table

    def adopt_indexes(self, older: Snapshot) -> None:
        """Share ``older``'s route index when the routes are the same tuple (the view: a snapshot
        after an address or link event)."""
        if older._routes is not None and older.routes is self.routes and self._routes is None:
            object.__setattr__(self, "_routes", older._routes)

    def link(self, name: str) -> Link | None:
        if self._by_name is None:
            object.__setattr__(self, "_by_name", {l.name: l for l in self.links})
        assert self._by_name is not None
        return self._by_name.get(name)

    def link_by_index(self, index: int) -> Link | None:
        for link in self.links:
            if link.index == index:
                return link
        return None

    def addresses_on(self, ifname: str) -> tuple[Address, ...]:
        return self.table.on(ifname)

    def where_is(self, ip: IPAddress) -> tuple[Address, ...]:
        """Every link that holds ``ip`` (normally zero or one)."""
        return self.table.where_is(ip)

    def _route_index(self) -> _RouteIndex:
        if self._routes is None:
            object.__setattr__(self, "_routes", _RouteIndex(self.routes))
        assert self._routes is not None
        return self._routes

    def routes_to(self, dst: IPNetwork, gateway: IPAddress | None) -> tuple[Route, ...]:
        """The routes to ``dst`` through ``gateway`` (any device, any table)."""
        return self._route_index().by_key.get((dst, gateway), ())

    def routes_on(self, ifname: str) -> tuple[Route, ...]:
        """The routes through ``ifname`` (any table)."""
        return self._route_index().by_dev.get(ifname, ())

    def has_route(self, dst: IPNetwork, ifname: str, gateway: IPAddress | None) -> bool:
        """Is there a route to ``dst`` through ``gateway`` on ``ifname``?"""
        return any(r.ifname == ifname for r in self.routes_to(dst, gateway))

    def sysctl(self, ifname: str) -> LinkSysctls:
        return self.sysctls.get(ifname, LinkSysctls())

    def children(self, ifname: str, kind: str) -> tuple[Link, ...]:
        """Links of ``kind`` (e.g. "macvlan") stacked on ``ifname``."""
        parent = self.link(ifname)
        if parent is None:
            return ()
        return tuple(l for l in self.links if l.kind == kind and l.parent == parent.index)
