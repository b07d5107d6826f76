"""`ipshift run` in a lab: carrier loss moves the address, tells the network, and it comes back."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from scapy.layers.l2 import ARP, Ether

from ipshift.lab import Lab

from failover_kit import Capture
from labtools import DaemonHandle

ETH0_ADDR = "192.0.2.10/24"
BASE: dict[str, Any] = {
    "interfaces": {
        "eth0": {"addresses": [ETH0_ADDR], "routes": [{"to": "198.51.100.0/24", "via": "192.0.2.1"}]},
        "eth1": {"addresses": ["192.0.2.11/24"]},
    },
    "announce": {"count": 3, "interval": "50ms", "verify_rounds": 1},  # no re-announcing: count them
    "failback": {"mode": "auto", "delay": "300ms"},
    "conflict_check": {"enabled": True, "timeout": "30ms"},
}


def cfg(**changes: Any) -> dict[str, Any]:
    c: dict[str, Any] = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        c[key] = value
    return c


def on(status: dict[str, Any], addr: str) -> list[str]:
    return status["addresses"][addr]["on"]  # type: ignore[no-any-return]


def client_ping_ok(lab: Lab, ip: str) -> bool:
    r = lab.run(lab.client, "ping", "-c", "1", "-W", "1", ip, check=False)
    return r.returncode == 0


def test_carrier_loss_moves_announces_and_client_follows(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle], tmp_path: Path) -> None:
    lab = make_lab()
    d = make_daemon(lab, cfg())
    d.wait_for(lambda s: s["conflict_check"]["known"] >= 1, timeout=5.0, what="the first background conflict probe")
    assert client_ping_ok(lab, "192.0.2.10")
    neigh = lab.run(lab.client, "ip", "-j", "neigh", "show", "192.0.2.10").stdout
    assert json.loads(neigh)[0]["lladdr"] == lab.mac_of("eth0")
    cap = Capture(lab, lab.peer_of("eth1"), tmp_path / "garp.pcap", "arp")

    t0 = time.monotonic()
    lab.fail_nic("eth0")
    status = d.wait_for(lambda s: on(s, ETH0_ADDR) == ["eth1"], timeout=1.0, what="192.0.2.10 on eth1")
    assert time.monotonic() - t0 < 1.0

    # gratuitous ARP from eth1's MAC for the moved address, decoded by scapy
    garps = [f for f in cap.frames() if ARP in f and f[ARP].psrc == "192.0.2.10" and f[ARP].pdst == "192.0.2.10"]
    assert len(garps) == 3, [f.summary() for f in cap.frames()]
    for f in garps:
        assert f[Ether].src == lab.mac_of("eth1") and f[ARP].hwsrc == lab.mac_of("eth1")
        assert f[Ether].dst == "ff:ff:ff:ff:ff:ff"

    # the client's traffic resumes, and its neighbour entry now holds eth1's MAC
    assert client_ping_ok(lab, "192.0.2.10")
    neigh = json.loads(lab.run(lab.client, "ip", "-j", "neigh", "show", "192.0.2.10").stdout)
    assert neigh[0]["lladdr"] == lab.mac_of("eth1")

    # the failover record: every step with a duration, the first announcement early
    status = d.wait_for(lambda s: any(r["kind"] == "failover" for r in s["failovers"]), timeout=2.0,
                        what="the failover record (it ends once the probe defending the move is over)")
    (rec,) = [r for r in status["failovers"] if r["kind"] == "failover"]
    assert rec["trigger"] == "carrier lost"
    (move,) = rec["moves"]
    assert move["ok"] and move["device"] == "eth1"
    ops = [s["op"] for s in move["steps"]]
    # known clear by the background probe: moved at once, the probe that defends it right after the
    # first announcement
    assert move["conflict_check"].startswith("known"), move
    assert ops[:5] == ["AddAddress", "Announce", "CheckConflict", "SaveRoutes", "DelAddress"]
    assert all(s["ms"] >= 0 for s in move["steps"])

    # the static route through eth0 now goes through eth1
    routes = lab.run(lab.gateway, "ip", "route", "show", "198.51.100.0/24").stdout
    assert "dev eth1" in routes

    # failback (auto): the address comes home once eth0 had carrier for the delay
    lab.restore_nic("eth0")
    d.wait_for(lambda s: on(s, ETH0_ADDR) == ["eth0"], timeout=3.0, what="failback to eth0")
    assert "dev eth0" in lab.run(lab.gateway, "ip", "route", "show", "198.51.100.0/24").stdout
    assert client_ping_ok(lab, "192.0.2.10")
    text = d.cli("status").stdout
    assert "failover of eth0" in text and "failback of eth0" in text


def test_status_json_and_clean_exit_leave_addresses(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, cfg())
    # "ready" once the start-up convergence is done (the text says so until then)
    d.wait_for(lambda s: s["ready"] is True, timeout=5.0, what="ready")
    assert "starting" not in d.cli("status").stdout
    r = d.cli("status", "--json")
    assert r.returncode == 0
    st = json.loads(r.stdout)
    assert st["ready"] is True
    assert st["nics"]["eth0"]["state"] == "up" and on(st, ETH0_ADDR) == ["eth0"]
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, ETH0_ADDR) == ["eth1"], timeout=1.0)
    assert d.stop() == 0
    assert ETH0_ADDR in d.addresses_on("eth1")  # SIGTERM leaves addresses where they are
