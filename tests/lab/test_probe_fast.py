"""Path probing at a 2 ms interval: a lost path is found and failed over, and the move comes back.

Behaviour only (generous timeouts, nothing timed): with ``interval: 2ms`` and 3 misses, a NIC cut
off the switch (carrier up) fails by its probes, its address moves, and it comes home once the
path answers again; the default reply window (half the interval) is enough on the lab's segment
for a path to be confirmed at all.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from failover_kit import holders, on
from labtools import DaemonHandle

from ipshift.lab import Lab

A10 = "192.0.2.10/24"
CLIENT = "192.0.2.100"


def fast_config(interval: str = "2ms", **probe: Any) -> dict[str, Any]:
    return {
        "interfaces": {"eth0": {"addresses": [A10]}, "eth1": {"addresses": ["192.0.2.11/24"]}},
        "detect": {"probe": {"targets": [CLIENT], "interval": interval, "misses": 3, "rises": 2, **probe}},
        "announce": {"count": 2, "interval": "50ms"},
        "failback": {"mode": "auto", "delay": "200ms"},
        "conflict_check": {"enabled": True, "timeout": "20ms"},
    }


def both_up(s: dict[str, Any]) -> bool:
    return bool(s["nics"]["eth0"]["path"] == "up" and s["nics"]["eth1"]["path"] == "up")


def test_2ms_probes_fail_over_a_lost_path_and_fail_back(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, fast_config())
    d.wait_for(both_up, timeout=5.0, what="both paths confirmed")
    time.sleep(0.5)  # hundreds of rounds: an answered path stays up (no spurious failure)
    st = d.status()
    assert both_up(st) and not st["failovers"]
    lab.detach_nic("eth0")  # carrier stays up: only the probes can tell
    st = d.wait_for(lambda s: on(s, A10) == ["eth1"] and any(r["kind"] == "failover" for r in s["failovers"]),
                    timeout=5.0, what="the move after path loss")
    (rec,) = [r for r in st["failovers"] if r["kind"] == "failover"]
    assert rec["trigger"] == f"path lost: 3 probe rounds unanswered by {CLIENT}" and rec["trigger_kind"] == "path"
    assert st["nics"]["eth0"]["path"] == "failed" and st["nics"]["eth0"]["link"]["carrier"] is True
    assert holders(lab, A10) == ["eth1"]
    lab.attach_nic("eth0")
    st = d.wait_for(lambda s: on(s, A10) == ["eth0"], timeout=5.0, what="failback after the path returned")
    assert st["nics"]["eth0"]["path"] == "up"
    assert holders(lab, A10) == ["eth0"]
    assert lab.run(lab.client, "ping", "-c", "1", "-W", "1", "192.0.2.10", check=False).returncode == 0


def test_a_reload_retimes_fast_probing_and_keeps_the_verdicts(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, fast_config("5ms"))
    d.wait_for(both_up, timeout=5.0, what="both paths confirmed")
    d.write_config({**fast_config("2ms"), "state_dir": d.config["state_dir"]})
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5.0
    while "configuration reloaded from" not in d.log():
        assert time.monotonic() < deadline, d.log()[-3000:]
        time.sleep(0.02)
    time.sleep(0.3)
    st = d.status()
    assert both_up(st) and not st["failovers"]
    lab.detach_nic("eth1")
    st = d.wait_for(lambda s: on(s, "192.0.2.11/24") == ["eth0"] and bool(s["failovers"]), timeout=5.0,
                    what="eth1's address moves")
    assert [(r["kind"], r["nic"], r["trigger_kind"]) for r in st["failovers"]] == [("failover", "eth1", "path")]
