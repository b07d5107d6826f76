"""The kernel state ipshift reasons about, as immutable values.

Theory of operation: the kernel adapters (``ipshift.kernel``) translate netlink
messages into these frozen objects at the edge; everything above them (the
planner, health smoothing, the daemon's decisions) sees only these values and
never a raw netlink dict. A :class:`Snapshot` is one consistent reading of a
namespace: links, addresses, routes, neighbours, the per-NIC sysctls that
matter for failover, and what the kernel can do (802.1Q, macvlan).

This module does no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, TypeAlias

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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One reading of a namespace's network state."""

    links: tuple[Link, ...] = ()
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    sysctls: Mapping[str, LinkSysctls] = field(default_factory=dict)
    features: KernelFeatures = field(default_factory=KernelFeatures)
    # lookup indexes, built on first use (a snapshot never changes, so they never go stale)
    _by_ip: dict[IPAddress, tuple[Address, ...]] | None = field(default=None, init=False, compare=False, repr=False)
    _by_dev: dict[str, tuple[Address, ...]] | None = field(default=None, init=False, compare=False, repr=False)
    _by_name: dict[str, Link] | None = field(default=None, init=False, compare=False, repr=False)
    _by_route: dict[tuple[IPNetwork, IPAddress | None], tuple[Route, ...]] | None = field(
        default=None, init=False, compare=False, repr=False)

    def _index(self) -> None:
        by_ip: dict[IPAddress, list[Address]] = {}
        by_dev: dict[str, list[Address]] = {}
        for a in self.addresses:
            by_ip.setdefault(a.ip, []).append(a)
            by_dev.setdefault(a.ifname, []).append(a)
        object.__setattr__(self, "_by_ip", {k: tuple(v) for k, v in by_ip.items()})
        object.__setattr__(self, "_by_dev", {k: tuple(v) for k, v in by_dev.items()})
        object.__setattr__(self, "_by_name", {l.name: l for l in self.links})

    def link(self, name: str) -> Link | None:
        if self._by_name is None:
            self._index()
        assert self._by_name is not None
        return self._by_name.get(name)

    def link_by_index(self, index: int) -> Link | None:
        for link in self.links:
            if link.index == index:
                return link
        return None

    def addresses_on(self, ifname: str) -> tuple[Address, ...]:
        if self._by_dev is None:
            self._index()
        assert self._by_dev is not None
        return self._by_dev.get(ifname, ())

    def where_is(self, ip: IPAddress) -> tuple[Address, ...]:
        """Every link that holds ``ip`` (normally zero or one)."""
        if self._by_ip is None:
            self._index()
        assert self._by_ip is not None
        return self._by_ip.get(ip, ())

    def routes_to(self, dst: IPNetwork, gateway: IPAddress | None) -> tuple[Route, ...]:
        """The routes to ``dst`` through ``gateway`` (any device, any table)."""
        if self._by_route is None:
            by_route: dict[tuple[IPNetwork, IPAddress | None], list[Route]] = {}
            for r in self.routes:
                by_route.setdefault((r.dst, r.gateway), []).append(r)
            object.__setattr__(self, "_by_route", {k: tuple(v) for k, v in by_route.items()})
        assert self._by_route is not None
        return self._by_route.get((dst, gateway), ())

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
