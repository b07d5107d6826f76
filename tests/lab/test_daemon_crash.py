"""`ipshift run` in a lab: SIGKILL at every step of a failover (and of a failback), then a restart.

The daemon's test hook ``IPSHIFT_TEST_KILL_AT=<StepClassName>`` makes it SIGKILL
itself right before it runs the first step of that class. After each kill a
daemon without the hook starts on the same state directory, and the kernel
must converge: every configured address exactly once, on a healthy NIC, and
the configured route and a DHCP default route exactly once, through a healthy NIC.
The hook does not flush the journal before the kill: what survives it is what ipshift
made durable itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Callable

import pytest
from failover_kit import ROUTE_DST, ROUTE_VIA, base_config, holders, kernel_addresses, kernel_detail, on, \
    route_devices, wait_until
from labtools import DaemonHandle

from ipshift.lab import Lab

A10 = "192.0.2.10/24"
A11 = "192.0.2.11/24"
CONFIGURED = (A10, A11)

FAILOVER_STEPS = ["CheckConflict", "AddAddress", "Announce", "SaveRoutes", "DelAddress", "DelNeighbours",
                  "FlushNeighbours", "FlushRouteCache", "MoveRoutes", "DemoteRoutes"]
FAILBACK_STEPS = ["RestoreRoutes", "AddAddress", "Announce", "DelAddress", "DelRoute", "AddRoute",
                  "FlushNeighbours", "FlushRouteCache"]


def _lab(make_lab: Callable[..., Lab]) -> Lab:
    lab = make_lab()
    # the configured route is there before the daemon starts, so the daemon's start-up
    # (which installs missing routes with an AddRoute step) does not trip the kill hook
    lab.run(lab.gateway, "ip", "route", "add", ROUTE_DST, "via", ROUTE_VIA, "dev", "eth0")
    # and a route ipshift only finds in the kernel: the kernel deletes it itself with eth0's last
    # IPv4 address, so it survives a kill only if ipshift kept it durably before that
    lab.run(lab.gateway, "ip", "route", "add", "default", "via", ROUTE_VIA, "dev", "eth0", "proto", "dhcp")
    return lab


def _default_route(lab: Lab) -> list[tuple[str, str]]:
    out = lab.run(lab.gateway, "ip", "-j", "route", "show", "default").stdout
    return [(r["dev"], r.get("protocol", "")) for r in (json.loads(out) if out.strip() else [])]


def _wait_killed(d: DaemonHandle, step: str) -> None:
    assert d.proc is not None
    try:
        rc = d.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the daemon was not killed at {step}:\n{d.log()[-4000:]}") from None
    assert rc == -signal.SIGKILL, f"exit {rc}, not SIGKILL:\n{d.log()[-4000:]}"


def _client_neighbour(lab: Lab, ip: str = "192.0.2.10") -> str | None:
    """The MAC the client's neighbour table holds for ``ip`` (read only: sends nothing)."""
    out = lab.run(lab.client, "ip", "-j", "neigh", "show", ip).stdout
    entries = json.loads(out) if out.strip() else []
    return str(entries[0]["lladdr"]) if entries and entries[0].get("lladdr") else None


def _client_learns(lab: Lab, ip: str = "192.0.2.10") -> None:
    """The client talks to ``ip`` once, so its neighbour table holds the MAC that answers now."""
    r = lab.run(lab.client, "ping", "-c", "1", "-W", "1", ip, check=False)
    assert r.returncode == 0, r.stdout


def _converged(lab: Lab, placement: dict[str, str], route_dev: str) -> Callable[[], bool]:
    def check() -> bool:
        got = kernel_addresses(lab)
        return (all(got.count((dev, addr)) == 1 and sum(a == addr for _, a in got) == 1
                    for addr, dev in placement.items())
                and route_devices(lab) == [route_dev] and _default_route(lab) == [(route_dev, "dhcp")])
    return check


@pytest.mark.parametrize("step", FAILOVER_STEPS)
def test_sigkill_during_failover_then_restart(step: str, make_lab: Callable[..., Lab],
                                              make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = _lab(make_lab)
    d = make_daemon(lab, base_config(), env={"IPSHIFT_TEST_KILL_AT": step})
    detail = kernel_detail(lab, d)
    _client_learns(lab)
    assert _client_neighbour(lab) == lab.mac_of("eth0")
    lab.fail_nic("eth0")
    _wait_killed(d, step)

    # a restart without the hook, on the same state directory, while eth0 is still down
    d.env = {}
    d.start()
    wait_until(_converged(lab, {A10: "eth1", A11: "eth1"}, "eth1"), 3.0,
               "each address exactly once on eth1 and the route exactly once dev eth1", detail)
    d.wait_for(lambda s: on(s, A10) == ["eth1"] and s["nics"]["eth0"]["state"] == "down", timeout=2.0,
               what="status: 192.0.2.10 on eth1, eth0 down")
    # the network was told: the client's entry for 192.0.2.10 moved to eth1's MAC without the
    # client sending anything (an announcement, before or after the kill)
    wait_until(lambda: _client_neighbour(lab) == lab.mac_of("eth1"), 2.0,
               "the client's neighbour entry for 192.0.2.10 to hold eth1's MAC",
               lambda: f"client has {_client_neighbour(lab)}\n{detail()}")

    # eth0 comes back: everything converges home (auto failback)
    lab.restore_nic("eth0")
    wait_until(_converged(lab, {A10: "eth0", A11: "eth1"}, "eth0"), 4.0,
               "192.0.2.10 home on eth0, the route dev eth0, each exactly once", detail)
    assert d.proc is not None and d.proc.poll() is None


@pytest.mark.parametrize("step", FAILBACK_STEPS)
def test_sigkill_during_failback_then_restart(step: str, make_lab: Callable[..., Lab],
                                              make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = _lab(make_lab)
    d = make_daemon(lab, base_config())
    detail = kernel_detail(lab, d)
    lab.fail_nic("eth0")
    wait_until(_converged(lab, {A10: "eth1", A11: "eth1"}, "eth1"), 2.0, "failover to eth1", detail)
    _client_learns(lab)
    assert _client_neighbour(lab) == lab.mac_of("eth1")
    assert d.stop() == 0  # addresses stay where they are

    # a daemon with the hook: it dies in the failback
    d.start(env={"IPSHIFT_TEST_KILL_AT": step})
    lab.restore_nic("eth0")
    _wait_killed(d, step)

    d.env = {}
    d.start()
    wait_until(_converged(lab, {A10: "eth0", A11: "eth1"}, "eth0"), 4.0,
               "192.0.2.10 home on eth0, the route dev eth0, each exactly once", detail)
    d.wait_for(lambda s: on(s, A10) == ["eth0"] and on(s, A11) == ["eth1"], timeout=2.0,
               what="status: everything home")
    # the network was told the address is home (the client sent nothing since the failover)
    wait_until(lambda: _client_neighbour(lab) == lab.mac_of("eth0"), 2.0,
               "the client's neighbour entry for 192.0.2.10 to hold eth0's MAC",
               lambda: f"client has {_client_neighbour(lab)}\n{detail()}")
    assert d.proc is not None and d.proc.poll() is None
