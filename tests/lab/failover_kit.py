"""Shared helpers for the ``ipshift run`` failover lab tests (imported by tests/lab modules).

Everything here reads the kernel of a lab namespace (never the root one) or
polls with a bounded wait; nothing sends packets.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labtools import DaemonHandle

from ipshift.lab import Lab

ROUTE_DST = "198.51.100.0/24"
ROUTE_VIA = "192.0.2.1"


def base_config(*, failback: dict[str, Any] | None = None, eth0: list[Any] | None = None,
                eth1: list[Any] | None = None, route: bool = True, **extra: Any) -> dict[str, Any]:
    """eth0 192.0.2.10/24 (+ a static route through it), eth1 192.0.2.11/24, short timers."""
    eth0_cfg: dict[str, Any] = {"addresses": eth0 if eth0 is not None else ["192.0.2.10/24"]}
    if route:
        eth0_cfg["routes"] = [{"to": ROUTE_DST, "via": ROUTE_VIA}]
    cfg: dict[str, Any] = {
        "interfaces": {
            "eth0": eth0_cfg,
            "eth1": {"addresses": eth1 if eth1 is not None else ["192.0.2.11/24"]},
        },
        "announce": {"count": 3, "interval": "50ms"},
        "failback": failback if failback is not None else {"mode": "auto", "delay": "300ms"},
        "conflict_check": {"enabled": True, "timeout": "30ms"},
    }
    cfg.update(extra)
    return cfg


def on(status: dict[str, Any], addr: str) -> list[str]:
    """The devices ``ipshift status`` says hold configured address ``addr`` (e.g. '192.0.2.10/24')."""
    return status["addresses"][addr]["on"]  # type: ignore[no-any-return]


def kernel_addresses(lab: Lab) -> list[tuple[str, str]]:
    """Every global address in the gateway namespace, as (device, 'ip/prefix'), from the kernel."""
    out = lab.run(lab.gateway, "ip", "-j", "addr", "show").stdout
    data = json.loads(out) if out.strip() else []
    return [(d["ifname"], f"{a['local']}/{a['prefixlen']}") for d in data for a in d.get("addr_info", [])
            if a.get("scope") == "global"]


def holders(lab: Lab, addr: str) -> list[str]:
    """The gateway devices the kernel shows ``addr`` on (a list: duplicates show up)."""
    return sorted(dev for dev, a in kernel_addresses(lab) if a == addr)


def kernel_routes(lab: Lab, dst: str = ROUTE_DST) -> list[dict[str, Any]]:
    """Every route to exactly ``dst`` in every table of the gateway namespace."""
    out = lab.run(lab.gateway, "ip", "-j", "route", "show", "table", "all", "exact", dst).stdout
    data: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return [r for r in data if r.get("dst") == dst]


def route_devices(lab: Lab, dst: str = ROUTE_DST) -> list[str]:
    return sorted(str(r.get("dev")) for r in kernel_routes(lab, dst))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               detail: Callable[[], str] | None = None, interval: float = 0.02) -> float:
    """Poll ``predicate`` until true (returns the seconds it took) or fail after ``timeout`` s."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)


def kernel_detail(lab: Lab, d: DaemonHandle | None = None) -> Callable[[], str]:
    """A failure message with the kernel's addresses and routes (and the daemon log's tail)."""

    def detail() -> str:
        routes = lab.run(lab.gateway, "ip", "route", "show", "table", "all", check=False).stdout
        text = f"addresses: {kernel_addresses(lab)}\nroutes:\n{routes}"
        if d is not None:
            text += f"\nlog:\n{d.log()[-4000:]}"
        return text

    return detail


def held_still(lab: Lab, addr: str, devices: list[str], seconds: float, interval: float = 0.05) -> None:
    """Assert the kernel keeps ``addr`` exactly on ``devices`` for ``seconds`` (sampled, bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = holders(lab, addr)
        assert now == devices, f"{addr} is on {now}, expected {devices} for {seconds} s"
        time.sleep(interval)


class Capture:
    """tcpdump on a lab switch port, bounded in time and count, read back afterwards."""

    def __init__(self, lab: Lab, port: str, path: Path, filt: str, seconds: int = 30, count: int = 200) -> None:
        self.path = path
        self.proc = lab.popen(lab.switch, "timeout", str(seconds), "tcpdump", "-i", port, "-U", "-n",
                              "-w", str(path), "-c", str(count), "--immediate-mode", filt,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        assert self.proc.stderr is not None
        line = b""
        while time.monotonic() < deadline and b"listening" not in line:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
        assert b"listening" in line, "tcpdump did not start"

    def frames(self) -> list[Any]:
        import scapy.layers.inet  # noqa: F401  (registers Ethernet/IP/TCP so frames decode)
        from scapy.utils import rdpcap

        time.sleep(0.2)
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(5)
        return list(rdpcap(str(self.path))) if self.path.exists() and self.path.stat().st_size > 24 else []


def log_lines(d: DaemonHandle, needle: str) -> list[str]:
    return [line for line in d.log().splitlines() if needle in line]
