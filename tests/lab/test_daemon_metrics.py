"""Prometheus metrics of a running daemon, scraped from the lab's client over the lab network."""

from __future__ import annotations

import sys
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

from failover_kit import on
from labtools import DaemonHandle
from ipshift.lab import Lab

LISTEN = "192.0.2.11:9567"  # eth1's own address: it stays while eth0's moves

FETCH = """
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        sys.stdout.write(r.headers.get("Content-Type", "") + "\\n" + r.read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write(f"HTTP {e.code}\\n")
"""


def fetch(lab: Lab, path: str) -> str:
    return lab.run(lab.client, sys.executable, "-c", FETCH, f"http://{LISTEN}{path}", timeout=20).stdout


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = text.split("\n", 1)[1]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def test_metrics_follow_a_failover(make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, {
        "interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}, "eth1": {"addresses": ["192.0.2.11/24"]}},
        "failback": {"mode": "manual"},
        "conflict_check": {"enabled": False},
        "metrics": {"listen": LISTEN},
    })
    d.wait_for(lambda s: s["ready"] is True, timeout=5.0, what="ready")
    text = fetch(lab, "/metrics")
    assert text.startswith("text/plain; version=0.0.4; charset=utf-8\n"), text[:200]
    m = samples(text)
    assert m[("ipshift_ready", ())] == 1.0
    assert m[("ipshift_nic_state", (("nic", "eth0"), ("state", "up")))] == 1.0
    assert m[("ipshift_addresses", (("device", "eth0"),))] == 1.0
    assert m[("ipshift_addresses_away", ())] == 0.0
    assert not any(k[0] == "ipshift_runs_total" for k in m)

    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"] and len(s["failovers"]) >= 1, timeout=2.0)
    m = samples(fetch(lab, "/metrics"))
    assert m[("ipshift_nic_state", (("nic", "eth0"), ("state", "down")))] == 1.0
    assert m[("ipshift_addresses", (("device", "eth1"),))] == 2.0
    assert m[("ipshift_addresses_away", ())] == 1.0
    assert m[("ipshift_runs_total", (("kind", "failover"), ("nic", "eth0")))] == 1.0
    assert m[("ipshift_moves_total", (("kind", "failover"), ("result", "moved")))] == 1.0
    assert m[("ipshift_run_duration_seconds_count", (("kind", "failover"),))] == 1.0
    assert 0 < m[("ipshift_run_duration_seconds_sum", (("kind", "failover"),))] < 1.0

    assert fetch(lab, "/").startswith("HTTP 404")


def test_a_metrics_address_it_cannot_bind_leaves_the_daemon_running(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, {
        "interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}, "eth1": {"addresses": ["192.0.2.11/24"]}},
        "conflict_check": {"enabled": False},
        "metrics": {"listen": "198.51.100.9:9567"},  # on no interface of the gateway
    })
    d.wait_for(lambda s: s["ready"] is True, timeout=5.0, what="ready")
    assert "cannot serve metrics on 198.51.100.9:9567" in d.log()
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=2.0, what="the failover")
