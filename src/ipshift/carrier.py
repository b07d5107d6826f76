"""Carrier polling (``detect.carrier_poll``): the carrier bit read every period, ahead of linkwatch.

Theory of operation
-------------------
The kernel hands a physical NIC's carrier change to *linkwatch*, which runs a
non-urgent change at most once a second: the ``RTM_NEWLINK`` that tells the
daemon of a carrier loss can come up to 1 s after the driver saw it. The
carrier bit itself is current at once: ``netif_carrier_ok`` is what the
kernel puts as ``IFF_LOWER_UP`` into ``ifinfomsg.ifi_flags`` of every
``RTM_NEWLINK`` it sends, whether notification or answer; only operstate
(``IFF_RUNNING``, ``IFLA_OPERSTATE``) and the notification wait for
linkwatch. (Bonding's ``miimon`` polls for the same reason.)

While ``detect.carrier_poll`` is set, :class:`CarrierPoll` asks for it:
every period (a :class:`~ipshift.timerfd.PreciseTimer` on an absolute
schedule, skipping slots the loop slept through) it sends one datagram over
its own ``NETLINK_ROUTE`` socket holding one ``RTM_GETLINK`` per configured
NIC that the view knows (by ifindex, statistics left out with
``RTEXT_FILTER_SKIP_STATS``). rtnetlink answers a request inside the
``send`` call, so the answers are already queued when it returns: they are
read at once (into one reused buffer), in the same wake-up, and of each only
the fixed header is decoded (:func:`parse_flags`: ifindex and flags; no
attribute is parsed). So a poll is one wake-up, one ``send`` and one
``recv`` per NIC, nothing is registered with the loop but the timer, and no
thread is involved.

What a poll finds is compared with the view (:func:`polled_link`, pure): the
link the view has with the carrier bit polled now, when that bit differs,
with the operstate the kernel will give it (``UP``, or ``DORMANT``, when the
carrier is back; ``DOWN`` when it is gone), else nothing. A difference goes
down exactly the way a kernel notification goes: as a
:class:`~ipshift.events.LinkEvent` into the daemon's ``dispatch`` (by the
task :meth:`CarrierPoll.run`, which the daemon starts; it waits, as the
monitor does, while a plan changes the kernel, and decides again against the
view right before it hands the event on). The view then holds the polled
link; :meth:`CarrierPoll.made` tells the NIC states' caller that a link came
from a poll, so that a failover record's trigger says so ("carrier lost
(polled)").

When the kernel's own notification comes later, it says what the poll said
(carrier gone, operstate down): the NIC is already down, nothing changes, no
second failover. A poll and an event that disagree for a moment (an event the
kernel made just before the change, read just after the poll) cannot make
the NIC flap for longer than one period: the next poll finds the difference
again, and a NIC whose link came back waits out ``failback.delay`` before it
takes its addresses back. A NIC that is administratively down, unknown to the
view, or answered with an error (gone: the monitor reports that) is left to
the monitor.

:meth:`CarrierPoll.configure` starts, retimes or stops polling on start-up
and on every reload; :meth:`CarrierPoll.stop` closes the socket and timer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Final

from ipshift.config import Config
from ipshift.events import KernelEvent, LinkEvent
from ipshift.model import Link
from ipshift.timerfd import PreciseTimer, next_due
from ipshift.view import KernelView

__all__ = ["CarrierPoll", "build_requests", "parse_flags", "polled_link"]

log = logging.getLogger("ipshift.carrier")

# <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if.h>, <linux/if_link.h>
NETLINK_ROUTE: Final = 0
NLMSG_ERROR: Final = 2
NLM_F_REQUEST: Final = 1
RTM_NEWLINK: Final = 16
RTM_GETLINK: Final = 18
IFLA_EXT_MASK: Final = 29
RTEXT_FILTER_SKIP_STATS: Final = 1 << 3
IFF_UP: Final = 0x1
IFF_LOWER_UP: Final = 0x10000
IFF_DORMANT: Final = 0x20000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_REQUEST = struct.Struct("=IHHII BxHiII HHI")  # nlmsghdr + ifinfomsg + IFLA_EXT_MASK attribute
_HEADERS = _NLMSGHDR.size + _IFINFOMSG.size
RECV_BUFFER: Final = 65536  # one answer (a link without its statistics: ~1-2 KB) per recv


# --------------------------------------------------------------------------- pure: encode, decode, decide


def build_requests(indexes: Iterable[int], seq: int) -> bytes:
    """One datagram: an ``RTM_GETLINK`` for each ifindex, without statistics."""
    return b"".join(_REQUEST.pack(_REQUEST.size, RTM_GETLINK, NLM_F_REQUEST, seq, 0,
                                  socket.AF_UNSPEC, 0, index, 0, 0,
                                  8, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS) for index in indexes)


def parse_flags(data: bytes | bytearray | memoryview, size: int) -> Iterator[tuple[int, int]]:
    """(ifindex, ifi_flags) of each ``RTM_NEWLINK`` in the first ``size`` bytes of ``data``; other
    messages (errors: a device that is gone) and truncated ones are skipped."""
    offset = 0
    while offset + _HEADERS <= size:
        length, kind = _NLMSGHDR.unpack_from(data, offset)[:2]
        if length < _NLMSGHDR.size or offset + length > size:
            return
        if kind == RTM_NEWLINK and length >= _HEADERS:
            _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, offset + _NLMSGHDR.size)
            yield index, flags
        offset += (length + 3) & ~3


def polled_link(known: Link, flags: int) -> Link | None:
    """``known`` (the view's link) as the polled ``flags`` show it, when its carrier differs; None when
    the carrier is what the view says, or the device is administratively down (the kernel reports
    that itself, at once)."""
    carrier = bool(flags & IFF_LOWER_UP)
    if carrier == known.carrier or not flags & IFF_UP:
        return None
    operstate = ("DORMANT" if flags & IFF_DORMANT else "UP") if carrier else "DOWN"
    return replace(known, carrier=carrier, operstate=operstate)


# --------------------------------------------------------------------------- the I/O half


class CarrierPoll:
    """Poll the configured NICs' carrier (see the module docstring); nothing happens until
    :meth:`configure` is given a configuration with ``detect.carrier_poll``."""

    def __init__(self, view: KernelView) -> None:
        self._view = view
        self.period: float | None = None
        self._nics: tuple[str, ...] = ()
        self._sock: socket.socket | None = None
        self._timer: PreciseTimer | None = None
        self._next = 0.0
        self._buf = bytearray(RECV_BUFFER)
        self._request = b""
        self._indexes: dict[int, str] = {}
        self._found: dict[str, tuple[int, float]] = {}  # nic -> (flags, when) that differ from the view
        self._wake = asyncio.Event()
        self._made: dict[str, Link] = {}  # nic -> the last link a poll handed on

    # -- lifecycle

    def configure(self, config: Config) -> None:
        """Poll as ``config`` says: start, retime, or stop."""
        period = config.detect.carrier_poll
        self._nics = tuple(config.interfaces)
        if period is None:
            if self.period is not None:
                log.info("carrier polling off")
            self.stop()
            return
        if period == self.period:
            return
        if self._sock is None:
            try:
                self._sock = _open_socket()
            except OSError as exc:
                log.error("carrier polling not possible: %s", exc)
                return
            self._timer = PreciseTimer(self._poll)
        self.period = period
        self._next = time.monotonic()
        assert self._timer is not None
        self._timer.at(self._next)
        log.info("polling the carrier of %s every %g ms", ", ".join(self._nics), period * 1000)

    def stop(self) -> None:
        self.period = None
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._found.clear()

    def made(self, link: Link | None) -> bool:
        """Whether ``link`` (as the view has it) is one a poll handed on."""
        return link is not None and self._made.get(link.name) is link

    # -- the task: polled changes into the daemon

    async def run(self, dispatch: Callable[[KernelEvent], Awaitable[None]], idle: asyncio.Event) -> None:
        """Hand what the polls find to ``dispatch``, like the monitor: not while a plan runs
        (``idle`` clear), and only what still differs from the view then."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await idle.wait()
            found, self._found = self._found, {}
            for nic, (flags, at) in found.items():
                known = self._view.link(nic)
                link = polled_link(known, flags) if known is not None else None
                if link is None:
                    continue
                log.info("%s: carrier %s (polled)", nic, "back" if link.carrier else "lost")
                self._made[nic] = link
                try:
                    await dispatch(LinkEvent(link, at))
                except Exception:  # contained: the kernel's own event still comes
                    log.exception("%s: the polled carrier change could not be handled", nic)

    # -- polling

    def _poll(self) -> None:
        sock = self._sock
        if sock is None or self.period is None:
            return
        now = time.monotonic()
        self._next = next_due(self._next, now, self.period)
        assert self._timer is not None
        self._timer.at(self._next)
        indexes = self._current_indexes()
        if not indexes:
            return
        try:
            sock.send(self._request)
        except OSError as exc:
            log.debug("carrier poll: %s", exc)
            return
        buf = self._buf
        for _ in range(len(indexes) + 8):  # the answers are queued already; bounded
            try:
                size = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ENOBUFS cannot happen to unicast answers read at once; be safe
                log.debug("carrier poll: %s", exc)
                break
            for index, flags in parse_flags(buf, size):
                nic = indexes.get(index)
                known = self._view.link(nic) if nic is not None else None
                if nic is not None and known is not None and known.index == index \
                        and polled_link(known, flags) is not None:
                    self._found[nic] = (flags, now)
        if self._found:
            self._wake.set()

    def _current_indexes(self) -> Mapping[int, str]:
        """ifindex -> NIC for the configured NICs the view knows; the request is rebuilt when it changes."""
        links = self._view.links
        known = self._indexes
        count = 0
        for nic in self._nics:
            link = links.get(nic)
            if link is not None:
                count += 1
                if known.get(link.index) != nic:
                    break
        else:
            if count == len(known):
                return known  # as at the last poll (the usual case: nothing allocated)
        self._indexes = {link.index: nic for nic in self._nics if (link := links.get(nic)) is not None}
        self._request = build_requests(list(self._indexes), 0)
        return self._indexes


def _open_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                         NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock
