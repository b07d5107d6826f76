#!/usr/bin/env python3
"""How fast does a carrier loss reach the daemon? The netlink monitor's latency, measured.

Theory of operation
-------------------
The script builds a namespace lab (``ipshift.lab.Lab``, prefix
``unique_prefix("ipsm")``) and, for each monitor implementation, starts a
child process (this script with ``--child``) that enters the lab's gateway
namespace, opens the monitor and prints one JSON line per link event: the
event's ``at`` (``time.monotonic()`` when the message was read from the
socket) and ``yielded`` (``time.monotonic()`` when the consumer got it).

The parent fails the gateway's ``eth0`` ``--count`` times: it sets the
switch-side peer ``gw0`` down over a netlink socket opened beforehand in the
switch namespace, recording ``time.monotonic()`` just before the request
(``t0``) and after the kernel's acknowledgement (``t1``). CLOCK_MONOTONIC is
system-wide, so the child's readings are comparable. The veth driver then
drops the carrier of ``eth0``; its ifindex differs from its peer's, so the
kernel's linkwatch treats the change as urgent and sends the ``RTM_NEWLINK``
from a workqueue at once (asynchronously: it may come before or after the
acknowledgement). After each loss the link is restored and the script waits
for the carrier to be back and lets things settle.

Triggers (``--trigger``):

* ``iproute``: ``IPRoute(netns=switch, flags=0).link("set", index=..., state="down")``,
  pyroute2's synchronous API (its own asyncio round trip is part of
  ``t0 .. t1``);
* ``raw``: the same request, encoded once by pyroute2 beforehand, written
  with one ``send`` on a plain netlink socket of the switch namespace; ``t0``
  is then within microseconds of the kernel starting to apply it.

Implementations (``--impl``, default all):

* ``monitor``: :class:`ipshift.kernel.monitor.KernelMonitor` (own non-blocking
  socket, ``recv`` on demand, ``loop.add_reader`` when empty, pyroute2
  decoding);
* ``sock_recv``: the same socket read with ``await loop.sock_recv(...)``;
* ``asynciproute``: pyroute2's ``AsyncIPRoute`` (``await ipr.bind(groups=...)``,
  ``async for msg in ipr.get()``), the messages converted by the same
  :class:`~ipshift.kernel.monitor.EventDecoder`.

Output: per implementation the median and p95, in ms, of

* ``yield-t0``: ``yielded - t0``, the whole path (request to event in hand);
* ``read-t0``: ``at - t0``, until the datagram was read from the socket (for
  ``asynciproute`` the moment pyroute2's transport queued it);
* ``yield-read``: ``yielded - at``, the part in the monitor's process after
  the read: pyroute2's decoding, the conversion, the hand-off to the consumer;
* ``yield-t1``: ``yielded - t1``, from the acknowledgement (can be negative:
  the notification may beat the acknowledgement);
* ``ack``: ``t1 - t0``, the request itself.

``rtnl_lock`` is global: other processes creating or deleting namespaces or
links (other test runs) delay both the request and the kernel's linkwatch
work by up to hundreds of ms, which shows in every column but ``yield-read``.
Run on a quiet machine, and use ``--rounds`` to interleave the
implementations so that a noisy period hurts them alike.
Run as root: ``.venv/bin/python bench/monitor_latency.py [--count 50]``. The
lab is deleted at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any

IMPLS = ("monitor", "sock_recv", "asynciproute")
IFF_UP = 0x1
EVENT_TIMEOUT = 5.0


# ----------------------------------------------------------------- the child


async def _events_sock_recv(ready: Callable[[], None]) -> AsyncIterator[Any]:
    """The KernelMonitor socket, read with loop.sock_recv (one future per datagram)."""
    from ipshift.kernel.monitor import DEFAULT_GROUPS, DEFAULT_RCVBUF, RECV_SIZE, EventDecoder, _open_socket

    loop = asyncio.get_running_loop()
    sock = _open_socket(DEFAULT_GROUPS, DEFAULT_RCVBUF)
    decoder = EventDecoder({index: name for index, name in socket.if_nameindex()})
    ready()
    try:
        while True:
            data = await loop.sock_recv(sock, RECV_SIZE)
            at = time.monotonic()
            for event in decoder.decode(data, at):
                yield event
    finally:
        sock.close()


async def _events_asynciproute(ready: Callable[[], None]) -> AsyncIterator[Any]:
    """pyroute2's AsyncIPRoute as the transport, the same conversion."""
    from pyroute2 import AsyncIPRoute

    from ipshift.kernel.monitor import DEFAULT_GROUPS, DEFAULT_RCVBUF, SO_RCVBUFFORCE, EventDecoder

    decoder = EventDecoder()
    # When each datagram was read: pyroute2's transport reads eagerly and
    # queues the data (enqueue), so the read happens before get() sees it.
    read_times: deque[float] = deque()
    async with AsyncIPRoute(rcvbuf=DEFAULT_RCVBUF) as ipr:
        enqueue = ipr.enqueue

        def timed_enqueue(data: bytes, addr: Any) -> Any:
            read_times.append(time.monotonic())
            return enqueue(data, addr)

        ipr.enqueue = timed_enqueue  # before bind(): the protocol takes it when the endpoint is set up
        await ipr.bind(groups=DEFAULT_GROUPS)
        ipr.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, DEFAULT_RCVBUF)
        decoder.learn_links([msg async for msg in await ipr.link("dump")])
        read_times.clear()
        ready()
        while True:
            at: float | None = None
            async for msg in ipr.get():  # the messages of one datagram
                if at is None:
                    at = read_times.popleft() if read_times else time.monotonic()
                event = decoder.convert(msg, at)
                if event is not None:
                    yield event


