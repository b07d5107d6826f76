"""read_snapshot, probe_features, enter_netns and the Lab itself, against real namespaces.

Most readings are in-process (``read_snapshot(netns=...)``: netlink through
``IPRoute(netns=...)``, ``/proc/sys`` from a helper thread inside the
namespace); the ``enter_netns`` path, which moves the whole process, runs in
a child Python.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from ipshift.kernel.snapshot import read_snapshot
from ipshift.lab import Lab, LabError, unique_prefix
from ipshift.model import Route, Snapshot

T = TypeVar("T")


def snap(lab: Lab) -> Snapshot:
    return read_snapshot(netns=lab.gateway)


def wait_for(fn: Callable[[], T | None], timeout: float = 3.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def snap_when(lab: Lab, pred: Callable[[Snapshot], bool], what: str) -> Snapshot:
    """The first snapshot of the gateway for which ``pred`` holds (within 3 s)."""

    def attempt() -> Snapshot | None:
        s = snap(lab)
        return s if pred(s) else None

    return wait_for(attempt, what=what)


def connected(s: Snapshot, ifname: str, net: str = "192.0.2.0/24") -> Route:
    (route,) = [r for r in s.routes if r.ifname == ifname and r.dst == ipaddress.ip_network(net) and r.gateway is None]
    return route


def namespaces() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


# ---------------------------------------------------------------------- links


def test_links_have_carrier(lab: Lab) -> None:
    s = snap(lab)
    for nic in lab.nics:
        link = s.link(nic)
        assert link is not None, nic
        assert (link.admin_up, link.carrier, link.operstate) == (True, True, "UP")
        assert link.healthy and link.is_ethernet
        assert (link.kind, link.mac, link.index) == ("veth", lab.mac_of(nic), lab.ifindex_of(nic))
        assert link.parent is None  # the veth peer lives in the switch namespace
        assert link.vlan_id is None and not link.promisc
    lo = s.link("lo")
    assert lo is not None and lo.link_type == 772 and not lo.is_ethernet


def test_fail_nic_drops_carrier_and_marks_route_linkdown(lab: Lab) -> None:
    assert not connected(snap(lab), "eth0").linkdown
    lab.fail_nic("eth0")
    s = snap_when(lab, lambda x: connected(x, "eth0").linkdown, "linkdown on eth0")
    eth0 = s.link("eth0")
    assert eth0 is not None
    assert eth0.admin_up and not eth0.carrier and not eth0.healthy
    assert eth0.operstate in ("DOWN", "LOWERLAYERDOWN")
    assert not connected(s, "eth1").linkdown
    eth1 = s.link("eth1")
    assert eth1 is not None and eth1.carrier

    lab.restore_nic("eth0")
    s = snap_when(lab, lambda x: not connected(x, "eth0").linkdown, "eth0 back")
    eth0 = s.link("eth0")
    assert eth0 is not None and eth0.carrier


def test_macvlan_parent(lab: Lab) -> None:
    lab.run(lab.gateway, "ip", "link", "add", "link", "eth1", "name", "mv0", "type", "macvlan", "mode", "bridge")
    s = snap(lab)
    mv0 = s.link("mv0")
    assert mv0 is not None and mv0.kind == "macvlan" and mv0.parent == lab.ifindex_of("eth1")
    assert s.children("eth1", "macvlan") == (mv0,)
    assert not mv0.admin_up


# ------------------------------------------------------------------ addresses


def test_primary_and_secondary_addresses(lab: Lab) -> None:
    lab.run(lab.gateway, "ip", "addr", "add", "192.0.2.20/24", "dev", "eth0")
    s = snap(lab)
    (first,) = s.where_is(ipaddress.ip_address("192.0.2.10"))
    (second,) = s.where_is(ipaddress.ip_address("192.0.2.20"))
    assert (first.ifname, first.primary, str(first.interface), first.scope, first.label) == (
        "eth0", True, "192.0.2.10/24", "global", "eth0")  # fmt: skip
    assert (second.ifname, second.primary, str(second.interface)) == ("eth0", False, "192.0.2.20/24")
    (eth1,) = [a for a in s.addresses_on("eth1") if a.interface.version == 4]
    assert eth1.primary and str(eth1.interface) == "192.0.2.11/24"
    lo = [a for a in s.addresses_on("lo") if a.interface.version == 4]
    assert [(str(a.interface), a.scope) for a in lo] == [("127.0.0.1/8", "host")]


def test_ipv6_addresses_and_routes(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(ipv6=True)
    s = snap(lab)
    (a,) = s.where_is(ipaddress.ip_address("2001:db8::10"))
    assert (a.ifname, str(a.interface), a.primary, a.scope, a.tentative, a.dadfailed) == (
        "eth0", "2001:db8::10/64", True, "global", False, False)  # fmt: skip
    link_local = [x for x in s.addresses_on("eth1") if x.scope == "link"]
    assert len(link_local) == 1 and link_local[0].interface.version == 6
    v6 = [r for r in s.routes if r.dst == ipaddress.ip_network("2001:db8::/64")]
    assert sorted(str(r.ifname) for r in v6) == ["eth0", "eth1"]
    assert all(r.proto == "kernel" and r.metric == 256 and r.table == 254 for r in v6)


# --------------------------------------------------------------------- routes


def test_static_and_default_routes(lab: Lab) -> None:
    lab.run(lab.gateway, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1", "proto", "static")
    lab.run(lab.gateway, "ip", "route", "add", "default", "via", "192.0.2.1", "dev", "eth1", "metric", "50")
    lab.run(lab.gateway, "ip", "route", "add", "blackhole", "203.0.113.0/24")
    s = snap(lab)
    (static,) = [r for r in s.routes if r.dst == ipaddress.ip_network("198.51.100.0/24")]
    assert (static.ifname, str(static.gateway), static.proto, static.table, static.scope, static.type) == (
        "eth0", "192.0.2.1", "static", 254, "universe", "unicast")  # fmt: skip
    (default,) = [r for r in s.routes if r.dst == ipaddress.ip_network("0.0.0.0/0")]
    assert (default.ifname, str(default.gateway), default.metric, default.proto) == ("eth1", "192.0.2.1", 50, "boot")
    eth0 = connected(s, "eth0")
    assert (eth0.proto, eth0.scope, str(eth0.src), eth0.linkdown) == ("kernel", "link", "192.0.2.10", False)
    # Nothing of the local table, nothing that is not unicast.
    assert all(r.table == 254 and r.type == "unicast" for r in s.routes)
    assert not [r for r in s.routes if r.dst == ipaddress.ip_network("203.0.113.0/24")]
    assert not [r for r in s.routes if r.dst.prefixlen == 32]


# ----------------------------------------------------------------- neighbours


def test_neighbour_after_ping(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(ipv6=True)
    lab.run(lab.client, "ping", "-c1", "-W2", "192.0.2.10")
    lab.run(lab.client, "ping", "-c1", "-W2", "2001:db8::10")
    lab.run(lab.gateway, "ping", "-c1", "-W0.3", "192.0.2.99", check=False)  # nobody: INCOMPLETE/FAILED
    s = snap(lab)
    by_ip = {str(n.ip): n for n in s.neighbours}
    for ip in ("192.0.2.100", "2001:db8::100"):
        n = by_ip[ip]
        assert (n.ifname, n.mac) == ("eth0", lab.client_mac), n
        assert n.state in ("REACHABLE", "STALE", "DELAY", "PROBE"), n
    ghost = by_ip["192.0.2.99"]
    assert ghost.mac is None and ghost.state in ("INCOMPLETE", "FAILED"), ghost
    # The kernel's NOARP entries for multicast groups are left out.
    assert not [n for n in s.neighbours if n.ip.is_multicast or n.state == "NOARP"]


# -------------------------------------------------------------------- sysctls


def test_sysctls_as_the_lab_set_them(lab: Lab) -> None:
    s = snap(lab)
    for nic in lab.nics:
        c = s.sysctl(nic)
        assert (c.arp_ignore, c.arp_announce, c.promote_secondaries, c.ignore_routes_with_linkdown) == (1, 2, 0, 0)
        assert (c.disable_ipv6, c.accept_dad) == (0, 1)
    assert s.sysctl("nosuchnic").arp_ignore is None


def test_sysctls_effective_rules(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(promote_secondaries=True)
    lab.run(lab.gateway, "sysctl", "-q", "-w",
            "net.ipv4.conf.all.arp_ignore=2",             # max(all=2, eth0=1) -> 2
            "net.ipv4.conf.eth1.arp_announce=1",          # max(all=2, eth1=1) -> 2
            "net.ipv4.conf.eth1.promote_secondaries=0",   # all=1 or eth1=0 -> 1
            "net.ipv4.conf.eth0.ignore_routes_with_linkdown=1",  # all=0 or eth0=1 -> 1
            "net.ipv6.conf.eth1.disable_ipv6=1")  # fmt: skip
    s = snap(lab)
    eth0, eth1 = s.sysctl("eth0"), s.sysctl("eth1")
    assert (eth0.arp_ignore, eth0.arp_announce, eth0.promote_secondaries, eth0.ignore_routes_with_linkdown) == (2, 2, 1, 1)
    assert (eth1.arp_ignore, eth1.arp_announce, eth1.promote_secondaries, eth1.ignore_routes_with_linkdown) == (2, 2, 1, 0)
    assert (eth0.disable_ipv6, eth1.disable_ipv6) == (0, 1)


# ------------------------------------------------------------------- features


def _kind_creatable(lab: Lab, *args: str) -> bool:
    """Ground truth: can a real link of this kind be made (in the lab's gateway)?"""
    r = lab.run(lab.gateway, "ip", "link", "add", *args, check=False)
    if r.returncode == 0:
        lab.run(lab.gateway, "ip", "link", "del", args[args.index("name") + 1])
    return r.returncode == 0


def test_features_match_what_the_kernel_does(lab: Lab) -> None:
    features = snap(lab).features
    vlan = _kind_creatable(lab, "link", "eth0", "name", "eth0.5", "type", "vlan", "id", "5")
    macvlan = _kind_creatable(lab, "link", "eth0", "name", "mvp", "type", "macvlan")
    assert (features.vlan_8021q, features.macvlan, features.ipv6) == (vlan, macvlan, True)
    # The probe leaves nothing behind.
    assert {link.name for link in snap(lab).links} == {"lo", *lab.nics}


# ---------------------------------------------------------------- enter_netns

SNAPSHOT_SCRIPT = """
import json, sys
from ipshift.kernel.netns import enter_netns
from ipshift.kernel.snapshot import read_snapshot
enter_netns(sys.argv[1])
s = read_snapshot()
print(json.dumps({
    "links": {l.name: [l.index, l.mac, l.carrier] for l in s.links},
    "addresses": sorted(f"{a.ifname} {a.interface} {a.primary}" for a in s.addresses),
    "routes": sorted(f"{r.dst} {r.ifname} {r.gateway} {r.proto} {r.linkdown}" for r in s.routes),
    "sysctls": {k: [v.arp_ignore, v.arp_announce] for k, v in s.sysctls.items()},
    "features": [s.features.vlan_8021q, s.features.macvlan, s.features.ipv6],
}))
"""


def test_enter_netns_then_read_snapshot(lab: Lab) -> None:
    lab.run(lab.gateway, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1", "proto", "static")
    lab.fail_nic("eth1")
    snap_when(lab, lambda x: connected(x, "eth1").linkdown, "linkdown on eth1")
    r = subprocess.run([sys.executable, "-c", SNAPSHOT_SCRIPT, lab.gateway], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    child = json.loads(r.stdout)
    here = snap(lab)
    assert child["links"] == {l.name: [l.index, l.mac, l.carrier] for l in here.links}
    assert child["links"]["eth1"] == [lab.ifindex_of("eth1"), lab.mac_of("eth1"), False]
    assert "198.51.100.0/24 eth0 192.0.2.1 static False" in child["routes"]
    assert "192.0.2.0/24 eth1 None kernel True" in child["routes"]
    assert child["sysctls"]["eth0"] == [1, 2]
    assert child["features"] == [here.features.vlan_8021q, here.features.macvlan, True]


ERRORS_SCRIPT = """
import json, sys, threading
from ipshift.kernel.netns import NetnsError, enter_netns
out = {}
for name in (sys.argv[1], "a/b", ""):
    try:
        enter_netns(name)
        out[name] = "entered"
    except NetnsError as e:
        out[name] = str(e)
stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
try:
    enter_netns(sys.argv[2])
    out["thread"] = "entered"
except NetnsError as e:
    out["thread"] = str(e)
stop.set()
t.join()
print(json.dumps(out))
"""


def test_enter_netns_refuses(lab: Lab) -> None:
    missing = lab.prefix + "nosuch"
    r = subprocess.run([sys.executable, "-c", ERRORS_SCRIPT, missing, lab.gateway],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "does not exist" in out[missing] and missing in out[missing]
    assert "invalid" in out["a/b"] and "invalid" in out[""]
    assert "thread" in out["thread"] and out["thread"] != "entered"
    assert missing not in namespaces()  # flags=0: nothing created


# ------------------------------------------------------------------------ Lab


def test_lab_paths(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nics=3)
    for ip in ("192.0.2.10", "192.0.2.11", "192.0.2.12"):
        lab.run(lab.client, "ping", "-c1", "-W1", ip)  # ready at once: no lost first packet
    lab.detach_nic("eth0")
    assert lab.run(lab.client, "ping", "-c1", "-W0.3", "192.0.2.10", check=False).returncode != 0
    eth0 = snap(lab).link("eth0")
    assert eth0 is not None and eth0.carrier  # path lost, carrier kept
    lab.attach_nic("eth0")
    lab.run(lab.client, "ping", "-c1", "-W2", "192.0.2.10")
    assert lab.peer_of("eth2") == "gw2"
    with pytest.raises(ValueError):
        lab.peer_of("eth3")


def test_lab_names_and_timing(netns_ok: None) -> None:
    lab = Lab(unique_prefix("ipsk"))
    assert not lab.created and lab.switch not in namespaces()  # the constructor does nothing
    try:
        t = time.perf_counter()
        lab.create()
        elapsed = time.perf_counter() - t
        assert set(lab.namespaces) <= namespaces()
        assert (lab.switch, lab.gateway, lab.client) == (f"{lab.prefix}sw", f"{lab.prefix}gw", f"{lab.prefix}cl")
        assert elapsed < 3.0, f"Lab.create() took {elapsed:.3f} s"
    finally:
        lab.destroy()
    assert not set(lab.namespaces) & namespaces()
    lab.destroy()  # idempotent


def test_destroy_after_half_built_lab(netns_ok: None) -> None:
    lab = Lab(unique_prefix("ipsk"), gw_addrs={"eth0": ["192.0.2.300/24"]})
    with pytest.raises(LabError, match="batch"):
        lab.create()
    assert not {n for n in namespaces() if n.startswith(lab.prefix)}
    lab.destroy()


def test_destroy_keeps_namespaces_it_did_not_make(netns_ok: None) -> None:
    lab = Lab(unique_prefix("ipsk"))
    subprocess.run(["ip", "netns", "add", lab.client], check=True)  # a name clash on the last namespace
    try:
        with pytest.raises(LabError, match="netns add"):
            lab.create()
        left = {n for n in namespaces() if n.startswith(lab.prefix)}
        assert left == {lab.client}
    finally:
        subprocess.run(["ip", "netns", "del", lab.client])
    assert not {n for n in namespaces() if n.startswith(lab.prefix)}


def test_destroy_ends_popen_processes(lab: Lab) -> None:
    proc = lab.popen(lab.gateway, "sleep", "60")
    lab.destroy()
    assert proc.poll() is not None
    assert not set(lab.namespaces) & namespaces()


def test_context_manager(netns_ok: None) -> None:
    with Lab(unique_prefix("ipsk"), nics=1) as lab:
        assert lab.nics == ("eth0",)
        assert lab.gateway in namespaces()
        names = lab.namespaces
    assert not set(names) & namespaces()


def test_unique_prefix() -> None:
    a, b = unique_prefix("ipsk"), unique_prefix("ipsk")
    assert a != b and a.startswith("ipsk") and len(a) <= 12


def test_lab_with_physical_nic_carrier_delay(make_lab: Callable[..., Lab]) -> None:
    # Same ifindex on both veth ends: linkwatch batches carrier changes (<= 1 s),
    # and create() waits for that before returning.
    lab = make_lab(urgent_carrier=False)
    assert lab.peer_ifindex_of("eth1") == lab.ifindex_of("eth1") == 11
    lab.run(lab.client, "ping", "-c1", "-W1", "192.0.2.11")
    lab.fail_nic("eth1")
    s = snap_when(lab, lambda x: connected(x, "eth1").linkdown, "linkdown on eth1")
    eth1 = s.link("eth1")
    assert eth1 is not None and not eth1.carrier


def test_route_dump_of_one_table_and_device_leaves_out_the_rest(lab: Lab) -> None:
    """``batch.dump_routes``: the kernel filters by table and device; the local table's thousands
    of routes (one per address) and other tables stay out."""
    from ipshift.kernel import batch as nb
    from ipshift.kernel.netns import call_in_netns
    from ipshift.kernel.snapshot import routes_from_msg

    script = "".join(f"addr add 198.18.0.{i}/16 dev eth1\n" for i in range(1, 201))
    script += "route add 198.51.100.0/24 via 192.0.2.1 dev eth0\n"
    script += "route add 203.0.113.0/24 via 192.0.2.1 dev eth0 table 100\n"
    script += "route add 203.0.113.0/25 via 192.0.2.1 dev eth1\n"
    subprocess.run(["ip", "-n", lab.gateway, "-batch", "-"], input=script, text=True, check=True)
    idx = lab.ifindex_of("eth0")
    msgs = call_in_netns(lab.gateway, lambda: nb.dump_routes(2, 254, idx))
    names = {idx: "eth0"}
    got = sorted(str(r.dst) for m in msgs for r in routes_from_msg(m, names))
    assert got == ["192.0.2.0/24", "198.51.100.0/24"]
    assert len(msgs) == 2  # filtered by the kernel, not after decoding
    msgs = call_in_netns(lab.gateway, lambda: nb.dump_routes(2, 100, idx))
    assert sorted(str(r.dst) for m in msgs for r in routes_from_msg(m, names, table=100)) == ["203.0.113.0/24"]


def test_snapshot_routes_filtered_by_the_kernel_match_the_plain_dump(lab: Lab) -> None:
    from ipshift.kernel.snapshot import _with_ipr, read_links, read_routes

    script = "".join(f"addr add 198.18.0.{i}/16 dev eth1\n" for i in range(1, 101))
    script += "route add 198.51.100.0/24 via 192.0.2.1 dev eth0 metric 5\n"
    script += "route add 203.0.113.0/24 via 192.0.2.1 dev eth0 table 100\n"
    script += "addr add 2001:db8::10/64 dev eth0 nodad\nroute add 2001:db8:1::/48 via 2001:db8::1 dev eth0\n"
    subprocess.run(["ip", "-n", lab.gateway, "-batch", "-"], input=script, text=True, check=True)
    filtered = read_snapshot(netns=lab.gateway).routes
    plain = _with_ipr(lab.gateway, lambda ipr: read_routes(ipr, read_links(ipr)))
    assert sorted(map(repr, filtered)) == sorted(map(repr, plain))
    dsts = {str(r.dst) for r in filtered}
    assert {"198.51.100.0/24", "2001:db8:1::/48", "198.18.0.0/16"} <= dsts and "203.0.113.0/24" not in dsts
