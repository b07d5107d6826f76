"""Entering named network namespaces (the ones ``ip netns add`` makes).

Theory of operation: a named namespace is a bind mount of a namespace file
under ``/run/netns/NAME``. ``setns(2)`` on that file moves the *calling
thread* into the namespace; sockets opened afterwards, ``/proc/sys/net`` and
``/proc/thread-self/net`` then show that namespace. Two uses follow:

* :func:`enter_netns` moves the whole daemon, the way ``ip netns exec`` does
  for its child. It must run before any other thread exists, or those threads
  stay behind in the old namespace; it refuses to run otherwise. Unlike
  ``ip netns exec`` it does not remount ``/sys`` (ipshift reads nothing from
  ``/sys``: netlink and ``/proc/sys`` follow the network namespace by
  themselves) and does not bind ``/etc/netns/NAME`` files.
* :func:`call_in_netns` runs a function in a short-lived helper thread that
  enters the namespace, leaving the rest of the process where it is. It lets
  a process read another namespace's ``/proc/sys/net`` (pyroute2's
  ``IPRoute(netns=NAME)`` covers the netlink side).

``flags=0`` is passed to :func:`pyroute2.netns.setns` throughout: with its
default (``O_CREAT``) a misspelt name would silently create a namespace.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

import pyroute2.netns as _pyroute2_netns

__all__ = ["NETNS_RUN_DIR", "NetnsError", "call_in_netns", "enter_netns", "netns_path"]

NETNS_RUN_DIR = "/run/netns"

T = TypeVar("T")


class NetnsError(Exception):
    """A named network namespace cannot be entered."""


def netns_path(name: str) -> str:
    """``/run/netns/NAME``; :class:`NetnsError` for a name that is not a plain file name."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise NetnsError(f"invalid network namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def _setns(name: str) -> None:
    path = netns_path(name)
    if not os.path.exists(path):
        raise NetnsError(f"network namespace {name!r} does not exist (no {path}; see `ip netns list`)")
    try:
        _pyroute2_netns.setns(path, flags=0)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise NetnsError(f"cannot enter network namespace {name!r}: {reason}") from exc


def enter_netns(name: str) -> None:
    """Move this process into network namespace ``name`` (``/run/netns/NAME``).

    Call it at start-up, before any thread is started: ``setns(2)`` moves only
    the calling thread, so it raises :class:`NetnsError` when other Python
    threads are running, when the namespace does not exist, or when entering
    fails (e.g. without CAP_SYS_ADMIN).
    """
    netns_path(name)  # validate first: a bad name is the clearer error
    if threading.active_count() > 1:
        raise NetnsError(
            f"cannot enter network namespace {name!r}: {threading.active_count() - 1} other thread(s) "
            "already running would stay behind (enter the namespace before starting threads)"
        )
    if threading.current_thread() is not threading.main_thread():
        raise NetnsError(f"cannot enter network namespace {name!r} from a thread other than the main thread")
    _setns(name)


def call_in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Return ``fn()`` as run in namespace ``name`` (``None``: here, in this thread).

    The call happens in a helper thread that enters the namespace and ends
    afterwards, so the caller's own namespace never changes. Files ``fn`` reads
    under ``/proc/sys/net`` or ``/proc/thread-self/net`` show namespace
    ``name`` (``/proc/self/net`` does not: it follows the main thread).
    Exceptions from entering (:class:`NetnsError`) or from ``fn`` are re-raised.
    """
    if name is None:
        return fn()
    netns_path(name)  # validate before starting a thread
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            _setns(name)
            result.append(fn())
        except BaseException as exc:  # handed to the caller below
            error.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
