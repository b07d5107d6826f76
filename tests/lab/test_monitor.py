"""The netlink monitor (ipshift.kernel.monitor) against real namespaces.

Most tests run the monitor the way the daemon does: in a child Python that
enters a lab namespace (``enter_netns``) and opens ``KernelMonitor()``. The
child prints ``{"type": "ready", ...}`` once the monitor is open, then one
JSON line per event; the test injects faults and waits (bounded) for the
events it expects. With ``hold`` the child, once ready, blocks its event loop
on a line from stdin, so that nothing reads the socket while the test floods
it. Closing the child's stdin ends it; the finalizer also ends it by PID.

A few tests run the monitor in-process with ``KernelMonitor(netns=...)``.
"""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ipshift.events import LinkEvent
from ipshift.kernel.monitor import KernelMonitor, MonitorError
from ipshift.lab import Lab, unique_prefix

EVENT_TIMEOUT = 5.0

CHILD = r"""
import asyncio, dataclasses, json, os, sys
from ipshift.kernel.netns import enter_netns
from ipshift.kernel.monitor import KernelMonitor

netns, rcvbuf, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hold"
enter_netns(netns)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def flatten(obj, out):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):  # a LinkEvent's link: its fields at the top level
            flatten(value, out)
        else:
            out[f.name] = value if isinstance(value, (bool, int, float, str)) else str(value)


async def main():
    async with KernelMonitor(rcvbuf=rcvbuf) as monitor:
        emit({"type": "ready", "rcvbuf": monitor.buffer_size,
              "ifnames": {str(k): v for k, v in monitor.ifnames.items()}})
        if hold:
            sys.stdin.readline()  # blocks the event loop: nobody reads the socket meanwhile
            emit({"type": "released"})
        loop = asyncio.get_running_loop()

        def on_stdin():
            if not os.read(0, 4096):  # EOF: the test is done with us
                loop.remove_reader(0)
                monitor.close()

        loop.add_reader(0, on_stdin)
        async for ev in monitor:
            out = {"type": type(ev).__name__}
            flatten(ev, out)
            if hasattr(ev, "link_ok"):
                out["link_ok"] = ev.link_ok
            emit(out)
    emit({"type": "closed", "resyncs": monitor.resyncs})


asyncio.run(main())
"""


