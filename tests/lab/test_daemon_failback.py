"""`ipshift run` in a lab: failback (auto after the delay, manual on command), planned maintenance,
every NIC down and one back, and a flapping NIC held down (also while its link stays down)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Callable

from failover_kit import (
    ROUTE_DST, base_config, held_still, holders, kernel_detail, log_lines, on, route_devices, wait_until,
)
from labtools import DaemonHandle

from ipshift.lab import Lab

A10 = "192.0.2.10/24"
A11 = "192.0.2.11/24"


def _fail_over(lab: Lab, d: DaemonHandle) -> None:
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, A10) == ["eth1"], timeout=2.0, what="192.0.2.10 on eth1")
    wait_until(lambda: holders(lab, A10) == ["eth1"], 2.0, "192.0.2.10 on eth1 in the kernel",
               kernel_detail(lab, d))


def test_auto_failback_waits_for_the_delay(make_lab: Callable[..., Lab],
                                           make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    delay = 1.5
    d = make_daemon(lab, base_config(failback={"mode": "auto", "delay": f"{delay}s"}))
    detail = kernel_detail(lab, d)
    _fail_over(lab, d)

    t_restore = time.monotonic()
    lab.restore_nic("eth0")
    # not before the delay: still on eth1 (kernel and status) well inside it
    d.wait_for(lambda s: s["nics"]["eth0"]["state"] == "returning", timeout=1.0, what="eth0 returning")
    held_still(lab, A10, ["eth1"], seconds=t_restore + delay * 0.6 - time.monotonic())
    st = d.status()
    if time.monotonic() - t_restore < delay:
        assert on(st, A10) == ["eth1"] and st["nics"]["eth0"]["state"] == "returning", json.dumps(st)[:2000]

    # after the delay it comes home, with its route
    wait_until(lambda: holders(lab, A10) == ["eth0"], delay + 3.0, "192.0.2.10 home on eth0", detail)
    assert time.monotonic() - t_restore >= delay
    wait_until(lambda: route_devices(lab) == ["eth0"], 2.0, f"route {ROUTE_DST} dev eth0", detail)
    st = d.status()
    assert st["nics"]["eth0"]["state"] == "up"
    (fb,) = [r for r in st["failovers"] if r["kind"] == "failback"]
    assert fb["nic"] == "eth0" and fb["trigger"] == "recovered" and all(m["ok"] for m in fb["moves"])


def test_manual_failback_on_command(make_lab: Callable[..., Lab],
                                    make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, base_config(failback={"mode": "manual", "delay": "200ms"}))
    detail = kernel_detail(lab, d)
    _fail_over(lab, d)

    lab.restore_nic("eth0")
    d.wait_for(lambda s: s["nics"]["eth0"]["state"] == "up", timeout=3.0, what="eth0 up again")
    # manual: the address stays on eth1 although eth0 is healthy
    held_still(lab, A10, ["eth1"], seconds=1.0)
    assert on(d.status(), A10) == ["eth1"]
    assert route_devices(lab) == ["eth1"], detail()

    r = d.cli("failback", "eth0")
    assert r.returncode == 0, (r.stdout, r.stderr, d.log()[-3000:])
    assert holders(lab, A10) == ["eth0"], detail()
    wait_until(lambda: route_devices(lab) == ["eth0"], 2.0, f"route {ROUTE_DST} dev eth0", detail)
    assert holders(lab, A11) == ["eth1"]
    fb = [rec for rec in d.status()["failovers"] if rec["kind"] == "failback"]
    assert fb and fb[-1]["trigger"] == "operator: ipshift failback", fb


def test_planned_maintenance_failover_and_failback_commands(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, base_config(failback={"mode": "auto", "delay": "200ms"}))
    detail = kernel_detail(lab, d)
    wait_until(lambda: route_devices(lab) == ["eth0"], 2.0, f"route {ROUTE_DST} dev eth0", detail)

    # eth0 is up: the operator moves its addresses away anyway
    r = d.cli("failover", "eth0")
    assert r.returncode == 0, (r.stdout, r.stderr, d.log()[-3000:])
    assert holders(lab, A10) == ["eth1"], detail()
    assert route_devices(lab) == ["eth1"], detail()
    st = d.status()
    assert st["nics"]["eth0"]["state"] == "drained" and st["nics"]["eth0"]["link"]["carrier"]
    # drained: even in auto mode the address does not return by itself
    held_still(lab, A10, ["eth1"], seconds=1.0)

    r = d.cli("failback", "eth0")
    assert r.returncode == 0, (r.stdout, r.stderr, d.log()[-3000:])
    assert holders(lab, A10) == ["eth0"], detail()
    wait_until(lambda: route_devices(lab) == ["eth0"], 2.0, f"route {ROUTE_DST} dev eth0", detail)
    st = d.status()
    assert st["nics"]["eth0"]["state"] == "up"
    held_still(lab, A10, ["eth0"], seconds=0.5)


def test_all_nics_down_then_one_back(make_lab: Callable[..., Lab],
                                     make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    delay = 0.5
    d = make_daemon(lab, base_config(failback={"mode": "auto", "delay": f"{delay}s"}))
    detail = kernel_detail(lab, d)

    # both NICs lose carrier at once (one ip process, one after the other)
    script = "".join(f"link set {lab.peer_of(nic)} down\n" for nic in ("eth0", "eth1"))
    r = subprocess.run(["ip", "-n", lab.switch, "-batch", "-"], input=script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d.wait_for(lambda s: s["nics"]["eth0"]["state"] == "down" and s["nics"]["eth1"]["state"] == "down",
               timeout=2.0, what="both NICs down")
    # addresses stay where they are: each exactly once, on one of the gateway's NICs
    time.sleep(0.5)
    assert d.proc is not None and d.proc.poll() is None, d.log()
    for addr in (A10, A11):
        assert len(holders(lab, addr)) == 1 and holders(lab, addr)[0] in ("eth0", "eth1"), detail()
    where10 = holders(lab, A10)
    # ... and the daemon says why
    why = log_lines(d, "no NIC can take it")
    assert why, d.log()[-3000:]
    assert any("eth1 failed" in line for line in log_lines(d, "failed"))

    # eth1 comes back alone: after its failback delay it carries both addresses
    t_restore = time.monotonic()
    lab.restore_nic("eth1")
    if where10 == ["eth0"]:  # not before eth1 had carrier for the delay
        held_still(lab, A10, ["eth0"], seconds=t_restore + delay * 0.6 - time.monotonic())
    wait_until(lambda: holders(lab, A10) == ["eth1"] and holders(lab, A11) == ["eth1"], delay + 3.0,
               "192.0.2.10 and 192.0.2.11 on eth1", detail)
    d.wait_for(lambda s: s["nics"]["eth1"]["state"] == "up", timeout=2.0, what="eth1 up")
    assert time.monotonic() - t_restore >= delay
    wait_until(lambda: route_devices(lab) == ["eth1"], 2.0, f"route {ROUTE_DST} dev eth1", detail)

    # eth0 comes back: its address comes home (auto)
    lab.restore_nic("eth0")
    wait_until(lambda: holders(lab, A10) == ["eth0"], delay + 3.0, "192.0.2.10 home on eth0", detail)
    wait_until(lambda: route_devices(lab) == ["eth0"], 2.0, f"route {ROUTE_DST} dev eth0", detail)
    assert holders(lab, A11) == ["eth1"], detail()
    assert d.proc.poll() is None


def test_flapping_nic_is_held_down_then_comes_home(make_lab: Callable[..., Lab],
                                                   make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    window = 3.0
    delay = 0.2
    d = make_daemon(lab, base_config(failback={"mode": "auto", "delay": f"{delay * 1000:.0f}ms",
                                               "flap_count": 4, "flap_window": f"{window:g}s"}))
    detail = kernel_detail(lab, d)

    for _ in range(4):  # bounded: 4 down/up toggles, 8 link changes
        lab.fail_nic("eth0")
        time.sleep(0.05)
        lab.restore_nic("eth0")
        time.sleep(0.05)
    t_last = time.monotonic()  # eth0 stays up from here on

    st = d.wait_for(lambda s: s["nics"]["eth0"]["state"] == "held", timeout=2.0, what="eth0 held")
    assert "flapping" in st["nics"]["eth0"]["reason"], st["nics"]["eth0"]
    assert log_lines(d, "eth0 held down: flapping")
    # during the hold the address stays on eth1 (sampled until shortly before the window ends)
    wait_until(lambda: holders(lab, A10) == ["eth1"], 2.0, "192.0.2.10 on eth1", detail)
    held_still(lab, A10, ["eth1"], seconds=max(0.0, window - 0.5 - (time.monotonic() - t_last)))
    assert d.status()["nics"]["eth0"]["state"] == "held"

    # after the window (+ the delay) it comes home
    wait_until(lambda: holders(lab, A10) == ["eth0"], window + delay + 3.0, "192.0.2.10 home on eth0", detail)
    assert time.monotonic() - t_last >= window
    d.wait_for(lambda s: s["nics"]["eth0"]["state"] == "up", timeout=2.0, what="eth0 up")
    wait_until(lambda: route_devices(lab) == ["eth0"], 2.0, f"route {ROUTE_DST} dev eth0", detail)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (from /proc/PID/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_flapping_nic_that_stays_down_is_held_quietly(make_lab: Callable[..., Lab],
                                                      make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    window = 1.0
    d = make_daemon(lab, base_config(failback={"mode": "auto", "delay": "200ms", "flap_count": 4,
                                               "flap_window": f"{window:g}s"}))
    detail = kernel_detail(lab, d)
    for _ in range(2):  # bounded: 2 down/up toggles, then down for good
        lab.fail_nic("eth0")
        time.sleep(0.05)
        lab.restore_nic("eth0")
        time.sleep(0.05)
    lab.fail_nic("eth0")
    d.wait_for(lambda s: s["nics"]["eth0"]["state"] == "held", timeout=2.0, what="eth0 held")
    wait_until(lambda: holders(lab, A10) == ["eth1"], 2.0, "192.0.2.10 on eth1", detail)

    # the window passes while eth0 is still down: the daemon waits for the link, idle
    time.sleep(window + 0.5)
    assert d.proc is not None
    cpu0, t0 = _cpu_seconds(d.proc.pid), time.monotonic()
    time.sleep(1.0)
    busy = (_cpu_seconds(d.proc.pid) - cpu0) / (time.monotonic() - t0)
    assert busy < 0.5, f"the daemon used {busy:.0%} of a CPU while eth0 was held and down"
    assert d.status()["nics"]["eth0"]["state"] == "held"
    assert holders(lab, A10) == ["eth1"]

    # the link comes back and stays: after a quiet window (+ the delay) the address comes home
    lab.restore_nic("eth0")
    wait_until(lambda: holders(lab, A10) == ["eth0"], window + 3.0, "192.0.2.10 home on eth0", detail)
