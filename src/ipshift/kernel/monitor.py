"""The netlink monitor: link and address notifications as :mod:`ipshift.events`.

Theory of operation
-------------------
One ``AF_NETLINK``/``NETLINK_ROUTE`` socket, non-blocking, bound to the
multicast groups ``RTMGRP_LINK``, ``RTMGRP_IPV4_IFADDR`` and
``RTMGRP_IPV6_IFADDR`` with a large receive buffer (4 MiB through
``SO_RCVBUFFORCE`` as root, else ``SO_RCVBUF`` up to ``rmem_max``). The
asyncio side is ours, the netlink side is pyroute2's: requests are encoded
with pyroute2's rtnetlink message classes, and every datagram goes to the
pure :class:`~ipshift.kernel.decode.EventDecoder`, which decodes it
(:class:`~pyroute2.netlink.rtnl.marshal.MarshalRtnl`) and converts the
messages with the converters of :mod:`ipshift.kernel.convert`; no netlink
message leaves the monitor.

Start-up order matters. :meth:`KernelMonitor.__aenter__` binds to the groups
*first*; the daemon reads its snapshot *after* ``__aenter__`` returns, so
every change after the snapshot's dump is in the stream (some changes are
seen twice: harmless, a notification carries a link's full state). The
monitor then dumps the links over its own socket, only to learn the
ifindex -> name map that address notifications need (``RTM_NEWADDR`` carries
an index; IPv6 ones carry no name at all); notifications that arrive during
that dump are kept and delivered afterwards, in order. The map then follows
``RTM_NEWLINK`` / ``RTM_DELLINK``.

Reading is on demand: :meth:`KernelMonitor.events` calls ``recv`` itself and
waits with ``loop.add_reader`` only when the socket is empty, so a consumer
that falls behind leaves the backlog in the kernel's buffer (bounded), not in
a Python queue. Latency is the point of this module: a carrier loss travels
kernel -> socket -> epoll wake-up -> one ``recv`` -> pyroute2 decode ->
:class:`~ipshift.events.LinkEvent`, with nothing in between (no reader task,
no queue hand-off). ``bench/monitor_latency.py`` measures it (about 1 ms from
the ``ip link set ... down`` request to the event in hand, of which pyroute2's
decoding of the ~1.5 KB ``RTM_NEWLINK`` and the conversion take roughly half
on an idle process) and compares it with pyroute2's ``AsyncIPRoute``
transport: the same latency within the noise, but that transport reads
eagerly into an unbounded queue and, after an ``ENOBUFS``, refuses all
further use of the object, so this module keeps its own socket.

When the kernel could not queue a notification (the buffer overran),
``recv`` fails with ``ENOBUFS``: notifications are lost. The monitor closes
the socket, opens and binds a new one (and dumps the links again), and then
yields :class:`~ipshift.events.Resync`; the daemon must re-read everything
and reconcile, as at start-up. An address notification for an index the
monitor cannot name, or a message pyroute2 cannot decode, also gives a
``Resync`` rather than a guess.

Which namespace: the socket's, fixed when it is opened. By default that is
the calling thread's (the CLI enters ``--netns`` at start); ``netns=NAME``
opens it (and every re-opened one) from a short-lived helper thread inside
``/run/netns/NAME`` (:func:`ipshift.kernel.netns.call_in_netns`).

Bridge-port notifications (``AF_BRIDGE`` family ``RTM_NEWLINK`` /
``RTM_DELLINK``, sent when a port joins or leaves a bridge) are ignored (by
the decoder): an ``AF_BRIDGE`` ``RTM_DELLINK`` does not mean that the device
is gone.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_GETLINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from ipshift.events import KernelEvent, Resync
from ipshift.kernel.decode import AF_UNSPEC, EventDecoder
from ipshift.kernel.netns import call_in_netns

__all__ = [
    "DEFAULT_GROUPS",
    "DEFAULT_RCVBUF",
    "EventDecoder",
    "KernelMonitor",
    "MonitorError",
]

log = logging.getLogger(__name__)

DEFAULT_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
DEFAULT_RCVBUF = 4 * 1024 * 1024
# A netlink datagram is at most 32 KiB (a dump part); notifications are one
# message of at most a page or two. A shorter buffer would truncate silently.
RECV_SIZE = 64 * 1024
# Consecutive overruns while (re-)opening before giving up.
MAX_OPEN_ATTEMPTS = 5

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


class MonitorError(RuntimeError):
    """The monitor was used wrongly (not opened, read twice at once) or could not open."""


# ------------------------------------------------------------------- monitor


def _open_socket(groups: int, rcvbuf: int) -> socket.socket:
    """A bound, non-blocking NETLINK_ROUTE socket in the calling thread's namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:  # not CAP_NET_ADMIN: capped by net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, groups))  # port id 0: the kernel picks one
    except BaseException:
        sock.close()
        raise
    return sock


