"""`detect.carrier_poll` in a lab whose NICs' carrier changes wait for linkwatch, as physical NICs' do.

With ``Lab(urgent_carrier=False)`` a carrier loss reaches the daemon as a netlink event only when the
kernel's linkwatch runs (at most once a second, so up to 1 s late after another link event); the
carrier bit itself is current at once, and polling it finds the loss. These tests assert behaviour:
who found the loss (the failover record's trigger), that the kernel's later event changes nothing,
and that a reload starts, retimes and stops polling. No timing is asserted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import yaml
from failover_kit import holders, log_lines, on
from labtools import DaemonHandle

from ipshift.lab import Lab

A10 = "192.0.2.10/24"


def config(**detect: Any) -> dict[str, Any]:
    return {
        "interfaces": {"eth0": {"addresses": [A10]}, "eth1": {"addresses": ["192.0.2.11/24"]}},
        "detect": detect,
        "announce": {"count": 2, "interval": "50ms"},
        "failback": {"mode": "auto", "delay": "200ms"},
        "conflict_check": {"enabled": True, "timeout": "20ms"},
    }


def failovers(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in status["failovers"] if r["kind"] == "failover"]


def lose_carrier_after_another_link_event(lab: Lab) -> None:
    """eth2 (not configured) loses its carrier, which runs linkwatch; eth0's loss right after it waits
    for the next run (when nothing else on the machine runs linkwatch first)."""
    lab.fail_nic("eth2")
    lab.fail_nic("eth0")


def hup(d: DaemonHandle, cfg: dict[str, Any]) -> None:
    d.write_config({**cfg, "state_dir": d.config["state_dir"]})
    assert d.proc is not None and d.proc.poll() is None
    before = len(log_lines(d, "configuration reloaded from"))
    os.kill(d.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5.0
    while len(log_lines(d, "configuration reloaded from")) == before:
        assert time.monotonic() < deadline, d.log()[-3000:]
        time.sleep(0.02)


def test_a_polled_carrier_loss_fails_over_once_and_comes_back(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(nics=3, urgent_carrier=False)
    d = make_daemon(lab, config(carrier_poll="10ms"))
    d.wait_for(lambda s: s["ready"], timeout=5.0, what="ready")
    lose_carrier_after_another_link_event(lab)
    st = d.wait_for(lambda s: on(s, A10) == ["eth1"] and bool(failovers(s)), timeout=5.0, what="the move")
    (rec,) = failovers(st)
    assert rec["trigger"] == "carrier lost (polled)" and rec["trigger_kind"] == "link"
    assert holders(lab, A10) == ["eth1"]
    # the kernel's own notification (linkwatch runs at most 1 s later) is a no-op: no second failover
    time.sleep(1.5)
    st = d.status()
    assert len(failovers(st)) == 1 and on(st, A10) == ["eth1"]
    assert st["nics"]["eth0"]["state"] == "down" and st["nics"]["eth0"]["link"]["carrier"] is False
    lab.restore_nic("eth0")
    st = d.wait_for(lambda s: on(s, A10) == ["eth0"], timeout=5.0, what="the failback")
    assert len(failovers(st)) == 1
    assert holders(lab, A10) == ["eth0"]


def test_without_polling_the_kernels_event_moves_the_address(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(nics=3, urgent_carrier=False)
    d = make_daemon(lab, config())
    d.wait_for(lambda s: s["ready"], timeout=5.0, what="ready")
    lose_carrier_after_another_link_event(lab)
    st = d.wait_for(lambda s: on(s, A10) == ["eth1"] and bool(failovers(s)), timeout=5.0, what="the move")
    (rec,) = failovers(st)
    assert rec["trigger"] == "carrier lost"  # found by the kernel's (linkwatch's) notification
    assert not log_lines(d, "polling the carrier")


def test_reload_starts_retimes_and_stops_polling(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(nics=3, urgent_carrier=False)
    cfg = config()
    d = make_daemon(lab, cfg)
    d.wait_for(lambda s: s["ready"], timeout=5.0, what="ready")
    hup(d, config(carrier_poll="20ms"))
    assert log_lines(d, "polling the carrier of eth0, eth1 every 20 ms")
    hup(d, config(carrier_poll="10ms"))
    assert log_lines(d, "polling the carrier of eth0, eth1 every 10 ms")
    lose_carrier_after_another_link_event(lab)
    st = d.wait_for(lambda s: on(s, A10) == ["eth1"] and bool(failovers(s)), timeout=5.0, what="the move")
    assert failovers(st)[0]["trigger"] == "carrier lost (polled)"
    lab.restore_nic("eth0")
    lab.restore_nic("eth2")
    d.wait_for(lambda s: on(s, A10) == ["eth0"] and s["nics"]["eth0"]["state"] == "up", timeout=5.0,
               what="the failback")
    hup(d, config())
    assert log_lines(d, "carrier polling off")
    time.sleep(1.2)  # let linkwatch settle, so the next loss is only seen by its event
    lose_carrier_after_another_link_event(lab)
    st = d.wait_for(lambda s: len(failovers(s)) == 2 and on(s, A10) == ["eth1"], timeout=5.0,
                    what="the second move")
    assert failovers(st)[-1]["trigger"] == "carrier lost"


def test_a_bad_carrier_poll_is_refused_on_reload(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, config(carrier_poll="10ms"))
    d.wait_for(lambda s: s["ready"], timeout=5.0, what="ready")
    d.write_config({**config(carrier_poll="0.2ms"), "state_dir": d.config["state_dir"]})
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5.0
    while not log_lines(d, "detect.carrier_poll"):
        assert time.monotonic() < deadline, d.log()[-3000:]
        time.sleep(0.02)
    (line,) = log_lines(d, "detect.carrier_poll")
    assert "at least 1 ms" in line and "ipshift.yaml:" in line
    assert yaml.safe_load(d.config_path.read_text())["detect"]["carrier_poll"] == "0.2ms"
    assert d.proc.poll() is None and not log_lines(d, "carrier polling off")
