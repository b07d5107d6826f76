"""Send and receive raw Ethernet frames on one interface (the I/O edge of ``wire``).

Theory of operation: :class:`FrameSocket` wraps an ``AF_PACKET``/``SOCK_RAW``
socket bound to a single interface. Frames are complete Ethernet frames built
by the pure modules ``ipshift.wire.arp`` and ``ipshift.wire.ndp``; the kernel
hands them to the driver as they are (no ARP/ND state, no routing), so this
works on an interface that holds no address yet, which is exactly the state
of the surviving NIC in the middle of a failover.

* A socket opened with the default protocol ``ETH_P_NONE`` (0) is send-only:
  the kernel never queues received frames on it, so the daemon can keep one
  open per NIC for announcements without it filling up.
* A receiving socket is created with protocol 0, gets its classic-BPF filter
  (if any) and ``PACKET_IGNORE_OUTGOING``, and only then is bound to
  ``(ifname, protocol)``: the kernel starts delivering at bind time, so no
  frame from another interface or of another kind is ever queued. Frames we
  send ourselves are dropped (``PACKET_IGNORE_OUTGOING``, and ``recv`` drops
  ``PACKET_OUTGOING`` on kernels without it). The filters also drop frames
  that carry a VLAN tag in skb metadata: Linux shows a VLAN subinterface's
  traffic to sockets bound on the parent NIC, and an address in use on
  VLAN 10 says nothing about the untagged segment.
* Every socket is non-blocking (``SOCK_NONBLOCK``): :meth:`FrameSocket.recv`
  waits with ``select``; :meth:`FrameSocket.arecv` waits with
  ``loop.add_reader`` so the asyncio event loop never blocks.
* Multicast: the NIC's hardware filter drops groups nobody joined. DAD
  defences go to all-nodes (always joined), but another node's DAD NS goes to
  the solicited-node group of the address, which this host has not joined yet
  because it does not hold the address. :meth:`FrameSocket.add_multicast`
  joins it for the socket's lifetime (``PACKET_ADD_MEMBERSHIP``); the kernel
  leaves the group when the socket closes. veth has no hardware filter, so on
  veth everything arrives either way.

On top of the socket sit the three operations the daemon needs:
:func:`announce` (N copies of a frame at a fixed interval, the first one at
once), :func:`probe_conflict_v4` (RFC 5227 probe with a failover-sized
timeout) and :func:`probe_conflict_v6` (DAD NS). The probes open their receive
socket *before* sending so that a fast answer cannot be missed, and are
bounded by ``timeout`` whatever arrives.

Closing an AF_PACKET socket blocks the caller for an RCU grace period
(``synchronize_net()`` in the kernel's release path; 10-16 ms measured on a
2-CPU VM). Coroutines should therefore keep sockets open, or close them with
:meth:`FrameSocket.aclose` / :meth:`FrameSocket.close_in_background`, which is
what the probes do.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import select
import socket
import struct
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from types import TracebackType
from typing import Final, Self

from ipshift.wire.arp import (
    ETH_P_ARP,
    ETH_P_IPV6,
    build_arp_probe,
    conflict_from,
    mac_to_bytes,
    parse_arp,
)
from ipshift.wire.ndp import (
    build_dad_ns,
    dad_conflict_from,
    multicast_mac,
    parse_ndp,
    solicited_node,
)

__all__ = [
    "ETH_P_ALL",
    "ETH_P_ARP",
    "ETH_P_IPV6",
    "ETH_P_NONE",
    "BpfInsn",
    "FrameSocket",
    "announce",
    "arp_filter",
    "ndp_filter",
    "pack_bpf",
    "probe_conflict_v4",
    "probe_conflict_v6",
]

log = logging.getLogger(__name__)

ETH_P_NONE: Final = 0  # send-only: nothing is delivered to the socket
ETH_P_ALL: Final = 0x0003

# <linux/if_packet.h>, <asm-generic/socket.h>, <linux/filter.h>
SOL_PACKET: Final = 263
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_MR_MULTICAST: Final = 0
PACKET_MR_PROMISC: Final = 1
PACKET_MR_ALLMULTI: Final = 2
PACKET_IGNORE_OUTGOING: Final = 23
PACKET_OUTGOING: Final = 4
SO_ATTACH_FILTER: Final = 26
SKF_AD_OFF: Final = -0x1000
SKF_AD_VLAN_TAG_PRESENT: Final = 48

MAX_FRAME: Final = 65536
# recv_nowait gives up after this many of our own outgoing frames in a row
_MAX_SKIPPED: Final = 1024

_PACKET_MREQ = struct.Struct("iHH8s")  # mr_ifindex, mr_type, mr_alen, mr_address
_SOCK_FILTER = struct.Struct("HBBI")  # code, jt, jf, k
_SOCK_FPROG = struct.Struct("HP")  # len, pointer to the instructions


# --- classic BPF (pure) -------------------------------------------------------

BPF_LD_W_ABS: Final = 0x20
BPF_LD_H_ABS: Final = 0x28
BPF_LD_B_ABS: Final = 0x30
BPF_JEQ_K: Final = 0x15
BPF_JGT_K: Final = 0x25
BPF_JGE_K: Final = 0x35
BPF_RET_K: Final = 0x06
BPF_ACCEPT: Final = 0x40000  # "keep up to 256 KiB of the frame"
_VLAN_PRESENT_K: Final = (SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class BpfInsn:
    """One classic BPF instruction (``struct sock_filter``)."""

    code: int
    jt: int
    jf: int
    k: int


def arp_filter() -> tuple[BpfInsn, ...]:
    """Accept untagged ARP frames only (``tcpdump -dd 'not vlan and arp'``, by hand)."""
    return (
        BpfInsn(BPF_LD_W_ABS, 0, 0, _VLAN_PRESENT_K),  # 0: A = skb has a VLAN tag
        BpfInsn(BPF_JEQ_K, 0, 3, 0),  # 1: tagged -> 5
        BpfInsn(BPF_LD_H_ABS, 0, 0, 12),  # 2: A = ethertype
        BpfInsn(BPF_JEQ_K, 0, 1, ETH_P_ARP),  # 3: not ARP -> 5
        BpfInsn(BPF_RET_K, 0, 0, BPF_ACCEPT),  # 4: accept
        BpfInsn(BPF_RET_K, 0, 0, 0),  # 5: drop
    )


def ndp_filter() -> tuple[BpfInsn, ...]:
    """Accept untagged IPv6 ICMPv6 NS/NA without extension headers."""
    return (
        BpfInsn(BPF_LD_W_ABS, 0, 0, _VLAN_PRESENT_K),  # 0: A = skb has a VLAN tag
        BpfInsn(BPF_JEQ_K, 0, 8, 0),  # 1: tagged -> 10
        BpfInsn(BPF_LD_H_ABS, 0, 0, 12),  # 2: A = ethertype
        BpfInsn(BPF_JEQ_K, 0, 6, ETH_P_IPV6),  # 3: not IPv6 -> 10
        BpfInsn(BPF_LD_B_ABS, 0, 0, 14 + 6),  # 4: A = next header
        BpfInsn(BPF_JEQ_K, 0, 4, 58),  # 5: not ICMPv6 -> 10
        BpfInsn(BPF_LD_B_ABS, 0, 0, 14 + 40),  # 6: A = ICMPv6 type
        BpfInsn(BPF_JGE_K, 0, 2, 135),  # 7: below NS -> 10
        BpfInsn(BPF_JGT_K, 1, 0, 136),  # 8: above NA -> 10
        BpfInsn(BPF_RET_K, 0, 0, BPF_ACCEPT),  # 9: accept
        BpfInsn(BPF_RET_K, 0, 0, 0),  # 10: drop
    )


def pack_bpf(program: Sequence[BpfInsn]) -> bytes:
    """The program as the kernel's array of ``struct sock_filter``."""
    return b"".join(_SOCK_FILTER.pack(i.code, i.jt, i.jf, i.k) for i in program)


