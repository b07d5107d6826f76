"""Netlink messages as :mod:`ipshift.model` values: the pure converters.

Theory of operation: small pure functions over a message as pyroute2 hands
it over, a dict with its header fields (``index``, ``flags``, ...) and an
``attrs`` list of ``(NLA name, value)`` pairs, nested attributes being dicts
of the same shape. They accept plain dicts of that shape as well, which is
how the unit tests feed them recorded messages. ``*_from_msg`` returns None
(or no routes) for a message the caller leaves out. The snapshot reader
(:mod:`ipshift.kernel.snapshot`) and the monitor's decoder
(:mod:`ipshift.kernel.decode`) share them, so that a dump and a notification
give the same value.

The sysctls follow the kernel's rules for the effective value of a per-link
IPv4 setting (``include/linux/inetdevice.h``):

* ``arp_ignore``, ``arp_announce``: ``max(all, <if>)`` (``IN_DEV_MAXCONF``);
* ``promote_secondaries``, ``ignore_routes_with_linkdown``: 1 when either
  ``all`` or ``<if>`` is non-zero, else 0 (``IN_DEV_ORCONF``: a truth value,
  so a written 2 reads as 1);
* ``accept_dad`` (IPv6): ``max(all, <if>)``, as ``addrconf_dad_begin`` and
  ``addrconf_dad_failure`` combine them;
* ``disable_ipv6``: the link's own value (writing ``all`` copies itself to
  every link, and the kernel reads only the link's value).

A value is None when the link's own file is unreadable (no such link, IPv6
off); an unreadable ``all`` leaves the link's value as it is.

This module does no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Mapping
from typing import Any

from ipshift.model import (
    ARPHRD_ETHER,
    Address,
    IPAddress,
    IPNetwork,
    Link,
    LinkSysctls,
    Neighbour,
    Route,
)

__all__ = [
    "IPV4_KEYS",
    "IPV6_KEYS",
    "Msg",
    "address_from_msg",
    "effective_sysctls",
    "link_from_msg",
    "neighbour_from_msg",
    "nla",
    "routes_from_msg",
]

Msg = Mapping[str, Any]

AF_INET = 2
AF_INET6 = 10

IFF_UP = 0x1
IFF_PROMISC = 0x100
IFF_LOWER_UP = 0x10000

IFA_F_SECONDARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40

RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
RTN_UNICAST = 1
RTNH_F_LINKDOWN = 16

NUD_NOARP = 0x40

ARPHRD_LOOPBACK = 772

SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
ROUTE_SCOPES = {0: "universe", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
ROUTE_TYPES = {
    0: "unspec", 1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
    6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat", 11: "xresolve",
}  # fmt: skip
# /etc/iproute2/rt_protos and linux/rtnetlink.h
ROUTE_PROTOS = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra",
    10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp",
    17: "mrouted", 18: "keepalived", 42: "babel", 99: "openr", 186: "bgp", 187: "isis",
    188: "ospf", 189: "rip", 192: "eigrp",
}  # fmt: skip
NUD_STATES = {
    0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
    0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT",
}  # fmt: skip
OPERSTATES = {0: "UNKNOWN", 1: "NOTPRESENT", 2: "DOWN", 3: "LOWERLAYERDOWN", 4: "TESTING", 5: "DORMANT", 6: "UP"}


# ------------------------------------------------------------------ messages


def nla(msg: Msg | None, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` (e.g. ``"IFLA_IFNAME"``) in ``msg``, else ``default``."""
    if msg is None:
        return default
    for item in msg.get("attrs", ()):
        if item[0] == name:
            return item[1]
    return default


def _name(table: Mapping[int, str], value: Any) -> str:
    """The name for a numeric code (or the number as text); names pass through."""
    if isinstance(value, str):
        return value
    return table.get(int(value), str(value))