class MonitorChild:
    """A child process running the monitor in a namespace; its events as dicts."""

    def __init__(self, netns: str, *, rcvbuf: int = 4 * 1024 * 1024, hold: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, netns, str(rcvbuf), "hold" if hold else "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seen: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def expect(
        self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = EVENT_TIMEOUT
    ) -> dict[str, Any]:
        """The first line (after those already consumed) for which ``pred`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                item = self._lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                item = None
                left = 0
            if item is not None:
                self.seen.append(item)
                if pred(item):
                    return item
                continue
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(
                    f"no {what} within {timeout} s; saw {self.seen[-20:]}; child stderr:\n{self.stderr}"
                )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Close stdin (the child ends its iteration and exits), else kill it by PID."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def monitor_in(netns_ok: None) -> Iterator[Callable[..., MonitorChild]]:
    children: list[MonitorChild] = []

    def start(netns: str, **kwargs: Any) -> MonitorChild:
        child = MonitorChild(netns, **kwargs)
        children.append(child)
        child.expect(lambda d: d["type"] == "ready", "ready line", timeout=15)
        return child

    try:
        yield start
    finally:
        for child in children:
            child.stop()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab(prefix=unique_prefix("ipsm"))


def link_event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    def pred(d: dict[str, Any]) -> bool:
        return d["type"] == "LinkEvent" and d["name"] == name and all(d[k] == v for k, v in fields.items())

    return pred


def address_event(added: bool, ifname: str, interface: str) -> Callable[[dict[str, Any]], bool]:
    def pred(d: dict[str, Any]) -> bool:
        return d["type"] == "AddressEvent" and (d["added"], d["ifname"], d["interface"]) == (added, ifname, interface)

    return pred


# ---------------------------------------------------------------- the child


def test_ready_knows_the_links(lab: Lab, monitor_in: Callable[..., MonitorChild]) -> None:
    child = monitor_in(lab.gateway)
    ready = child.seen[-1]
    assert ready["ifnames"] == {"1": "lo", "10": "eth0", "11": "eth1"}
    assert ready["rcvbuf"] >= 4 * 1024 * 1024  # SO_RCVBUFFORCE as root (the kernel doubles it)


def test_carrier_loss_and_restore(lab: Lab, monitor_in: Callable[..., MonitorChild]) -> None:
    child = monitor_in(lab.gateway)
    t0 = time.monotonic()
    lab.fail_nic("eth0")
    down = child.expect(link_event("eth0", carrier=False), "eth0 carrier loss")
    assert t0 <= down["at"] <= time.monotonic()  # the same clock (CLOCK_MONOTONIC is system-wide)
    assert (down["index"], down["admin_up"], down["link_ok"]) == (lab.ifindex_of("eth0"), True, False)
    assert (down["kind"], down["mac"]) == ("veth", lab.mac_of("eth0"))
    assert down["operstate"] in ("DOWN", "LOWERLAYERDOWN")

    lab.restore_nic("eth0")
    up = child.expect(link_event("eth0", link_ok=True), "eth0 back up")
    assert up["carrier"] and up["operstate"] == "UP" and up["at"] >= down["at"]
    assert not [d for d in child.seen if d.get("name") == "eth1" and not d.get("carrier", True)]


def test_admin_down_on_the_gateway(lab: Lab, monitor_in: Callable[..., MonitorChild]) -> None:
    child = monitor_in(lab.gateway)
    lab.run(lab.gateway, "ip", "link", "set", "eth1", "down")
    ev = child.expect(link_event("eth1", admin_up=False), "eth1 admin down")
    assert not ev["link_ok"] and not ev["carrier"]
    lab.run(lab.gateway, "ip", "link", "set", "eth1", "up")
    child.expect(link_event("eth1", link_ok=True), "eth1 up again")


def test_address_events(lab: Lab, monitor_in: Callable[..., MonitorChild]) -> None:
    child = monitor_in(lab.gateway)
    lab.run(lab.gateway, "ip", "addr", "add", "198.51.100.7/24", "dev", "eth1")
    child.expect(address_event(True, "eth1", "198.51.100.7/24"), "IPv4 address added")
    lab.run(lab.gateway, "ip", "addr", "add", "2001:db8:5::7/64", "dev", "eth1", "nodad")
    child.expect(address_event(True, "eth1", "2001:db8:5::7/64"), "IPv6 address added")
    lab.run(lab.gateway, "ip", "addr", "del", "198.51.100.7/24", "dev", "eth1")
    child.expect(address_event(False, "eth1", "198.51.100.7/24"), "IPv4 address removed")
    lab.run(lab.gateway, "ip", "addr", "del", "2001:db8:5::7/64", "dev", "eth1")
    child.expect(address_event(False, "eth1", "2001:db8:5::7/64"), "IPv6 address removed")
    assert not [d for d in child.seen if d["type"] == "Resync"]


def test_new_link_is_named_and_gone(lab: Lab, monitor_in: Callable[..., MonitorChild]) -> None:
    child = monitor_in(lab.gateway)
    lab.run(lab.gateway, "ip", "link", "add", "vx0", "type", "veth", "peer", "name", "vy0")
    new = child.expect(link_event("vx0"), "the new link")
    assert new["kind"] == "veth" and not new["admin_up"]
    # an address on a link born after the monitor opened: named from its RTM_NEWLINK
    lab.run(lab.gateway, "ip", "addr", "add", "203.0.113.5/24", "dev", "vx0")
    child.expect(address_event(True, "vx0", "203.0.113.5/24"), "address on the new link")
    lab.run(lab.gateway, "ip", "link", "del", "vx0")
    gone = child.expect(lambda d: d["type"] == "LinkGone" and d["name"] == "vx0", "vx0 gone")
    assert gone["index"] == new["index"]
    child.expect(lambda d: d["type"] == "LinkGone" and d["name"] == "vy0", "its peer gone")
    removed = [d for d in child.seen if d["type"] == "AddressEvent" and d["interface"] == "203.0.113.5/24"]
    assert [d["added"] for d in removed] == [True, False]  # removed with the link, named before it went


def test_leaving_a_bridge_is_not_link_gone(lab: Lab, monitor_in: Callable[..., MonitorChild]) -> None:
    """An AF_BRIDGE RTM_DELLINK (port left its bridge) must not read as "device deleted"."""
    child = monitor_in(lab.switch)
    lab.detach_nic("eth1")
    lab.attach_nic("eth1")
    # a marker: everything before it has been printed once it shows up
    lab.run(lab.switch, "ip", "link", "add", "mk0", "type", "veth", "peer", "name", "mk1")
    child.expect(link_event("mk0"), "marker link")
    assert any(d["type"] == "LinkEvent" and d["name"] == "gw1" for d in child.seen)
    assert not [d for d in child.seen if d["type"] == "LinkGone"]


def test_overrun_gives_resync_and_the_monitor_keeps_working(
    lab: Lab, monitor_in: Callable[..., MonitorChild]
) -> None:
    child = monitor_in(lab.gateway, rcvbuf=1, hold=True)  # the kernel's minimum, a few KiB
    assert child.seen[-1]["rcvbuf"] < 64 * 1024
    script = "".join(
        f"addr {op} 198.51.100.{i}/32 dev eth1\n" for op in ("add", "del") for i in range(1, 201)
    )  # 400 notifications while nobody reads
    proc = subprocess.run(["ip", "-n", lab.gateway, "-batch", "-"], input=script, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    child.send("go")
    child.expect(lambda d: d["type"] == "released", "release")
    resync = child.expect(lambda d: d["type"] == "Resync", "Resync after the overrun")
    assert "ENOBUFS" in resync["reason"]
    # a fresh socket, bound again: new changes arrive, and addresses are still named
    lab.fail_nic("eth0")
    child.expect(link_event("eth0", carrier=False), "carrier loss after the resync")
    lab.run(lab.gateway, "ip", "addr", "add", "198.51.100.250/32", "dev", "eth1")
    child.expect(address_event(True, "eth1", "198.51.100.250/32"), "address after the resync")
    lab.restore_nic("eth0")
    child.expect(link_event("eth0", link_ok=True), "eth0 back")
    child.stop()
    closed = [d for d in child.seen if d["type"] == "closed"] or [child.expect(lambda d: d["type"] == "closed", "end")]
    assert closed[0]["resyncs"] >= 1
    assert child.proc.returncode == 0, child.stderr


def test_closing_stdin_ends_the_child_cleanly(lab: Lab, monitor_in: Callable[..., MonitorChild]) -> None:
    child = monitor_in(lab.gateway)
    child.stop()
    assert child.proc.returncode == 0, child.stderr


# ----------------------------------------------------------------- in-process


def test_in_process_netns_option_misses_nothing_between_open_and_reading(lab: Lab) -> None:
    async def main() -> list[LinkEvent]:
        async with KernelMonitor(netns=lab.gateway) as monitor:
            assert dict(monitor.ifnames) == {1: "lo", 10: "eth0", 11: "eth1"}
            with pytest.raises(MonitorError):
                await monitor.open()
            # the change happens after __aenter__ but before anyone iterates
            lab.fail_nic("eth0")
            seen: list[LinkEvent] = []
            async with asyncio.timeout(EVENT_TIMEOUT):
                async for ev in monitor:
                    if isinstance(ev, LinkEvent):
                        seen.append(ev)
                        if ev.name == "eth0" and not ev.carrier:
                            break
            return seen

    seen = asyncio.run(main())
    assert seen[-1].name == "eth0" and not seen[-1].link_ok


def test_in_process_close_ends_iteration_and_misuse_is_refused(lab: Lab) -> None:
    async def main() -> None:
        monitor = KernelMonitor(netns=lab.gateway)
        with pytest.raises(MonitorError):
            async for _ in monitor:
                pass
        async with monitor:
            events = monitor.events()
            first = asyncio.ensure_future(events.__anext__())
            await asyncio.sleep(0.05)  # now waiting on the empty socket
            with pytest.raises(MonitorError):
                async for _ in monitor:  # a second reader
                    pass
            monitor.close()
            with pytest.raises(StopAsyncIteration):
                async with asyncio.timeout(EVENT_TIMEOUT):
                    await first
            assert not monitor.is_open
        monitor.close()  # idempotent

    asyncio.run(main())
