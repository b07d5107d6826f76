"""The daemon's re-read (addresses and routes from the netlink bytes, ipshift.kernel.rawdump) gives
the values pyroute2's decoder gives for the same kernel state."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from typing import Any

from ipshift.kernel.snapshot import _with_ipr, read_addresses, read_links, read_routes, read_snapshot
from ipshift.lab import Lab
from ipshift.model import Snapshot


def test_raw_addresses_and_routes_match_the_pyroute2_reading(lab: Lab) -> None:
    script = "".join(f"addr add 198.18.0.{i}/16 dev eth1\n" for i in range(1, 51))  # secondaries too
    script += "addr add 203.0.113.7/24 dev eth0 label eth0:svc\n"
    script += "addr add 198.51.100.9/32 dev eth0 scope host\n"
    script += "addr add 2001:db8::10/64 dev eth0 nodad\naddr add 2001:db8:0:1::10/64 dev eth1\n"
    script += "route add 198.51.100.0/24 via 192.0.2.1 dev eth0 metric 5 proto boot\n"
    script += "route add 203.0.113.128/25 dev eth0 scope link src 203.0.113.7\n"
    script += "route add 198.19.0.0/16 nexthop via 192.0.2.1 dev eth0 nexthop via 192.0.2.2 dev eth1\n"
    script += "route add 2001:db8:1::/48 via 2001:db8::1 dev eth0\n"
    script += "route add 192.0.2.128/25 via 192.0.2.1 dev eth0 table 100\n"
    subprocess.run(["ip", "-n", lab.gateway, "-batch", "-"], input=script, text=True, check=True)
    lab.fail_nic("eth1")  # linkdown routes
    raw = read_snapshot(netns=lab.gateway)

    def plain(ipr: Any) -> Snapshot:
        links = read_links(ipr)
        return Snapshot(links, read_addresses(ipr, links), read_routes(ipr, links))

    decoded = _with_ipr(lab.gateway, plain)
    assert sorted(map(repr, raw.addresses)) == sorted(map(repr, decoded.addresses))
    assert sorted(map(repr, raw.routes)) == sorted(map(repr, decoded.routes))
    got = {(str(r.dst), r.ifname, r.linkdown) for r in raw.routes}
    assert ("198.19.0.0/16", "eth1", True) in got and ("198.19.0.0/16", "eth0", False) in got
    assert any(a.label == "eth0:svc" for a in raw.addresses) and any(not a.primary for a in raw.addresses)
    assert "192.0.2.128/25" not in {str(r.dst) for r in raw.routes}  # another table


def test_routes_moved_in_one_batch_keep_every_attribute(lab: Lab) -> None:
    import asyncio

    from ipshift.kernel.batch import NetlinkBatch
    from ipshift.kernel.netns import call_in_netns
    from ipshift.kernel.withdraw import Withdrawn

    script = "route add 198.51.100.0/24 via 192.0.2.1 dev eth0 metric 7 proto boot\n"
    script += "route add 203.0.113.0/25 via 192.0.2.1 dev eth0 src 192.0.2.10\n"
    script += "route add 198.19.0.0/16 dev eth0 scope link\n"
    subprocess.run(["ip", "-n", lab.gateway, "-batch", "-"], input=script, text=True, check=True)
    before = read_snapshot(netns=lab.gateway)
    moving = [r for r in before.routes if r.ifname == "eth0" and r.proto != "kernel"]
    assert len(moving) == 3
    ledger = Withdrawn()

    def move() -> list[str]:
        batch = NetlinkBatch()
        try:
            return asyncio.run(ledger.move(None, "eth0", lab.ifindex_of("eth0"), "eth1", lab.ifindex_of("eth1"),
                                           moving, batch))
        finally:
            batch.close()

    assert call_in_netns(lab.gateway, move) == ["", "", ""]
    after = read_snapshot(netns=lab.gateway)
    assert not [r for r in after.routes if r.ifname == "eth0" and r.proto != "kernel"]
    moved = sorted(repr(r) for r in after.routes if r.ifname == "eth1" and r.proto != "kernel")
    assert moved == sorted(repr(replace(r, ifname="eth1")) for r in moving)
    assert sorted(map(repr, ledger.moved["eth0"])) == moved
    # again: the adds find them there (EEXIST is done), nothing is copied twice
    assert call_in_netns(lab.gateway, move) == ["", "", ""] and len(ledger.moved["eth0"]) == 3


def test_routes_of_one_device_from_the_bytes_match_pyroute2(lab: Lab) -> None:
    from ipshift.kernel import batch as nb
    from ipshift.kernel import rawdump
    from ipshift.kernel.convert import routes_from_msg
    from ipshift.kernel.netns import call_in_netns

    script = "route add 198.51.100.0/24 via 192.0.2.1 dev eth0 metric 7\nroute add 203.0.113.0/24 via 192.0.2.1 dev eth1\n"
    subprocess.run(["ip", "-n", lab.gateway, "-batch", "-"], input=script, text=True, check=True)
    idx = lab.ifindex_of("eth0")
    names = {idx: "eth0"}
    raw = call_in_netns(lab.gateway, lambda: rawdump.routes(names, 254, idx))
    msgs = call_in_netns(lab.gateway, lambda: [m for f in (2, 10) for m in nb.dump_routes(f, 254, idx)])
    assert sorted(map(repr, raw)) == sorted(repr(r) for m in msgs for r in routes_from_msg(m, names))
    assert {str(r.dst) for r in raw} >= {"198.51.100.0/24", "192.0.2.0/24"} and "203.0.113.0/24" not in {
        str(r.dst) for r in raw}


def test_a_reread_reuses_the_addresses_the_kernel_sends_alike(lab: Lab) -> None:
    first = {(a.ifname, a.ip): a for a in read_snapshot(netns=lab.gateway).addresses}
    lab.run(lab.gateway, "ip", "addr", "add", "198.18.0.9/16", "dev", "eth1")
    lab.run(lab.gateway, "ip", "addr", "del", "192.0.2.11/24", "dev", "eth1")
    lab.run(lab.gateway, "ip", "addr", "add", "192.0.2.11/25", "dev", "eth1")
    again = {(a.ifname, a.ip): a for a in read_snapshot(netns=lab.gateway).addresses}
    same = [k for k in first if k in again and again[k] is first[k]]
    assert same and all(again[k] == first[k] for k in first if k in again and k[1].version == 4
                        and str(k[1]) != "192.0.2.11")
    changed = [a for k, a in again.items() if str(k[1]) == "192.0.2.11"]
    assert changed and changed[0].interface.network.prefixlen == 25 and changed[0] is not first[("eth1", changed[0].ip)]
    assert any(str(k[1]) == "198.18.0.9" for k in again)
