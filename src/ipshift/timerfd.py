"""A precise one-shot timer on the event loop: a timerfd armed at an absolute monotonic instant.

Theory of operation
-------------------
asyncio's own timers wake the loop through ``epoll_wait``'s timeout, which
Python rounds *up* to whole milliseconds: a ``loop.call_at`` fires up to
1 ms late (0.55 ms median measured on the lab machine). At a 2 ms probe
interval that is a quarter of the schedule, and it is added to every
detection. A timerfd is a kernel hrtimer behind a descriptor: the kernel makes
it readable at the armed instant (tens of microseconds late), and the loop,
which watches it with ``add_reader``, wakes right then.

:class:`PreciseTimer` owns one timerfd (opened on first use, not in the
constructor) armed at an absolute ``time.monotonic()`` instant -- the loop's
clock is ``CLOCK_MONOTONIC`` too, so no conversion is needed. It fires its
callback once per arming. The caller re-arms it, and that is how a schedule
stays absolute and never bursts: it computes the next instant itself with
:func:`next_due` (the next slot of its grid still ahead; the slots the loop
slept through are skipped). Re-arming replaces the old instant;
:meth:`cancel` disarms; :meth:`close` removes the reader and closes the
descriptor. An instant in the past fires at once (on the next turn of the
loop).

Where the C library offers no timerfd (ctypes cannot find the functions), the
timer falls back to ``loop.call_at`` with the same interface and the old
millisecond granularity.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
from collections.abc import Callable
from typing import Final

__all__ = ["PreciseTimer", "next_due", "precise"]

CLOCK_MONOTONIC: Final = 1
TFD_TIMER_ABSTIME: Final = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _load() -> tuple[Callable[..., int], Callable[..., int]] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
    settime.restype = ctypes.c_int
    return create, settime


_FUNCS = _load()


def next_due(due: float, now: float, interval: float) -> float:
    """The next slot after the one due at ``due`` was started at ``now`` (pure): the next
    slot of the grid ``due + k x interval`` that is still ahead; the slots the loop slept through
    are skipped, never caught up in a burst."""
    nxt = due + interval
    if nxt <= now:
        nxt += interval * (int((now - nxt) / interval) + 1)
        if nxt <= now:  # rounding of a float just short of a slot
            nxt += interval
    return nxt


def precise() -> bool:
    """Whether timers are timerfds here (else they are ``loop.call_at``)."""
    return _FUNCS is not None


class PreciseTimer:
    """Call ``callback()`` at the instant given to :meth:`at` (see the module docstring)."""

    __slots__ = ("_callback", "_fd", "_loop", "_handle", "_spec", "armed")

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None  # the fallback
        self._spec = _Itimerspec()
        self.armed = False

    def at(self, when: float) -> None:
        """Fire at monotonic instant ``when`` (replacing any earlier arming)."""
        self.armed = True
        if _FUNCS is None:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = asyncio.get_running_loop().call_at(when, self._fired)
            return
        if self._fd < 0:
            self._open()
        sec = int(when)
        nsec = math.ceil((when - sec) * 1e9)  # never before ``when``
        if nsec >= 1_000_000_000:
            sec, nsec = sec + 1, nsec - 1_000_000_000
        if sec <= 0 and nsec <= 0:  # all zero would disarm: the earliest instant there is instead
            nsec = 1
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = sec, nsec
        if _FUNCS[1](self._fd, TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def cancel(self) -> None:
        """Do not fire (until armed again)."""
        self.armed = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd >= 0 and _FUNCS is not None:
            self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
            _FUNCS[1](self._fd, TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None)

    def close(self) -> None:
        self.cancel()
        if self._fd >= 0:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _open(self) -> None:
        assert _FUNCS is not None
        fd = _FUNCS[0](CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            os.read(self._fd, 8)  # the expiration count (1: one-shot); reading rearms readability
        except BlockingIOError:
            return  # re-armed or cancelled after it became readable: nothing is due
        self._fired()

    def _fired(self) -> None:
        self._handle = None
        self.armed = False
        self._callback()
