"""Many addresses at once: the phase-batched path (one netlink batch per kind of step)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from labtools import DaemonHandle

from ipshift.lab import Lab

N = 100
ADDRS = [f"203.0.113.{i}/24" for i in range(10, 10 + N)]
ROUTES = [{"to": f"198.51.100.{i}/32", "via": "203.0.113.1"} for i in range(N // 10)]


def config() -> dict[str, Any]:
    return {
        "interfaces": {
            "eth0": {"addresses": ["203.0.113.2/24", *ADDRS], "routes": ROUTES},
            "eth1": {"addresses": ["203.0.113.3/24"]},
        },
        "announce": {"count": 2, "interval": "50ms", "verify_rounds": 1},
        "failback": {"mode": "manual"},
        "conflict_check": {"enabled": True, "timeout": "50ms"},
    }


def where(lab: Lab) -> dict[str, list[str]]:
    data = json.loads(lab.run(lab.gateway, "ip", "-j", "-4", "addr", "show").stdout)
    out: dict[str, list[str]] = {}
    for d in data:
        for a in d.get("addr_info", []):
            out.setdefault(f"{a['local']}/{a['prefixlen']}", []).append(d["ifname"])
    return out


def test_a_hundred_addresses_and_their_routes_move_in_batches(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(gw_addrs={"eth0": ["203.0.113.2/24"], "eth1": ["203.0.113.3/24"]},
                   client_addrs=["203.0.113.200/24"])
    cfg = config()
    cfg["conflict_check"]["background"] = None  # every move probes at failure (strict)
    d = make_daemon(lab, cfg)
    d.wait_for(lambda s: all(s["addresses"][a]["on"] == ["eth0"] for a in ADDRS), timeout=10, what="placement")
    lab.run(lab.client, "ip", "addr", "add", "203.0.113.77/24", "dev", "eth0")  # someone else takes one
    lab.fail_nic("eth0")
    st = d.wait_for(lambda s: any(r["kind"] == "failover" for r in s["failovers"]), timeout=10, what="failover")
    rec = [r for r in st["failovers"] if r["kind"] == "failover"][0]
    here = where(lab)
    moved = [a for a in ADDRS + ["203.0.113.2/24"] if here.get(a) == ["eth1"]]
    assert len(moved) == N + 1 - 1, (len(moved), rec["nic_steps"])
    assert here["203.0.113.77/24"] == ["eth0"]  # the conflicting one stayed where it was
    (bad,) = [m for m in rec["moves"] if not m["ok"]]
    assert bad["address"] == "203.0.113.77/24" and lab.client_mac in bad["error"]
    assert all(len(devs) == 1 for a, devs in here.items() if a.startswith("203.0.113.") and a != "203.0.113.77/24"
               and a != "203.0.113.200/24")
    routes = json.loads(lab.run(lab.gateway, "ip", "-j", "route", "show", "proto", "static").stdout)
    assert sorted(r["dst"] for r in routes if r["dev"] == "eth1") == sorted(r["to"].split("/")[0] for r in ROUTES)
    # one batch per kind of step: every move records its own steps, and the steps of one kind share
    # the batch's start and duration
    ok = [m for m in rec["moves"] if m["ok"]]
    assert all({"CheckConflict", "DelAddress", "AddAddress", "Announce"} <= {s["op"] for s in m["steps"]}
               for m in ok)
    for op in ("CheckConflict", "AddAddress", "Announce", "SaveRoutes", "DelAddress"):
        batches = {(s["at_ms"], s["ms"]) for m in rec["moves"] for s in m["steps"] if s["op"] == op and not s["undo"]}
        assert len(batches) == 1, (op, batches)
    # the routes move with the plan, in one step, after the addresses
    assert [s["op"] for s in rec["nic_steps"]] == ["MoveRoutes", "DemoteRoutes"]
    assert lab.run(lab.client, "ping", "-c", "1", "-W", "1", "203.0.113.50", check=False).returncode == 0


def test_a_hundred_addresses_known_clear_move_at_once_in_batches(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(gw_addrs={"eth0": ["203.0.113.2/24"], "eth1": ["203.0.113.3/24"]},
                   client_addrs=["203.0.113.200/24"])
    cfg = config()
    cfg["conflict_check"]["background"] = {"max_rate": 1000}
    d = make_daemon(lab, cfg)
    d.wait_for(lambda s: all(s["addresses"][a]["on"] == ["eth0"] for a in ADDRS), timeout=10, what="placement")
    d.wait_for(lambda s: s["conflict_check"]["known"] >= N + 2, timeout=10, what="the first background sweep")
    lab.fail_nic("eth0")
    st = d.wait_for(lambda s: any(r["kind"] == "failover" for r in s["failovers"]), timeout=10, what="failover")
    rec = [r for r in st["failovers"] if r["kind"] == "failover"][0]
    assert all(m["ok"] and m["conflict_check"].startswith("known") for m in rec["moves"]), rec["moves"][:3]
    here = where(lab)
    assert all(here.get(a) == ["eth1"] for a in ADDRS), here
    for op in ("AddAddress", "Announce", "CheckConflict", "SaveRoutes", "DelAddress"):
        batches = {(s["at_ms"], s["ms"]) for m in rec["moves"] for s in m["steps"] if s["op"] == op and not s["undo"]}
        assert len(batches) == 1, (op, batches)
    first = {s["op"]: s["at_ms"] for s in rec["moves"][0]["steps"]}
    assert first["AddAddress"] < first["Announce"] < first["CheckConflict"], rec["moves"][0]["steps"]
