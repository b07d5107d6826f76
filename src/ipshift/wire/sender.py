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
  (if any; the programs are in :mod:`ipshift.wire.bpf`) and
  ``PACKET_IGNORE_OUTGOING``, and only then is bound to
  ``(ifname, protocol)``: the kernel starts delivering at bind time, so no
  frame from another interface or of another kind is ever queued. Frames we
  send ourselves are dropped (``PACKET_IGNORE_OUTGOING``, and ``recv`` drops
  ``PACKET_OUTGOING`` on kernels without it).
* Every socket is non-blocking (``SOCK_NONBLOCK``): :meth:`FrameSocket.recv`
  waits with ``select``; :meth:`FrameSocket.arecv` waits with
  ``loop.add_reader`` so the asyncio event loop never blocks.
* Multicast: the NIC's hardware filter drops groups nobody joined.
  :meth:`FrameSocket.add_multicast` joins a group for the socket's lifetime
  (``PACKET_ADD_MEMBERSHIP``); the kernel leaves the group when the socket
  closes. veth has no hardware filter, so on veth everything arrives either
  way.

On top of the socket sits :func:`announce` (N copies of a frame at a fixed
interval, the first one at once). The conflict probes
(:func:`probe_conflict_v4`, :func:`probe_conflict_v6`,
:func:`probe_conflicts_many`) live in :mod:`ipshift.wire.conflict` and the
BPF programs in :mod:`ipshift.wire.bpf` (re-exported here).

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
import select
import socket
import struct
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Self

from ipshift.wire.arp import ETH_P_ARP, ETH_P_IPV6, mac_to_bytes
from ipshift.wire.bpf import BpfInsn, arp_filter, ndp_filter, pack_bpf


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
]

ETH_P_NONE: Final = 0  # send-only: nothing is delivered to the socket
ETH_P_ALL: Final = 0x0003

# <linux/if_packet.h>, <asm-generic/socket.h>
SOL_PACKET: Final = 263
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_MR_MULTICAST: Final = 0
PACKET_MR_PROMISC: Final = 1
PACKET_MR_ALLMULTI: Final = 2
PACKET_IGNORE_OUTGOING: Final = 23
PACKET_OUTGOING: Final = 4
SO_ATTACH_FILTER: Final = 26

MAX_FRAME: Final = 65536
# recv_nowait gives up after this many of our own outgoing frames in a row
_MAX_SKIPPED: Final = 1024

_PACKET_MREQ = struct.Struct("iHH8s")  # mr_ifindex, mr_type, mr_alen, mr_address
_SOCK_FPROG = struct.Struct("HP")  # len, pointer to the instructions


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
