"""Address and route dumps read straight from the netlink bytes.

Theory of operation
-------------------
A re-read of a gateway with 10,000 addresses spent over a second, and built
tens of thousands of short-lived objects, in pyroute2's generic message
decoder -- for the five fields of each address that ipshift keeps. Here one
``RTM_GETADDR`` (and one ``RTM_GETROUTE`` per family, filtered by table in the
kernel with ``NETLINK_GET_STRICT_CHK``) is sent on a plain ``NETLINK_ROUTE``
socket and each answer is read with :mod:`struct`: the fixed header
(``ifaddrmsg`` / ``rtmsg``) and the few attributes that
:func:`~ipshift.kernel.convert.address_from_msg` and
:func:`~ipshift.kernel.convert.routes_from_msg` read, giving the same values
they give for the same message (``tests/lab/test_rawdump.py`` compares the
two). Blocking; the socket lives in the caller's namespace.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator, Mapping
from typing import Any

from ipshift.kernel.convert import (
    AF_INET, AF_INET6, IFA_F_DADFAILED, IFA_F_SECONDARY, IFA_F_TENTATIVE, ROUTE_PROTOS, ROUTE_SCOPES,
    RT_TABLE_LOCAL, RTN_UNICAST, RTNH_F_LINKDOWN, SCOPES,
)
from ipshift.model import Address, IPAddress, IPInterface, IPNetwork, Route

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_GETROUTE = 20, 22, 24, 26
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_FLAGS = 1, 2, 3, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 7, 9, 15

_HDR = struct.Struct("=IHHII")  # nlmsghdr
_RTA = struct.Struct("=HH")  # rtattr: length, type
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, proto, scope, type, flags
_NEXTHOP = struct.Struct("=HBBi")  # rtnexthop: length, flags, hops, ifindex
_U32 = struct.Struct("=I")
_ERR = struct.Struct("=i")


def _attrs(data: bytes, off: int, end: int) -> dict[int, bytes]:
    """The attributes from ``off`` to ``end``, by type (the first of each type wins, as ``nla`` does)."""
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        length, kind = _RTA.unpack_from(data, off)
        if length < 4:
            break
        out.setdefault(kind & 0x3FFF, data[off + 4:off + length])
        off += (length + 3) & ~3
    return out


def _dump(request: bytes, answer: int, strict: bool = False) -> Iterator[tuple[bytes, int, int]]:
    """Send one dump request; every answer of type ``answer`` as (buffer, payload offset, end)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        if strict:
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        sock.bind((0, 0))
        sock.settimeout(5.0)
        sock.send(_HDR.pack(_HDR.size + len(request), answer + 2, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request)
        while True:
            data = sock.recv(1 << 20)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _flags, _seq, _pid = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    break
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    (err,) = _ERR.unpack_from(data, off + _HDR.size)
                    if err:
                        raise OSError(-err, f"netlink dump: {os.strerror(-err)}")
                elif mtype == answer:
                    yield data, off + _HDR.size, off + length
                off += (length + 3) & ~3
    finally:
        sock.close()


def _ip(family: int, raw: bytes) -> IPAddress:
    if family == AF_INET:
        return ipaddress.IPv4Address(raw)
    return ipaddress.IPv6Address(raw)


def _interface(family: int, raw: bytes, prefixlen: int) -> IPInterface:
    if family == AF_INET:
        return ipaddress.IPv4Interface((int.from_bytes(raw, "big"), prefixlen))
    return ipaddress.IPv6Interface((int.from_bytes(raw, "big"), prefixlen))


AddressKey = tuple[str, bytes, int, int, int, bytes]


def addresses(ifnames: Mapping[int, str], known: dict[AddressKey, Address] | None = None) -> list[Address]:
    """Every IPv4 and IPv6 address of the known links (``ifnames``), as ``address_from_msg`` reads them.

    ``known``: the addresses of the previous dump by what the kernel sent for them; an address the
    kernel sends alike is that same object (a re-read of 10,000 unchanged addresses makes none), and
    ``known`` is replaced by this dump's."""
    out: list[Address] = []
    seen: dict[AddressKey, Address] = {}
    for data, off, end in _dump(_IFADDR.pack(0, 0, 0, 0, 0), RTM_NEWADDR):
        family, prefixlen, hflags, scope, index = _IFADDR.unpack_from(data, off)
        ifname = ifnames.get(index)
        if family not in (AF_INET, AF_INET6) or ifname is None:
            continue
        attrs = _attrs(data, off + _IFADDR.size, end)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if raw is None:
            continue
        flags = _U32.unpack(attrs[IFA_FLAGS][:4])[0] if IFA_FLAGS in attrs else hflags
        raw_label = attrs.get(IFA_LABEL, b"")
        k = (ifname, raw, prefixlen, flags & (IFA_F_SECONDARY | IFA_F_TENTATIVE | IFA_F_DADFAILED), scope, raw_label)
        a = known.get(k) if known is not None else None
        if a is None:
            a = Address(ifname=ifname, interface=_interface(family, raw, prefixlen),
                        primary=not (family == AF_INET and flags & IFA_F_SECONDARY),
                        scope=SCOPES.get(scope, str(scope)), tentative=bool(flags & IFA_F_TENTATIVE),
                        dadfailed=bool(flags & IFA_F_DADFAILED),
                        label=raw_label.split(b"\0", 1)[0].decode(errors="replace"))
        seen[k] = a
        out.append(a)
    if known is not None:
        known.clear()
        known.update(seen)
    return out


def routes(ifnames: Mapping[int, str], table: int, oif: int | None = None) -> list[Route]:
    """The unicast IPv4 and IPv6 routes of ``table`` (through device ``oif`` only, when given), as
    ``routes_from_msg`` reads them (the kernel filters; a kernel without strict checking raises
    OSError: the caller falls back)."""
    out: list[Route] = []
    for family in (AF_INET, AF_INET6):
        req = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, 0, 0, 0, 0)
        if table >= 256:
            req += _RTA.pack(8, RTA_TABLE) + _U32.pack(table)
        if oif is not None:
            req += _RTA.pack(8, RTA_OIF) + _U32.pack(oif)
        for data, off, end in _dump(req, RTM_NEWROUTE, strict=True):
            out.extend(_routes(data, off, end, ifnames, table))
    return out