async def _child_main(impl: str) -> None:
    from ipshift.events import LinkEvent
    from ipshift.kernel.monitor import KernelMonitor

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def consume(events: AsyncIterator[Any]) -> None:
        async for event in events:
            yielded = time.monotonic()
            if isinstance(event, LinkEvent):
                emit({"name": event.name, "carrier": event.carrier, "at": event.at, "yielded": yielded})
            else:
                emit({"other": type(event).__name__, "at": event.at, "yielded": yielded})

    if impl == "monitor":
        async with KernelMonitor() as monitor:
            emit({"ready": impl})
            await consume(monitor.events())
    elif impl == "sock_recv":
        await consume(_events_sock_recv(lambda: emit({"ready": impl})))
    elif impl == "asynciproute":
        await consume(_events_asynciproute(lambda: emit({"ready": impl})))
    else:
        raise SystemExit(f"unknown implementation {impl!r}")


def child(impl: str, netns: str) -> None:
    from ipshift.kernel.netns import enter_netns

    enter_netns(netns)
    def end_on_eof() -> None:  # the parent closing our stdin (or dying) ends us
        sys.stdin.read()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=end_on_eof, daemon=True).start()
    asyncio.run(_child_main(impl))


# ---------------------------------------------------------------- the parent


@dataclass
class Sample:
    t0: float
    t1: float
    at: float
    yielded: float


class Child:
    """A monitor child process and a thread that turns its stdout into a queue of dicts."""

    def __init__(self, impl: str, netns: str) -> None:
        self.impl = impl
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", impl, netns],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.put(json.loads(line))

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = EVENT_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.impl}: no matching event within {timeout} s")
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if pred(item):
                return item

    def drain(self) -> None:
        while True:
            try:
                self.lines.get_nowait()
            except queue.Empty:
                return

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # by PID: it is ours
            self.proc.wait(timeout=2)


class RawTrigger:
    """``ip link set PEER up|down`` as one pre-encoded netlink request on a socket in the switch namespace."""

    def __init__(self, netns: str, index: int) -> None:
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_NEWLINK
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        from ipshift.kernel.netns import call_in_netns

        self.sock = call_in_netns(
            netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        )
        self.sock.bind((0, 0))
        self.marshal = MarshalRtnl()
        self.requests: dict[bool, bytes] = {}
        for up in (False, True):
            msg = ifinfmsg()
            msg["index"] = index
            msg["flags"] = IFF_UP if up else 0
            msg["change"] = IFF_UP
            msg["header"]["type"] = RTM_NEWLINK
            msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
            msg["header"]["sequence_number"] = 1 + int(up)
            msg.encode()
            self.requests[up] = bytes(msg.data)

    def set(self, up: bool) -> None:
        self.sock.send(self.requests[up])
        ack = self.sock.recv(65536)
        for msg in self.marshal.parse(ack):
            if msg["header"].get("error") is not None:
                raise msg["header"]["error"]

    def close(self) -> None:
        self.sock.close()