def link_from_msg(msg: Msg) -> Link:
    """An ``RTM_NEWLINK`` message as a :class:`Link`.

    ``parent`` is ``IFLA_LINK`` when it names a device of the same namespace:
    it is None when ``IFLA_LINK_NETNSID`` says the lower device (or a veth's
    peer) lives in another namespace, and when it is the link itself.
    """
    flags = int(msg.get("flags", 0))
    index = int(msg["index"])
    info = nla(msg, "IFLA_LINKINFO")
    kind = nla(info, "IFLA_INFO_KIND") or ""
    vlan_id = None
    if kind == "vlan":
        vlan_id = nla(nla(info, "IFLA_INFO_DATA"), "IFLA_VLAN_ID")
    parent = nla(msg, "IFLA_LINK")
    if parent is not None and (nla(msg, "IFLA_LINK_NETNSID") is not None or int(parent) in (0, index)):
        parent = None
    operstate = nla(msg, "IFLA_OPERSTATE", "UNKNOWN")
    return Link(
        name=str(nla(msg, "IFLA_IFNAME", "")),
        index=index,
        mac=str(nla(msg, "IFLA_ADDRESS") or "").lower(),
        admin_up=bool(flags & IFF_UP),
        carrier=bool(flags & IFF_LOWER_UP),
        operstate=_name(OPERSTATES, operstate).upper(),
        kind=str(kind),
        mtu=int(nla(msg, "IFLA_MTU", 1500)),
        link_type=int(msg.get("ifi_type", ARPHRD_ETHER)),
        parent=None if parent is None else int(parent),
        vlan_id=None if vlan_id is None else int(vlan_id),
        promisc=bool(flags & IFF_PROMISC),
    )


def address_from_msg(msg: Msg, ifnames: Mapping[int, str]) -> Address | None:
    """An ``RTM_NEWADDR`` message as an :class:`Address`; None for another family or an unknown link.

    The flags come from ``IFA_FLAGS`` (32 bits) when present, else from the
    8-bit header field. ``primary`` is False only for IPv4 secondaries: in
    IPv6 the same bit means "temporary" (privacy address).
    """
    family = msg.get("family")
    ifname = ifnames.get(int(msg.get("index", 0)))
    if family not in (AF_INET, AF_INET6) or ifname is None:
        return None
    ip = nla(msg, "IFA_LOCAL") or nla(msg, "IFA_ADDRESS")
    if ip is None:
        return None
    flags = nla(msg, "IFA_FLAGS")
    if flags is None:
        flags = msg.get("flags", 0)
    flags = int(flags)
    return Address(
        ifname=ifname,
        interface=ipaddress.ip_interface(f"{ip}/{int(msg['prefixlen'])}"),
        primary=not (family == AF_INET and flags & IFA_F_SECONDARY),
        scope=_name(SCOPES, msg.get("scope", 0)),
        tentative=bool(flags & IFA_F_TENTATIVE),
        dadfailed=bool(flags & IFA_F_DADFAILED),
        label=str(nla(msg, "IFA_LABEL") or ""),
    )


def _network(family: int, dst: str | None, dst_len: int) -> IPNetwork:
    if dst is None:
        dst = "0.0.0.0" if family == AF_INET else "::"
    return ipaddress.ip_network(f"{dst}/{dst_len}", strict=False)


def _ip(value: Any) -> IPAddress | None:
    return None if value is None else ipaddress.ip_address(value)


