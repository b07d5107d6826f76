"""`ipshift run` in a lab: conflict knowledge before the failure (background RFC 5227 probes).

With the conflict check on (the default) the daemon asks in the background, from each candidate
survivor, whether anyone else uses each address; a move whose finding is fresh and clear goes at
once and is defended after it, a finding of "in use" refuses the move before any step, and a
duplicate address seen while the address is at home is reported by status, log and metrics.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from failover_kit import base_config, holders, on, wait_until
from labtools import DaemonHandle
from test_daemon_conflict import OTHER_MAC, TAKEN, OtherHost, other_host  # noqa: F401 (a fixture)
from test_daemon_metrics import fetch, samples

from ipshift.lab import Lab


def scouting(**background: Any) -> dict[str, Any]:
    cfg = base_config(failback={"mode": "manual", "delay": "300ms"}, route=False, eth0=["192.0.2.10/24", TAKEN],
                      metrics={"listen": "192.0.2.11:9567"})
    cfg["conflict_check"] = {"enabled": True, "timeout": "100ms", "background": background or {}}
    return cfg


def moves_of(st: dict[str, Any], address: str) -> list[dict[str, Any]]:
    return [m for rec in st["failovers"] if rec["kind"] == "failover" for m in rec["moves"] if m["address"] == address]


def test_a_move_with_a_fresh_clear_finding_goes_at_once_and_is_defended_after(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, scouting())
    st = d.wait_for(lambda s: (s.get("conflict_check") or {}).get("known", 0) >= 3, timeout=5.0,
                    what="the first background sweep (every address from every candidate)")
    assert st["conflict_check"]["conflicts"] == [] and st["conflict_check"]["probes"] >= 3
    lab.fail_nic("eth0")
    st = d.wait_for(lambda s: bool(moves_of(s, TAKEN)) and on(s, TAKEN) == ["eth1"], timeout=3.0,
                    what=f"{TAKEN} moved to eth1")
    m = moves_of(st, TAKEN)[0]
    assert m["ok"] and m["conflict_check"].startswith("known: nobody else answered"), json.dumps(m, indent=1)
    ops = [s["op"] for s in m["steps"]]
    # optimistic: the address is added and announced before the probe's verdict is in, and the probe ran
    assert ops.index("AddAddress") < len(ops) and "CheckConflict" in ops, ops
    probe = next(s for s in m["steps"] if s["op"] == "CheckConflict")
    add = next(s for s in m["steps"] if s["op"] == "AddAddress")
    assert probe["ok"] and add["at_ms"] < probe["at_ms"] + probe["ms"], m["steps"]


def test_without_background_probes_the_configured_mode_waits_for_the_probe(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    cfg = scouting()
    cfg["conflict_check"]["background"] = None
    d = make_daemon(lab, cfg)
    d.wait_for(lambda s: on(s, TAKEN) == ["eth0"], timeout=3.0, what=f"{TAKEN} on eth0")
    assert d.status()["conflict_check"]["background"] is False
    lab.fail_nic("eth0")
    st = d.wait_for(lambda s: on(s, TAKEN) == ["eth1"], timeout=3.0, what=f"{TAKEN} moved to eth1")
    m = moves_of(st, TAKEN)[0]
    assert m["conflict_check"] == "strict"
    probe = next(s for s in m["steps"] if s["op"] == "CheckConflict")
    add = next(s for s in m["steps"] if s["op"] == "AddAddress")
    assert add["at_ms"] >= probe["at_ms"] + probe["ms"] - 0.5, m["steps"]  # strict: after the probe's wait


def test_a_duplicate_address_at_home_is_reported_and_refuses_the_move(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle],
        other_host: Callable[[Lab], OtherHost]) -> None:  # noqa: F811 (the fixture)
    lab = make_lab()
    other = other_host(lab)
    d = make_daemon(lab, scouting(every="1s"))
    d.wait_for(lambda s: on(s, TAKEN) == ["eth0"], timeout=3.0, what=f"{TAKEN} placed on eth0")
    lab.run(other.ns, "ip", "addr", "add", TAKEN, "dev", "eth0")  # another host takes it
    st = d.wait_for(lambda s: bool((s.get("conflict_check") or {}).get("conflicts")), timeout=6.0,
                    what="the duplicate seen by a background probe")
    seen = st["conflict_check"]["conflicts"]
    assert [(c["address"], c["nic"]) for c in seen] == [("192.0.2.50", "eth1")], seen
    assert OTHER_MAC in seen[0]["reason"].lower(), seen
    assert any("duplicate address" in line and "192.0.2.50" in line for line in d.log().splitlines()), d.log()[-2000:]
    m = samples(fetch(lab, "/metrics"))
    assert m[("ipshift_address_conflict", (("address", "192.0.2.50"), ("nic", "eth1")))] == 1.0
    assert m[("ipshift_background_conflict_probes_total", ())] >= 2

    lab.fail_nic("eth0")
    st = d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"] and any(
        rec["kind"] == "failover" for rec in s["failovers"]), timeout=3.0, what="192.0.2.10 on eth1, recorded")
    refused = [r for rec in st["failovers"] if rec["kind"] == "failover" for r in rec["refused"]
               if r["address"] == TAKEN]
    assert refused and "conflict" in refused[0]["codes"], json.dumps(st["failovers"], indent=1)
    assert "background probe" in " ".join(refused[0]["reasons"]), refused
    assert not moves_of(st, TAKEN), "refused in planning: no step ran for it"
    wait_until(lambda: holders(lab, TAKEN) == ["eth0"], 1.0, f"{TAKEN} still only on eth0", lambda: holders(lab, TAKEN))


def test_a_conflict_newer_than_the_last_background_probe_undoes_the_move(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle],
        other_host: Callable[[Lab], OtherHost]) -> None:  # noqa: F811 (the fixture)
    lab = make_lab()
    other = other_host(lab)
    d = make_daemon(lab, scouting(every="600s"))  # no second sweep within the test
    d.wait_for(lambda s: (s.get("conflict_check") or {}).get("known", 0) >= 3, timeout=5.0,
               what="the first background sweep")
    lab.run(other.ns, "ip", "addr", "add", TAKEN, "dev", "eth0")  # another host takes it after the sweep
    lab.fail_nic("eth0")
    st = d.wait_for(lambda s: bool(moves_of(s, TAKEN)) and on(s, "192.0.2.10/24") == ["eth1"], timeout=3.0,
                    what=f"the failover record with {TAKEN}")
    m = moves_of(st, TAKEN)[0]
    assert m["conflict_check"].startswith("known") and not m["ok"] and m["conflict"], json.dumps(m, indent=1)
    assert OTHER_MAC in m["error"].lower(), m["error"]
    undone = [s["op"] for s in m["steps"] if s["undo"]]
    assert "DelAddress" in undone, m["steps"]  # moved at once, then undone by the defending probe
    wait_until(lambda: holders(lab, TAKEN) == ["eth0"], 2.0, f"{TAKEN} not on eth1", lambda: holders(lab, TAKEN))