class KernelMonitor:
    """Link and address notifications of one network namespace, as events.

    Use::

        async with KernelMonitor() as monitor:
            snapshot = read_snapshot()      # after __aenter__: nothing is missed
            async for event in monitor:     # or monitor.events()
                ...

    Parameters:
        netns: open the socket in ``/run/netns/NAME`` (None: the calling
            thread's namespace).
        rcvbuf: the socket's receive buffer in bytes (the kernel doubles it
            and enforces a minimum of a few KiB); tests make it tiny to
            provoke an overrun.
        groups: the ``RTMGRP_*`` multicast groups (default: links, IPv4 and
            IPv6 addresses).
        clock: the clock for the events' ``at`` (default ``time.monotonic``).

    One consumer at a time may iterate; iteration ends when the monitor is
    closed. ``resyncs`` counts the overruns recovered from.
    """

    def __init__(
        self,
        *,
        netns: str | None = None,
        rcvbuf: int = DEFAULT_RCVBUF,
        groups: int = DEFAULT_GROUPS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netns = netns
        self.rcvbuf = rcvbuf
        self.groups = groups
        self._clock = clock
        self._sock: socket.socket | None = None
        self._portid = 0
        self._decoder = EventDecoder()
        self._backlog: deque[tuple[list[Any], float]] = deque()  # notifications read during a dump
        self._seq = itertools.count(1)
        self._waiter: asyncio.Future[None] | None = None
        self.resyncs = 0

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> KernelMonitor:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def open(self) -> None:
        """Bind to the groups, then learn the link names (see the module docstring)."""
        if self._sock is not None:
            raise MonitorError("the monitor is already open")
        await self._open()

    def close(self) -> None:
        """Close the socket; a consumer waiting in :meth:`events` sees the iteration end. Idempotent."""
        sock, self._sock = self._sock, None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if sock is not None:
            if waiter is not None:
                waiter.get_loop().remove_reader(sock.fileno())
            sock.close()
        self._backlog.clear()

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    @property
    def ifnames(self) -> Mapping[int, str]:
        """The ifindex -> name map as the monitor knows it."""
        return self._decoder.ifnames

    @property
    def buffer_size(self) -> int:
        """The receive buffer the kernel granted (``SO_RCVBUF`` as read back)."""
        if self._sock is None:
            raise MonitorError("the monitor is not open")
        return int(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    async def _open(self) -> None:
        for attempt in range(1, MAX_OPEN_ATTEMPTS + 1):
            if self.netns is None:
                sock = _open_socket(self.groups, self.rcvbuf)
            else:
                groups, rcvbuf = self.groups, self.rcvbuf
                sock = call_in_netns(self.netns, lambda: _open_socket(groups, rcvbuf))
            self._sock = sock
            self._portid = int(sock.getsockname()[0])
            self._backlog.clear()
            try:
                await self._learn_links()
                return
            except OSError as exc:
                self.close()
                if exc.errno != errno.ENOBUFS or attempt == MAX_OPEN_ATTEMPTS:
                    raise
                log.warning("netlink overrun while dumping links (attempt %d), re-opening", attempt)
            except BaseException:
                self.close()
                raise

    async def _learn_links(self) -> None:
        """Dump the links over our socket; keep the notifications that arrive meanwhile."""
        sock = self._sock
        assert sock is not None
        seq = next(self._seq)
        request = ifinfmsg()
        request["family"] = AF_UNSPEC
        request["header"]["type"] = RTM_GETLINK
        request["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        request["header"]["sequence_number"] = seq
        request["header"]["pid"] = self._portid
        request.encode()
        sock.send(request.data)
        names: dict[int, str] = {}
        dumped = EventDecoder(names)
        while True:
            data = await self._recv()
            at = self._clock()
            msgs = self._decoder.parse(data)
            if not msgs:
                continue
            first = msgs[0]["header"]
            if first.get("sequence_number") != seq or first.get("pid") != self._portid:
                self._backlog.append((msgs, at))  # a notification
                continue
            for msg in msgs:
                if msg["header"]["type"] == NLMSG_ERROR or msg["header"].get("error") is not None:
                    raise MonitorError(f"link dump failed: {msg['header'].get('error')}")
                if msg["header"]["type"] == NLMSG_DONE:
                    self._decoder.ifnames.clear()
                    self._decoder.ifnames.update(dumped.ifnames)
                    return
            dumped.learn_links(msgs)

    # -------------------------------------------------------------- reading

    async def _recv(self) -> bytes:
        """One datagram; waits (``add_reader``) only when the socket is empty."""
        while True:
            sock = self._sock
            if sock is None:
                raise MonitorError("the monitor is closed")
            try:
                return sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                pass
            if self._waiter is not None:
                raise MonitorError("the monitor is already being read (one consumer at a time)")
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            fd = sock.fileno()
            loop.add_reader(fd, _wake, waiter)
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:  # else close() has removed the reader
                    self._waiter = None
                    loop.remove_reader(fd)

    def __aiter__(self) -> AsyncIterator[KernelEvent]:
        return self.events()

    async def events(self) -> AsyncIterator[KernelEvent]:
        """The events, as they happen; ends when the monitor is closed."""
        if self._sock is None:
            raise MonitorError("the monitor is not open: use `async with KernelMonitor() as monitor`")
        while True:
            while self._backlog:
                msgs, at = self._backlog.popleft()
                for event in self._decoder.convert_all(msgs, at):
                    yield event
                    if self._sock is None:
                        return
            if self._sock is None:
                return
            try:
                data = await self._recv()
            except MonitorError:
                if self._sock is None:  # closed while waiting
                    return
                raise
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                at = self._clock()
                log.warning("netlink receive buffer overrun: re-opening the socket, resync")
                self.close()
                await self._open()
                self.resyncs += 1
                yield Resync("netlink receive buffer overrun (ENOBUFS): notifications lost", at)
                continue
            at = self._clock()
            for event in self._decoder.decode(data, at):
                yield event
                if self._sock is None:  # closed by the consumer meanwhile
                    return


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