def run_impl(impl: str, lab: Any, count: int, trigger_kind: str) -> list[Sample]:
    from pyroute2 import IPRoute

    index = lab.peer_ifindex_of("eth0")
    ipr = IPRoute(netns=lab.switch, flags=0)
    raw = RawTrigger(lab.switch, index) if trigger_kind == "raw" else None

    def set_link(up: bool) -> None:
        if raw is not None:
            raw.set(up)
        else:
            ipr.link("set", index=index, state="up" if up else "down")

    child = Child(impl, lab.gateway)
    samples: list[Sample] = []
    try:
        child.wait_for(lambda d: "ready" in d, timeout=10)
        for i in range(count + 1):  # the first round warms up and is not counted
            child.drain()
            t0 = time.monotonic()
            set_link(False)
            t1 = time.monotonic()
            ev = child.wait_for(lambda d: d.get("name") == "eth0" and d.get("carrier") is False)
            if i > 0:
                samples.append(Sample(t0, t1, float(ev["at"]), float(ev["yielded"])))
            set_link(True)
            child.wait_for(lambda d: d.get("name") == "eth0" and d.get("carrier") is True)
            time.sleep(0.05)
        # the link really went down each time (not just "some event"): check the state
        if not any(m.get("operstate") == "UP" for m in ipr.get_links(index)):
            raise RuntimeError("gw0 did not come back up")
    finally:
        child.stop()
        ipr.close()
        if raw is not None:
            raw.close()
    return samples


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def report(impl: str, samples: list[Sample]) -> dict[str, float]:
    ms = 1000.0
    cols = {
        "yield-t0": [(s.yielded - s.t0) * ms for s in samples],
        "read-t0": [(s.at - s.t0) * ms for s in samples],
        "yield-read": [(s.yielded - s.at) * ms for s in samples],
        "yield-t1": [(s.yielded - s.t1) * ms for s in samples],
        "ack": [(s.t1 - s.t0) * ms for s in samples],
    }
    out: dict[str, float] = {}
    parts = []
    for name, values in cols.items():
        med, p95 = statistics.median(values), pct(values, 95)
        out[f"{name}_median"], out[f"{name}_p95"] = med, p95
        parts.append(f"{name} {med:.3f}/{p95:.3f}")
    print(f"{impl:>12} n={len(samples)} median/p95 ms: " + "  ".join(parts), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=50, help="carrier losses per implementation (default 50)")
    parser.add_argument("--impl", action="append", choices=IMPLS, help="implementation(s) to measure (default: all)")
    parser.add_argument("--trigger", choices=("iproute", "raw"), default="iproute")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the set of implementations (interleaved)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "NETNS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if not 1 <= args.count <= 1000:
        parser.error("--count must be between 1 and 1000")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")

    from ipshift.lab import Lab, unique_prefix

    impls = args.impl or list(IMPLS)
    lab = Lab(unique_prefix("ipsm"), nics=2)
    results: dict[str, dict[str, float]] = {}
    owner = os.getpid()

    def on_sigterm(signum: int, frame: Any) -> None:
        # pyroute2's IPRoute(netns=...) forks a helper and ends it with SIGTERM;
        # the fork inherits this handler, and SystemExit there would run the
        # finally below, deleting the lab from under us.
        if os.getpid() != owner:
            os._exit(0)
        sys.exit(143)  # run the finally below

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        lab.create()
        print(f"lab {lab.prefix}: trigger {args.trigger}, {args.count} carrier losses per implementation", flush=True)
        collected: dict[str, list[Sample]] = {impl: [] for impl in impls}
        for _ in range(args.rounds):
            for impl in impls:
                collected[impl].extend(run_impl(impl, lab, args.count, args.trigger))
        for impl in impls:
            results[impl] = report(impl, collected[impl])
    finally:
        lab.destroy()
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps({"trigger": args.trigger, "count": args.count, "rounds": args.rounds, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