def _routes(data: bytes, off: int, end: int, ifnames: Mapping[int, str], table: int) -> list[Route]:
    family, dst_len, _src_len, _tos, htable, proto, scope, rtype, rflags = _RTMSG.unpack_from(data, off)
    if family not in (AF_INET, AF_INET6) or rtype != RTN_UNICAST:
        return []
    attrs = _attrs(data, off + _RTMSG.size, end)
    rt_table = _U32.unpack(attrs[RTA_TABLE][:4])[0] if RTA_TABLE in attrs else htable
    if rt_table == RT_TABLE_LOCAL or rt_table != table:
        return []
    raw_dst = attrs.get(RTA_DST)
    width = 4 if family == AF_INET else 16
    dst_int = int.from_bytes(raw_dst, "big") if raw_dst else 0
    dst: IPNetwork
    if family == AF_INET:
        dst = ipaddress.IPv4Network((dst_int, dst_len), strict=False)
    else:
        dst = ipaddress.IPv6Network((dst_int, dst_len), strict=False)
    prio = attrs.get(RTA_PRIORITY)
    src = attrs.get(RTA_PREFSRC)
    common: dict[str, Any] = dict(dst=dst, table=rt_table, proto=ROUTE_PROTOS.get(proto, str(proto)),
                  scope=ROUTE_SCOPES.get(scope, str(scope)), type="unicast",
                  metric=_U32.unpack(prio[:4])[0] if prio else None,
                  src=_ip(family, src[:width]) if src else None)
    hops = attrs.get(RTA_MULTIPATH)
    if hops:
        found: list[Route] = []
        hop = 0
        while hop + _NEXTHOP.size <= len(hops):
            length, nflags, _hops, ifindex = _NEXTHOP.unpack_from(hops, hop)
            if length < _NEXTHOP.size:
                break
            gw = _attrs(hops, hop + _NEXTHOP.size, hop + length).get(RTA_GATEWAY)
            found.append(Route(ifname=ifnames.get(ifindex), gateway=_ip(family, gw[:width]) if gw else None,
                               linkdown=bool(nflags & RTNH_F_LINKDOWN), **common))
            hop += (length + 3) & ~3
        return found
    oif = attrs.get(RTA_OIF)
    gw = attrs.get(RTA_GATEWAY)
    return [Route(ifname=None if oif is None else ifnames.get(_U32.unpack(oif[:4])[0]),
                  gateway=_ip(family, gw[:width]) if gw else None,
                  linkdown=bool(rflags & RTNH_F_LINKDOWN), **common)]
