"""Unverified is not healthy: with probing, a NIC takes addresses only once its path answers,
and a restart keeps the verdicts it knew."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from failover_kit import on, wait_until
from labtools import DaemonHandle

from ipshift.lab import Lab

A10 = "192.0.2.10/24"


def config() -> dict[str, Any]:
    return {
        "interfaces": {"eth0": {"addresses": [A10]}, "eth1": {"addresses": ["192.0.2.11/24"]}},
        "detect": {"probe": {"targets": ["192.0.2.100"], "interval": "20ms", "misses": 3, "rises": 2}},
        "announce": {"count": 1, "interval": "50ms", "verify_rounds": 1},
        "failback": {"mode": "auto", "delay": "200ms"},
        "conflict_check": {"enabled": False},
    }


def both_up(d: DaemonHandle) -> None:
    d.wait_for(lambda s: all(s["nics"][n]["path"] == "up" for n in ("eth0", "eth1")), timeout=5.0,
               what="both paths verified")


def stays(d: DaemonHandle, addr: str, devices: list[str], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        st = d.status()
        assert on(st, addr) == devices, (st["nics"], st["addresses"])
        time.sleep(0.05)


def test_a_restart_during_a_path_failure_keeps_the_address_off_the_dead_path(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, config())
    both_up(d)
    lab.detach_nic("eth0")
    d.wait_for(lambda s: on(s, A10) == ["eth1"], timeout=3.0, what="the move after path loss")
    state = Path(d.config["state_dir"]) / "state.json"
    wait_until(lambda: json.loads(state.read_text()).get("nics", {}).get("eth0", {}).get("path") == "failed", 2.0,
               "the verdict in the state file", lambda: state.read_text())
    d.stop(signal.SIGKILL)
    d.start()
    stays(d, A10, ["eth1"], 1.0)  # the restarted daemon still knows eth0's path failed
    assert d.status()["nics"]["eth0"]["path"] == "failed"
    lab.attach_nic("eth0")
    d.wait_for(lambda s: on(s, A10) == ["eth0"], timeout=5.0, what="failback once the path answers")


def test_a_nic_whose_carrier_returns_on_a_dead_path_takes_nothing_back(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(urgent_carrier=True)
    d = make_daemon(lab, config())
    both_up(d)
    lab.detach_nic("eth0")
    lab.fail_nic("eth0")  # the cable goes, and comes back plugged into a dead port
    d.wait_for(lambda s: on(s, A10) == ["eth1"], timeout=3.0, what="the failover")
    lab.restore_nic("eth0")
    d.wait_for(lambda s: s["nics"]["eth0"]["link"]["carrier"], timeout=2.0, what="eth0's carrier back")
    stays(d, A10, ["eth1"], 1.0)  # failback delay 200 ms: it would be home by now on the old verdict
    assert d.status()["nics"]["eth0"]["path"] in ("unverified", "failed")
    lab.attach_nic("eth0")
    d.wait_for(lambda s: on(s, A10) == ["eth0"], timeout=5.0, what="failback once the path answers")


def test_a_nic_cut_off_before_the_prober_starts_gives_its_address_to_one_that_answers(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    lab.detach_nic("eth0")  # carrier up, nothing behind it
    d = make_daemon(lab, config())
    d.wait_for(lambda s: on(s, A10) == ["eth1"], timeout=5.0, what="192.0.2.10 on the verified NIC")
    st = d.status()
    assert st["nics"]["eth0"]["path"] == "unverified" and st["nics"]["eth1"]["path"] == "up"
    lab.attach_nic("eth0")
    d.wait_for(lambda s: on(s, A10) == ["eth0"], timeout=5.0, what="home once its path answers")


def test_a_target_nobody_answers_at_boot_takes_no_nic_down(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    cfg = config()
    cfg["detect"]["probe"]["targets"] = ["192.0.2.222"]  # nobody has it
    d = make_daemon(lab, cfg)
    stays(d, A10, ["eth0"], 0.8)
    st = d.status()
    assert st["nics"]["eth0"]["path"] == "unverified" and st["nics"]["eth0"]["state"] == "up"


def client_entry(lab: Lab, ip: str) -> str:
    """The client's neighbour entry for ``ip``: its MAC, or "" (read only)."""
    out = lab.run(lab.client, "ip", "-j", "neigh", "show", ip).stdout
    data = json.loads(out) if out.strip() else []
    return str(data[0].get("lladdr", "")) if data else ""


def test_an_address_placed_on_an_unverified_path_is_announced_again_once_it_answers(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    lab.run(lab.client, "ping", "-c", "1", "-W", "1", A10.split("/")[0])  # the client learns eth0's MAC
    assert client_entry(lab, "192.0.2.10") == lab.mac_of("eth0")
    lab.fail_nic("eth0")
    lab.detach_nic("eth1")  # carrier up, nothing behind it: no NIC's path is verified
    d = make_daemon(lab, config())
    d.wait_for(lambda s: on(s, A10) == ["eth1"], timeout=5.0, what="192.0.2.10 on the only NIC with carrier")
    time.sleep(0.3)  # its announcements went into the dead path
    assert client_entry(lab, "192.0.2.10") == lab.mac_of("eth0")
    lab.attach_nic("eth1")
    d.wait_for(lambda s: s["nics"]["eth1"]["path"] == "up", timeout=3.0, what="eth1's path verified")
    wait_until(lambda: client_entry(lab, "192.0.2.10") == lab.mac_of("eth1"), 2.0,
               "the client told that 192.0.2.10 is at eth1 now", lambda: client_entry(lab, "192.0.2.10"))
