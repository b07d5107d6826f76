"""`ipshift check --netns` against a real lab gateway (real kernel, namespaces the test builds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from ipshift.lab import Lab


def run_check(gw: str, cfg: dict[str, Any], tmp_path: Path, *extra: str) -> tuple[int, Any, str]:
    f = tmp_path / "ipshift.yaml"
    f.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "ipshift.cli", "check", "-c", str(f), "--netns", gw, *extra],
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    out = json.loads(r.stdout) if "--json" in extra else r.stdout
    return r.returncode, out, r.stderr


def entry(report: Any, nic: str, address: str) -> dict[str, Any]:
    (n,) = [n for n in report["nics"] if n["nic"] == nic]
    (a,) = [a for a in n["addresses"] if a["address"] == address]
    return a  # type: ignore[no-any-return]


def failing(a: dict[str, Any]) -> dict[str, list[str]]:
    return {c["nic"]: [f["code"] for f in c["failures"]] for c in a["refused"]}


@pytest.fixture(scope="module")
def gw_lab(request: pytest.FixtureRequest, netns_ok: None) -> Any:
    from ipshift.lab import unique_prefix

    lab = Lab(unique_prefix("ipsc"), nics=3,
              gw_addrs={"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"], "eth2": ["198.51.100.12/24"]})
    request.addfinalizer(lab.destroy)
    lab.create()
    return lab


BASE: dict[str, Any] = {
    "interfaces": {
        "eth0": {"addresses": ["192.0.2.10/24", "192.0.2.20/24"],
                 "routes": [{"to": "203.0.113.0/24", "via": "192.0.2.1"}]},
        "eth1": {"addresses": ["192.0.2.11/24"]},
        "eth2": {"addresses": ["198.51.100.12/24"]},
    },
}


def copy(cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(cfg))  # type: ignore[no-any-return]


def test_same_subnet_moves_other_subnet_refused(gw_lab: Lab, tmp_path: Path) -> None:
    rc, report, _ = run_check(gw_lab.gateway, BASE, tmp_path, "--json")
    assert rc == 1  # eth2's address has nowhere to go
    a = entry(report, "eth0", "192.0.2.10/24")
    assert a["survivor"] == "eth1" and a["device"] == "eth1"
    ops = [s["op"] for s in a["steps"]]
    assert ops == ["CheckConflict", "AddAddress", "Announce", "SaveRoutes", "DelAddress", "DelNeighbours",
                   "FlushNeighbours", "FlushRouteCache"]
    (n,) = [n for n in report["nics"] if n["nic"] == "eth0"]
    assert [s["op"] for s in n["postlude"]] == ["MoveRoutes", "DemoteRoutes"]  # the route goes with the plan
    assert n["postlude"][0]["routes"][0]["dst"] == "203.0.113.0/24"
    # configured but not yet placed anywhere: planned onto the survivor too, without a delete
    b = entry(report, "eth0", "192.0.2.20/24")
    assert b["survivor"] == "eth1" and "DelAddress" not in [s["op"] for s in b["steps"]]
    c = entry(report, "eth2", "198.51.100.12/24")
    assert c["survivor"] is None
    assert failing(c) == {"eth0": ["same-network", "same-subnet"], "eth1": ["same-network", "same-subnet"]}
    assert report["kernel"] == {"vlan_8021q": False, "macvlan": True}
    # the lab sets arp_ignore/arp_announce; the kernel default for linkdown routes is left: warned
    codes = {(w["nic"], w["code"]) for w in report["warnings"]}
    assert ("eth0", "ignore_routes_with_linkdown") in codes
    assert not any(code in ("arp_ignore", "arp_announce") for _, code in codes)


def test_human_output_lists_steps_and_reasons(gw_lab: Lab, tmp_path: Path) -> None:
    rc, text, _ = run_check(gw_lab.gateway, BASE, tmp_path)
    assert rc == 1
    assert "if eth0 failed now (eth0 is up):" in text
    assert "192.0.2.10/24" in text and "-> eth1" in text
    assert "gratuitous ARP for 192.0.2.10 from eth1" in text
    assert "198.51.100.12/24" in text and "REFUSED: same-network, same-subnet" in text
    assert "result: 1 address(es) would be stranded" in text


def test_vlan_refused_naming_missing_8021q(gw_lab: Lab, tmp_path: Path) -> None:
    cfg = copy(BASE)
    cfg["interfaces"]["eth0"]["addresses"].append({"address": "203.0.113.10/24", "vlan": 100})
    cfg["interfaces"]["eth1"]["addresses"].append({"address": "203.0.113.11/24", "vlan": 100})
    _, report, _ = run_check(gw_lab.gateway, cfg, tmp_path, "--json")
    a = entry(report, "eth0", "203.0.113.10/24")
    assert a["survivor"] is None and failing(a)["eth1"] == ["vlan"]
    reasons = [f["reason"] for c in a["refused"] for f in c["failures"] if c["nic"] == "eth1"]
    assert any("no 802.1Q" in r for r in reasons), reasons


def test_survivor_without_carrier_refused(gw_lab: Lab, tmp_path: Path) -> None:
    cfg = copy(BASE)
    cfg["interfaces"]["eth0"]["backups"] = ["eth1"]
    gw_lab.fail_nic("eth1")
    try:
        _, report, _ = run_check(gw_lab.gateway, cfg, tmp_path, "--json")
    finally:
        gw_lab.restore_nic("eth1")
    a = entry(report, "eth0", "192.0.2.10/24")
    assert a["survivor"] is None and failing(a) == {"eth1": ["survivor-healthy"]}
    assert "no carrier" in a["refused"][0]["failures"][0]["reason"]


def test_max_addresses_reached_refused(gw_lab: Lab, tmp_path: Path) -> None:
    cfg = copy(BASE)
    cfg["interfaces"]["eth1"]["max_addresses"] = 1
    _, report, _ = run_check(gw_lab.gateway, cfg, tmp_path, "--json")
    a = entry(report, "eth0", "192.0.2.10/24")
    assert a["survivor"] is None and failing(a)["eth1"] == ["capacity"]
    (eth1,) = [c for c in a["refused"] if c["nic"] == "eth1"]
    assert "max_addresses is 1" in eth1["failures"][0]["reason"]


def test_mac_move_plans_a_macvlan_with_the_failed_nics_mac(gw_lab: Lab, tmp_path: Path) -> None:
    cfg = copy(BASE)
    cfg["interfaces"]["eth0"]["addresses"][0] = {"address": "192.0.2.10/24", "mac": "move"}
    _, report, _ = run_check(gw_lab.gateway, cfg, tmp_path, "--json")
    a = entry(report, "eth0", "192.0.2.10/24")
    eth0 = [n for n in report["nics"] if n["nic"] == "eth0"][0]
    (mv,) = [s for s in a["steps"] if s["op"] == "AddMacvlan"]
    assert mv["parent"] == "eth1" and mv["mac"] == eth0["link"]["mac"] and a["device"] == mv["name"]


def test_all_addresses_placed_exits_0(gw_lab: Lab, tmp_path: Path) -> None:
    cfg = copy(BASE)
    cfg["interfaces"]["eth2"]["addresses"] = []
    rc, _, _ = run_check(gw_lab.gateway, cfg, tmp_path, "--json")
    assert rc == 0


def test_missing_namespace_is_one_line_exit_2(tmp_path: Path) -> None:
    rc, _, err = run_check("ipsc-does-not-exist", BASE, tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "ipsc-does-not-exist" in err
