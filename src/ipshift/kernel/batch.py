"""Bulk rtnetlink: thousands of address and route changes in a few system calls.

Theory of operation
-------------------
Moving 10,000 addresses one request and one answer at a time costs 10,000
round trips through the event loop. Here the requests are packed
back to back into few ``sendmsg`` calls on a plain ``NETLINK_ROUTE`` socket
(the kernel handles every message of a send before the call returns, in
order) and the answers -- one ``NLMSG_ERROR`` each, errno 0 for success --
are matched to the requests by sequence number.

Encoding goes through pyroute2: for each kind of request (add or delete an
address of one family on one device with one prefix length; add or delete a
route of one family and gateway on one device) one message is encoded by
pyroute2's ``ifaddrmsg`` / ``rtmsg`` classes, and the requests of that kind
are that template with the sequence number and the address bytes put in
place: the same bytes pyroute2 would produce, without its 36 microseconds of
encoding per message. Answers are read as the fixed ``nlmsgerr`` header (the
socket asks for capped acks, ``NETLINK_CAP_ACK``), 20 bytes each.

Requests are sent in chunks so the answers always fit the receive buffer.

:func:`route_message` encodes a route request with every attribute a route can
carry here (protocol, scope, table, metric, preferred source; ``NLM_F_APPEND``
for an add, as a moved route coexists with the survivor's own) straight with
:mod:`struct`, for :meth:`NetlinkBatch.messages`: moving a failed NIC's 1,000
routes was 2,000 round trips through the async socket.

:func:`dump_routes` reads the routes of one table through one device with the
kernel doing the filtering (``NETLINK_GET_STRICT_CHK``): without it a route dump
returns every route of every table -- with 10,000 addresses, 20,000 local and
broadcast routes for pyroute2 to decode (about 0.4 s) to find the few through
one NIC.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ipshift.model import IPAddress, IPInterface, IPNetwork

NETLINK_ROUTE = 0
NETLINK_CAP_ACK = 10
SOL_NETLINK = 270
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
NLMSG_ERROR = 2
NLMSG_DONE = 3
NETLINK_GET_STRICT_CHK = 12
RTM_GETROUTE = 26
NLM_F_DUMP = 0x300
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x200, 0x400, 0x800
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 6, 7, 15
RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE = 20, 21, 24, 25
IFA_F_NODAD = 0x02
AF_INET, AF_INET6 = 2, 10
CHUNK = 1024

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_ERR = struct.Struct("=i")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA_U32 = struct.Struct("=HHI")


@dataclass(frozen=True, slots=True)
class _Template:
    data: bytes
    offsets: tuple[int, ...]  # where the varying address bytes go
    width: int

    def render(self, seq: int, value: bytes) -> bytes:
        buf = bytearray(self.data)
        struct.pack_into("=I", buf, 8, seq)
        for off in self.offsets:
            buf[off:off + self.width] = value
        return bytes(buf)


def _template(msg: object, placeholder: bytes, fixed: int) -> _Template:
    """``fixed``: the size of the message's own header; the placeholder is looked for after it."""
    msg.encode()  # type: ignore[attr-defined]
    data = bytes(msg.data)  # type: ignore[attr-defined]
    offsets = []
    start = _HDR.size + fixed
    while (i := data.find(placeholder, start)) != -1:
        offsets.append(i)
        start = i + len(placeholder)
    if not offsets:
        raise AssertionError("template placeholder not found in the encoded message")
    return _Template(data, tuple(offsets), len(placeholder))