# --- the socket ---------------------------------------------------------------


class FrameSocket:
    """A non-blocking AF_PACKET raw socket bound to one interface."""

    __slots__ = ("_sock", "ifname", "protocol")

    def __init__(self, sock: socket.socket, ifname: str, protocol: int) -> None:
        """Wrap an already bound socket; use :meth:`open`."""
        self._sock = sock
        self.ifname = ifname
        self.protocol = protocol

    @classmethod
    def open(
        cls,
        ifname: str,
        protocol: int = ETH_P_NONE,
        *,
        bpf: Sequence[BpfInsn] | None = None,
    ) -> FrameSocket:
        """Open a socket on ``ifname`` receiving ``protocol`` (0: send-only).

        Raises OSError (e.g. ENODEV for an unknown interface, EPERM without
        CAP_NET_RAW).
        """
        sock = socket.socket(
            socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0
        )
        try:
            if protocol != ETH_P_NONE:
                _ignore_outgoing(sock)
                if bpf is not None:
                    _attach_filter(sock, bpf)
            sock.bind((ifname, protocol))
        except BaseException:
            sock.close()
            raise
        return cls(sock, ifname, protocol)

    # -- plumbing --

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def closed(self) -> bool:
        return self._sock.fileno() == -1

    def close(self) -> None:
        """Close now. Blocks for an RCU grace period (about 10-16 ms measured): the
        kernel's AF_PACKET release calls ``synchronize_net()``. In a coroutine use
        :meth:`aclose`."""
        self._sock.close()

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self._sock.close)

    def close_in_background(self) -> None:
        """Start closing in the running loop's default executor and return at once.

        For the probes, whose answer should not wait for the kernel's grace
        period. Outside a running loop this is a plain :meth:`close`.
        """
        try:
            asyncio.get_running_loop().run_in_executor(None, self._sock.close)
        except RuntimeError:  # no running loop, or its executor is shut down
            self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fileno()}"
        return f"FrameSocket({self.ifname!r}, protocol=0x{self.protocol:04x}, {state})"

    # -- sending --

    def send(self, frame: bytes) -> None:
        """Hand one complete Ethernet frame to the interface.

        Raises OSError: ENETDOWN when the interface is down, ENXIO/ENODEV when
        it is gone, BlockingIOError if the socket's send buffer is full.
        """
        sent = self._sock.send(frame)
        if sent != len(frame):
            raise OSError(errno.EMSGSIZE, f"short send on {self.ifname}: {sent} of {len(frame)}")

    # -- receiving --

    def recv_nowait(self) -> bytes | None:
        """The next received frame if one is queued, else None (never waits)."""
        for _ in range(_MAX_SKIPPED):
            try:
                data, address = self._sock.recvfrom(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return None
            if address[2] != PACKET_OUTGOING:
                return data
        return None

    def recv(self, timeout: float) -> bytes | None:
        """The next received frame, waiting at most ``timeout`` seconds (blocking call)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            frame = self.recv_nowait()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            select.select([self._sock], [], [], remaining)

    async def arecv(self, timeout: float) -> bytes | None:
        """The next received frame, waiting at most ``timeout`` seconds on the event loop.

        Uses ``loop.add_reader`` on this socket's descriptor for the duration
        of the wait, so the descriptor must not be registered elsewhere.
        """
        frame = self.recv_nowait()
        if frame is not None:
            return frame
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while (remaining := deadline - loop.time()) > 0:
            if not await _readable(loop, self.fileno(), remaining):
                return None
            frame = self.recv_nowait()
            if frame is not None:
                return frame
        return None

    # -- multicast and promiscuity --

    def add_membership(self, mr_type: int, mac: str | None = None) -> None:
        """``PACKET_ADD_MEMBERSHIP`` on this interface, dropped when the socket closes."""
        address = mac_to_bytes(mac) if mac is not None else b""
        mreq = _PACKET_MREQ.pack(socket.if_nametoindex(self.ifname), mr_type, len(address), address)
        self._sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)

    def add_multicast(self, mac: str) -> None:
        """Let frames to the Ethernet group ``mac`` through the NIC's filter."""
        self.add_membership(PACKET_MR_MULTICAST, mac)

    def set_allmulti(self) -> None:
        self.add_membership(PACKET_MR_ALLMULTI)

    def set_promisc(self) -> None:
        self.add_membership(PACKET_MR_PROMISC)


def _ignore_outgoing(sock: socket.socket) -> None:
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:  # kernels before 4.20: recv_nowait filters by packet type
        pass


def _attach_filter(sock: socket.socket, program: Sequence[BpfInsn]) -> None:
    instructions = ctypes.create_string_buffer(pack_bpf(program))
    fprog = _SOCK_FPROG.pack(len(program), ctypes.addressof(instructions))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies it


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> bool:
    """Whether ``fd`` became readable within ``timeout`` seconds."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        async with asyncio.timeout(timeout):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


# --- operations ---------------------------------------------------------------


async def announce(sock: FrameSocket, frame: bytes, count: int, interval: float) -> list[float]:
    """Send ``frame`` ``count`` times, the first at once, then every ``interval`` s.

    Sends are scheduled against the start time, so the spacing does not drift.
    Returns the ``time.monotonic()`` at which each send returned.
    """
    if count < 0 or interval < 0:
        raise ValueError(f"count and interval must be >= 0, got {count} and {interval}")
    start = time.monotonic()
    sent_at: list[float] = []
    for n in range(count):
        if n:
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
        sock.send(frame)
        sent_at.append(time.monotonic())
    return sent_at


Judge = Callable[[bytes], str | None]


async def _listen(sock: FrameSocket, judge: Judge, until: float) -> str | None:
    """The first conflict ``judge`` reports before monotonic time ``until``."""
    while (remaining := until - time.monotonic()) > 0:
        frame = await sock.arecv(remaining)
        if frame is None:
            return None
        reason = judge(frame)
        if reason is not None:
            return reason
    return None


async def _probe(
    sock: FrameSocket, probe: bytes, judge: Judge, timeout: float, probes: int
) -> str | None:
    """Send ``probes`` probes spread evenly over ``timeout``, listening all along."""
    if timeout < 0 or probes < 1:
        raise ValueError(f"need timeout >= 0 and probes >= 1, got {timeout} and {probes}")
    start = time.monotonic()
    for n in range(probes):
        sock.send(probe)
        window_end = start + timeout * (n + 1) / probes
        reason = await _listen(sock, judge, window_end)
        if reason is not None:
            return reason
    return None


async def probe_conflict_v4(
    ifname: str, mac: str, ip: IPv4Address, timeout: float, *, probes: int = 1,
    own_macs: Collection[str] = (),
) -> str | None:
    """RFC 5227 probe for ``ip`` from ``mac`` on ``ifname``: who else uses it?

    Returns a one-line reason naming the other MAC, or None when nothing
    conflicting arrived within ``timeout`` seconds. ``probes`` > 1 spreads
    the probes evenly over the timeout. Frames from ``own_macs`` (this host's
    other NICs, which may still hold the address during a planned move) are
    never a conflict.
    """
    own = frozenset({mac, *own_macs})

    def judge(frame: bytes) -> str | None:
        packet = parse_arp(frame)
        return None if packet is None else conflict_from(packet, ip=ip, own_mac=own)

    sock = FrameSocket.open(ifname, ETH_P_ARP, bpf=arp_filter())
    try:
        return await _probe(sock, build_arp_probe(mac, ip), judge, timeout, probes)
    finally:
        sock.close_in_background()


async def probe_conflict_v6(
    ifname: str, mac: str, ip: IPv6Address, timeout: float, *, probes: int = 1,
    own_macs: Collection[str] = (),
) -> str | None:
    """RFC 4862 duplicate address detection for ``ip`` from ``mac`` on ``ifname``.

    Returns a one-line reason naming the other MAC, or None when nothing
    conflicting arrived within ``timeout`` seconds. ``own_macs`` as for
    :func:`probe_conflict_v4`.
    """
    own = frozenset({mac, *own_macs})

    def judge(frame: bytes) -> str | None:
        packet = parse_ndp(frame)
        return None if packet is None else dad_conflict_from(packet, ip=ip, own_mac=own)

    sock = FrameSocket.open(ifname, ETH_P_IPV6, bpf=ndp_filter())
    try:
        group = multicast_mac(solicited_node(ip))
        try:
            sock.add_multicast(group)
        except OSError as e:  # defences go to all-nodes, so DAD still mostly works
            log.warning("cannot join %s on %s, DAD may miss a concurrent prober: %s", group, ifname, e)
        return await _probe(sock, build_dad_ns(mac, ip), judge, timeout, probes)
    finally:
        sock.close_in_background()


async def probe_conflicts_many(
    ifname: str, mac: str, ips: Sequence[IPv4Address | IPv6Address], timeout: float, *,
    own_macs: Collection[str] = (),
) -> dict[IPv4Address | IPv6Address, str]:
    """:func:`probe_conflict_v4` / :func:`probe_conflict_v6` for many addresses at once: one socket
    per family, every probe sent at once, one ``timeout`` in all. The conflicts found, by address."""
    own = frozenset({mac, *own_macs})
    found: dict[IPv4Address | IPv6Address, str] = {}
    v4 = [ip for ip in ips if isinstance(ip, IPv4Address)]
    v6 = [ip for ip in ips if isinstance(ip, IPv6Address)]
    socks: list[tuple[FrameSocket, Callable[[bytes], None]]] = []
    if v4:
        wanted4 = set(v4)

        def judge4(frame: bytes) -> None:
            p = parse_arp(frame)
            if p is None:
                return
            for ip in {p.sender_ip, p.target_ip} & wanted4:
                reason = conflict_from(p, ip=ip, own_mac=own)
                if reason is not None:
                    found.setdefault(ip, reason)

        sock4 = FrameSocket.open(ifname, ETH_P_ARP, bpf=arp_filter())
        socks.append((sock4, judge4))
        for ip4 in v4:
            sock4.send(build_arp_probe(mac, ip4))
    if v6:
        wanted6 = set(v6)

        def judge6(frame: bytes) -> None:
            p = parse_ndp(frame)
            if p is None or p.target not in wanted6:
                return
            assert isinstance(p.target, IPv6Address)
            reason = dad_conflict_from(p, ip=p.target, own_mac=own)
            if reason is not None:
                found.setdefault(p.target, reason)

        sock6 = FrameSocket.open(ifname, ETH_P_IPV6, bpf=ndp_filter())
        socks.append((sock6, judge6))
        for ip6 in v6:
            sock6.send(build_dad_ns(mac, ip6))
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout

    async def listen(sock: FrameSocket, judge: Callable[[bytes], None]) -> None:
        while (left := end - loop.time()) > 0:
            frame = await sock.arecv(left)
            if frame is not None:
                judge(frame)

    try:
        await asyncio.gather(*(listen(s, j) for s, j in socks))
    finally:
        for s, _ in socks:
            s.close_in_background()
    return found