def routes_from_msg(msg: Msg, ifnames: Mapping[int, str], table: int | None = RT_TABLE_MAIN) -> list[Route]:
    """An ``RTM_NEWROUTE`` message as routes: one per next hop, none when filtered out.

    Kept: IPv4 and IPv6 unicast routes of ``table`` (``RTA_TABLE`` wins over
    the 8-bit header field); ``table=None`` keeps every table but the local
    one (255). A multipath route gives one :class:`Route` per next hop, each
    with its own ``linkdown``. ``ifname`` is None for an unknown ``oif`` and
    for routes via a nexthop object (``RTA_NH_ID``).
    """
    family = msg.get("family")
    if family not in (AF_INET, AF_INET6) or msg.get("type") != RTN_UNICAST:
        return []
    rt_table = int(nla(msg, "RTA_TABLE", msg.get("table", 0)))
    if rt_table == RT_TABLE_LOCAL or (table is not None and rt_table != table):
        return []
    dst = _network(family, nla(msg, "RTA_DST"), int(msg.get("dst_len", 0)))
    common: dict[str, Any] = dict(
        dst=dst,
        table=rt_table,
        proto=_name(ROUTE_PROTOS, msg.get("proto", 0)),
        scope=_name(ROUTE_SCOPES, msg.get("scope", 0)),
        type="unicast",
        metric=nla(msg, "RTA_PRIORITY"),
        src=_ip(nla(msg, "RTA_PREFSRC")),
    )
    hops = nla(msg, "RTA_MULTIPATH")
    if hops:
        routes = []
        for hop in hops:
            oif = hop.get("oif", hop.get("ifindex"))
            routes.append(
                Route(
                    ifname=None if oif is None else ifnames.get(int(oif)),
                    gateway=_ip(nla(hop, "RTA_GATEWAY")),
                    linkdown=bool(int(hop.get("flags", 0)) & RTNH_F_LINKDOWN),
                    **common,
                )
            )
        return routes
    oif = nla(msg, "RTA_OIF")
    return [
        Route(
            ifname=None if oif is None else ifnames.get(int(oif)),
            gateway=_ip(nla(msg, "RTA_GATEWAY")),
            linkdown=bool(int(msg.get("flags", 0)) & RTNH_F_LINKDOWN),
            **common,
        )
    ]


def _nud_name(state: int) -> str:
    if state == 0:
        return "NONE"
    names = [name for bit, name in NUD_STATES.items() if state & bit]
    unknown = state & ~sum(NUD_STATES)
    if unknown:
        names.append(hex(unknown))
    return "|".join(names)


def neighbour_from_msg(
    msg: Msg, ifnames: Mapping[int, str], loopbacks: Container[int] = frozenset()
) -> Neighbour | None:
    """An ``RTM_NEWNEIGH`` message as a :class:`Neighbour`.

    None for another family, an unknown link, and for the NOARP entries the
    kernel keeps for multicast addresses and on loopback devices (their
    indexes in ``loopbacks``).
    """
    family = msg.get("family")
    index = int(msg.get("ifindex", 0))
    ifname = ifnames.get(index)
    dst = nla(msg, "NDA_DST")
    if family not in (AF_INET, AF_INET6) or ifname is None or dst is None:
        return None
    ip = ipaddress.ip_address(dst)
    state = int(msg.get("state", 0))
    if state & NUD_NOARP and (ip.is_multicast or index in loopbacks):
        return None
    mac = nla(msg, "NDA_LLADDR")
    return Neighbour(ifname=ifname, ip=ip, mac=str(mac).lower() if mac else None, state=_nud_name(state))


# ------------------------------------------------------------------- sysctls

IPV4_KEYS = ("arp_ignore", "arp_announce", "promote_secondaries", "ignore_routes_with_linkdown")
IPV6_KEYS = ("disable_ipv6", "accept_dad")
_MAX_RULE = frozenset({"arp_ignore", "arp_announce", "accept_dad"})
_OR_RULE = frozenset({"promote_secondaries", "ignore_routes_with_linkdown"})


def effective_sysctls(all_values: Mapping[str, int | None], link_values: Mapping[str, int | None]) -> LinkSysctls:
    """Combine the ``all`` and per-link raw values into the effective ones (module docstring)."""
    out: dict[str, int | None] = {}
    for key in IPV4_KEYS + IPV6_KEYS:
        own = link_values.get(key)
        every = all_values.get(key)
        if own is None:
            out[key] = None
        elif key in _MAX_RULE:
            out[key] = own if every is None else max(own, every)
        elif key in _OR_RULE:
            out[key] = 1 if (own or every) else 0
        else:
            out[key] = own
    return LinkSysctls(**out)