def address_template(add: bool, index: int, iface: IPInterface) -> _Template:
    m = ifaddrmsg()
    v4 = iface.version == 4
    m["family"] = AF_INET if v4 else AF_INET6
    m["prefixlen"] = iface.network.prefixlen
    m["index"] = index
    m["flags"] = 0 if v4 or not add else IFA_F_NODAD
    ip = str(iface.ip)
    m["attrs"] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)] if v4 else [("IFA_ADDRESS", ip)]
    if not v4 and add:
        m["attrs"].append(("IFA_FLAGS", IFA_F_NODAD))
    m["header"]["type"] = RTM_NEWADDR if add else RTM_DELADDR
    m["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if add else 0)
    m["header"]["sequence_number"] = 0
    return _template(m, iface.ip.packed, 8)


def route_template(add: bool, index: int, dst: IPNetwork, via: IPAddress | None, metric: int | None) -> _Template:
    r = rtmsg()
    r["family"] = AF_INET if dst.version == 4 else AF_INET6
    r["dst_len"] = dst.prefixlen
    r["table"] = 254
    r["proto"] = 4  # static
    r["scope"] = 0
    r["type"] = 1  # unicast
    attrs: list[tuple[str, object]] = [("RTA_DST", str(dst.network_address)), ("RTA_OIF", index)]
    if via is not None:
        attrs.append(("RTA_GATEWAY", str(via)))
    if metric is not None:
        attrs.append(("RTA_PRIORITY", metric))
    r["attrs"] = attrs
    r["header"]["type"] = RTM_NEWROUTE if add else RTM_DELROUTE
    r["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if add else 0)
    r["header"]["sequence_number"] = 0
    return _template(r, dst.network_address.packed, 12)


def _rta(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * ((-length) % 4)


def route_message(add: bool, dst: IPNetwork, oif: int, *, table: int, proto: int, scope: int,
                  gateway: IPAddress | None, metric: int | None, src: IPAddress | None) -> bytes:
    """An ``RTM_NEWROUTE`` with ``NLM_F_APPEND`` (``add``) or an ``RTM_DELROUTE`` of one unicast route,
    with every attribute given; the sequence number is set when sent (:meth:`NetlinkBatch.messages`)."""
    family = AF_INET if dst.version == 4 else AF_INET6
    body = _RTMSG.pack(family, dst.prefixlen, 0, 0, table if table < 256 else 252, proto, scope, 1, 0)
    body += _RTA_U32.pack(8, RTA_TABLE, table)
    if dst.prefixlen:
        body += _rta(RTA_DST, dst.network_address.packed)
    body += _RTA_U32.pack(8, RTA_OIF, oif)
    if gateway is not None:
        body += _rta(RTA_GATEWAY, gateway.packed)
    if metric is not None:
        body += _RTA_U32.pack(8, RTA_PRIORITY, metric)
    if src is not None:
        body += _rta(RTA_PREFSRC, src.packed)
    flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_APPEND if add else 0)
    return _HDR.pack(_HDR.size + len(body), RTM_NEWROUTE if add else RTM_DELROUTE, flags, 0, 0) + body


class NetlinkBatch:
    """A NETLINK_ROUTE socket for bulk requests (blocking; each call returns within the kernel's work)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, force, 8 << 20)
            except OSError:  # without CAP_NET_ADMIN: as much as net.core.[rw]mem_max allows
                self.sock.setsockopt(socket.SOL_SOCKET, plain, 8 << 20)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        except OSError:
            pass
        self.sock.bind((0, 0))
        self.sock.settimeout(5.0)
        self._seq = 1

    def close(self) -> None:
        self.sock.close()

    def run(self, requests: Sequence[tuple[_Template, bytes]]) -> list[int]:
        """Send every (template, value) request; the errno of each (0: done), in order."""
        results = [0] * len(requests)
        for start in range(0, len(requests), CHUNK):
            chunk = requests[start:start + CHUNK]
            base = self._seq
            self._seq += len(chunk)
            payload = b"".join(t.render(base + i, v) for i, (t, v) in enumerate(chunk))
            self.sock.send(payload)
            pending = len(chunk)
            while pending:
                data = self.sock.recv(1 << 20)
                off = 0
                while off + _HDR.size <= len(data):
                    length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, off)
                    if length < _HDR.size:
                        break
                    if mtype == NLMSG_ERROR and base <= seq < base + len(chunk):
                        (err,) = _ERR.unpack_from(data, off + _HDR.size)
                        results[start + seq - base] = -err
                        pending -= 1
                    off += (length + 3) & ~3
        return results

    def messages(self, msgs: Sequence[bytes]) -> list[int]:
        """Send requests encoded already (:func:`route_message`); errno per request."""
        return self.run([(_Template(m, (), 0), b"") for m in msgs])

    def addresses(self, add: bool, items: Iterable[tuple[int, IPInterface]]) -> list[int]:
        """Add (or delete) each (ifindex, address/prefix); errno per item."""
        cache: dict[tuple[int, int, int], _Template] = {}
        reqs: list[tuple[_Template, bytes]] = []
        for index, iface in items:
            key = (index, iface.version, iface.network.prefixlen)
            t = cache.get(key)
            if t is None:
                t = cache[key] = address_template(add, index, iface)
            reqs.append((t, iface.ip.packed))
        return self.run(reqs)

    def routes(self, add: bool, items: Iterable[tuple[int, IPNetwork, IPAddress | None, int | None]]) -> list[int]:
        """Add (or delete) each (ifindex, destination, gateway, metric) route of the main table."""
        cache: dict[tuple[int, int, int, IPAddress | None, int | None], _Template] = {}
        reqs: list[tuple[_Template, bytes]] = []
        for index, dst, via, metric in items:
            key = (index, dst.version, dst.prefixlen, via, metric)
            t = cache.get(key)
            if t is None:
                t = cache[key] = route_template(add, index, dst, via, metric)
            reqs.append((t, dst.network_address.packed))
        return self.run(reqs)


def dump_routes(family: int, table: int, oif: int | None) -> list[Any]:
    """The ``RTM_NEWROUTE`` messages (decoded by pyroute2) of ``table`` through device ``oif``
    (None: any device).

    The kernel filters when it supports strict checking (Linux 4.20 and later); an older one
    sends every route, which the caller filters anyway (``routes_from_msg`` keeps one table,
    the caller one device). Blocking, on a socket of its own in the caller's namespace.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        except OSError:
            pass
        sock.bind((0, 0))
        sock.settimeout(5.0)
        req = rtmsg()
        req["header"]["type"] = RTM_GETROUTE
        req["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        req["header"]["seq"] = 1
        req["family"] = family
        req["table"] = table if table < 256 else 0
        req["attrs"] = ([["RTA_OIF", oif]] if oif else []) + ([["RTA_TABLE", table]] if table >= 256 else [])
        req.encode()
        sock.send(bytes(req.data))
        marshal = MarshalRtnl()
        found: list[Any] = []
        while True:
            data = sock.recv(1 << 16)
            off = 0
            done = False
            while off + _HDR.size <= len(data):
                length, mtype, _flags, _seq, _pid = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    break
                if mtype == NLMSG_DONE:
                    done = True
                elif mtype == NLMSG_ERROR:
                    (err,) = _ERR.unpack_from(data, off + _HDR.size)
                    if err:
                        raise OSError(-err, f"route dump: {os.strerror(-err)}")
                off += (length + 3) & ~3
            found.extend(m for m in marshal.parse(data) if m["header"]["type"] == RTM_NEWROUTE)
            if done:
                return found
    finally:
        sock.close()
