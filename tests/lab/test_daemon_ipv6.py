"""IPv6 parity: an IPv6 address fails over like an IPv4 one (real kernel, real packets)."""

from __future__ import annotations

import json
import time  # noqa: F401
from collections.abc import Callable
from pathlib import Path

from failover_kit import Capture, holders, on
from labtools import DaemonHandle
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import Ether

from ipshift.lab import Lab

V6 = "2001:db8::10/64"


def v6_config() -> dict[str, object]:
    return {
        "interfaces": {
            "eth0": {"addresses": ["192.0.2.10/24", V6]},
            "eth1": {"addresses": ["192.0.2.11/24", "2001:db8::11/64"]},
        },
        "announce": {"count": 2, "interval": "50ms"},
        "failback": {"mode": "manual"},
        "conflict_check": {"enabled": True, "timeout": "50ms"},
    }


def test_ipv6_address_moves_with_unsolicited_na_and_ping6_resumes(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle], tmp_path: Path) -> None:
    lab = make_lab(ipv6=True)
    d = make_daemon(lab, v6_config())
    assert lab.run(lab.client, "ping", "-6", "-c", "1", "-W", "2", "2001:db8::10", check=False).returncode == 0
    cap = Capture(lab, lab.peer_of("eth1"), tmp_path / "na.pcap", "icmp6")
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, V6) == ["eth1"], timeout=2.0, what="the IPv6 address on eth1")
    assert holders(lab, V6) == ["eth1"]
    time.sleep(0.2)
    frames = cap.frames()
    nas = [f for f in frames if ICMPv6ND_NA in f and f[ICMPv6ND_NA].tgt == "2001:db8::10"]
    assert len(nas) == 2, [f.summary() for f in frames]
    for f in nas:
        assert f[Ether].src == lab.mac_of("eth1") and f[IPv6].dst == "ff02::1" and f[IPv6].hlim == 255
        assert f[ICMPv6ND_NA].O == 1 and f[ICMPv6ND_NA].S == 0
        assert f[ICMPv6NDOptDstLLAddr].lladdr == lab.mac_of("eth1")
    # usable at once (nodad after ipshift's own DAD), and the client follows
    flags = json.loads(lab.run(lab.gateway, "ip", "-j", "-6", "addr", "show", "dev", "eth1").stdout)
    info = [a for a in flags[0]["addr_info"] if a["local"] == "2001:db8::10"][0]
    assert not info.get("tentative") and not info.get("dadfailed")
    assert lab.run(lab.client, "ping", "-6", "-c", "1", "-W", "2", "2001:db8::10", check=False).returncode == 0
    neigh = json.loads(lab.run(lab.client, "ip", "-j", "-6", "neigh", "show", "2001:db8::10").stdout)
    assert neigh[0]["lladdr"] == lab.mac_of("eth1")
    # link-local addresses never move
    assert any(a["local"].startswith("fe80") for a in
               json.loads(lab.run(lab.gateway, "ip", "-j", "-6", "addr", "show", "dev", "eth0").stdout)[0]["addr_info"])


def test_dad_conflict_blocks_the_ipv6_move(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(ipv6=True)
    cfg = v6_config()
    cfg["interfaces"]["eth0"]["addresses"].append("2001:db8::50/64")  # type: ignore[index]
    d = make_daemon(lab, cfg)
    d.wait_for(lambda s: on(s, "2001:db8::50/64") == ["eth0"], timeout=2.0)
    # the client starts using 2001:db8::50 too (nodad: it just takes it, and answers DAD probes for it)
    lab.run(lab.client, "ip", "addr", "add", "2001:db8::50/64", "dev", "eth0", "nodad")
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, V6) == ["eth1"], timeout=2.0)
    st = d.wait_for(lambda s: any(m["address"] == "2001:db8::50/64" and not m["ok"]
                                  for r in s["failovers"] for m in r["moves"]), timeout=2.0)
    bad = [m for r in st["failovers"] if r["kind"] == "failover" for m in r["moves"]
           if m["address"] == "2001:db8::50/64"]
    assert len(bad) == 1, (st["failovers"], d.log()[-3000:])
    bad = bad[0]
    assert lab.client_mac in bad["error"]
    assert holders(lab, "2001:db8::50/64") == ["eth0"]  # not claimed on eth1: it stays where it was
