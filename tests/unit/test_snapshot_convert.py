"""The pure netlink-message conversions of ipshift.kernel.snapshot (and the feature probe's decision).

The messages in ``tests/data/snapshot_msgs.json`` were recorded from a lab
gateway with pyroute2 0.9.7 (headers and bulky attributes such as
statistics dropped). To record them again, as root::

    .venv/bin/python tests/unit/test_snapshot_convert.py --record

The lab for the recording: 3 NICs with IPv4 and IPv6, a secondary
192.0.2.20/24 on eth0, eth1 failed (carrier lost), eth2 promiscuous with a
macvlan ``mv0`` on it, static, default, multipath, blackhole and IPv6 default
routes, a permanent neighbour, neighbours learnt from the client's pings and
an unanswered one (192.0.2.99).
"""

from __future__ import annotations

import copy
import errno
import ipaddress
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.exceptions import NetlinkError

from ipshift.kernel.features import link_kind_supported
from ipshift.kernel.snapshot import (
    address_from_msg,
    effective_sysctls,
    link_from_msg,
    neighbour_from_msg,
    nla,
    read_addresses,
    read_links,
    read_neighbours,
    read_routes,
    routes_from_msg,
)
from ipshift.model import Link, LinkSysctls, Route

DATA = Path(__file__).resolve().parent.parent / "data" / "snapshot_msgs.json"

Msg = dict[str, Any]


@pytest.fixture(scope="module")
def msgs() -> dict[str, list[Msg]]:
    return json.loads(DATA.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def links(msgs: dict[str, list[Msg]]) -> dict[str, Link]:
    return {link.name: link for link in (link_from_msg(m) for m in msgs["links"])}


@pytest.fixture(scope="module")
def ifnames(links: dict[str, Link]) -> dict[int, str]:
    return {link.index: link.name for link in links.values()}


def one(items: list[Msg], **match: Any) -> Msg:
    """The one recorded message whose header fields / attributes equal ``match``."""
    found = [m for m in items if all(m.get(k, nla(m, k)) == v for k, v in match.items())]
    assert len(found) == 1, (match, len(found))
    return copy.deepcopy(found[0])


# ---------------------------------------------------------------------- links


def test_links_recorded(links: dict[str, Link]) -> None:
    assert set(links) == {"lo", "eth0", "eth1", "eth2", "mv0"}
    eth0 = links["eth0"]
    assert eth0 == Link(name="eth0", index=10, mac="02:1b:00:00:00:10", admin_up=True, carrier=True,
                        operstate="UP", kind="veth", mtu=1500, link_type=1, parent=None, vlan_id=None,
                        promisc=False)  # fmt: skip
    assert eth0.healthy and eth0.is_ethernet


def test_failed_nic_link(links: dict[str, Link]) -> None:
    eth1 = links["eth1"]
    assert (eth1.admin_up, eth1.carrier, eth1.operstate, eth1.healthy) == (True, False, "DOWN", False)


def test_macvlan_and_promisc(links: dict[str, Link]) -> None:
    mv0, eth2 = links["mv0"], links["eth2"]
    assert (mv0.kind, mv0.parent, mv0.mac, mv0.admin_up) == ("macvlan", eth2.index, "02:1b:00:00:02:00", True)
    assert eth2.promisc and not links["eth0"].promisc


def test_loopback(links: dict[str, Link]) -> None:
    lo = links["lo"]
    assert (lo.link_type, lo.kind, lo.mtu, lo.operstate, lo.is_ethernet) == (772, "", 65536, "UNKNOWN", False)


def test_veth_peer_in_other_namespace_is_no_parent(msgs: dict[str, list[Msg]]) -> None:
    m = one(msgs["links"], IFLA_IFNAME="eth0")
    assert nla(m, "IFLA_LINK") is not None and nla(m, "IFLA_LINK_NETNSID") is not None
    assert link_from_msg(m).parent is None
    m["attrs"] = [a for a in m["attrs"] if a[0] != "IFLA_LINK_NETNSID"]  # peer in the same namespace
    assert link_from_msg(m).parent == nla(m, "IFLA_LINK")


def test_vlan_link_hand_made() -> None:
    # This kernel has no 802.1Q, so this message is written by hand, in the
    # shape pyroute2 gives: IFLA_LINKINFO / IFLA_INFO_DATA / IFLA_VLAN_ID.
    m: Msg = {
        "index": 7, "flags": 0x1 | 0x10000 | 0x1000 | 0x2, "ifi_type": 1, "family": 0,
        "attrs": [
            ["IFLA_IFNAME", "eth0.100"], ["IFLA_OPERSTATE", "UP"], ["IFLA_MTU", 1500],
            ["IFLA_ADDRESS", "02:1B:00:00:00:10"], ["IFLA_LINK", 2],
            ["IFLA_LINKINFO", {"attrs": [
                ["IFLA_INFO_KIND", "vlan"],
                ["IFLA_INFO_DATA", {"attrs": [["IFLA_VLAN_PROTOCOL", 33024], ["IFLA_VLAN_ID", 100]]}],
            ]}],
        ],
    }  # fmt: skip
    link = link_from_msg(m)
    assert (link.kind, link.vlan_id, link.parent, link.mac, link.carrier) == ("vlan", 100, 2, "02:1b:00:00:00:10", True)


def test_link_odd_values() -> None:
    m: Msg = {"index": 3, "flags": 0, "ifi_type": 65534, "attrs": [["IFLA_IFNAME", "tun0"], ["IFLA_OPERSTATE", 2]]}
    link = link_from_msg(m)
    assert (link.mac, link.operstate, link.mtu, link.kind, link.is_ethernet) == ("", "DOWN", 1500, "", False)
    m["attrs"].append(["IFLA_LINK", 3])  # IFLA_LINK naming the link itself is no parent
    assert link_from_msg(m).parent is None


# ------------------------------------------------------------------ addresses


def test_primary_and_secondary(msgs: dict[str, list[Msg]], ifnames: dict[int, str]) -> None:
    first = address_from_msg(one(msgs["addresses"], IFA_LOCAL="192.0.2.10"), ifnames)
    second = address_from_msg(one(msgs["addresses"], IFA_LOCAL="192.0.2.20"), ifnames)
    assert first is not None and second is not None
    assert (first.ifname, str(first.interface), first.primary, first.scope, first.label) == (
        "eth0", "192.0.2.10/24", True, "global", "eth0")  # fmt: skip
    assert (second.ifname, str(second.interface), second.primary) == ("eth0", "192.0.2.20/24", False)


def test_ipv6_addresses(msgs: dict[str, list[Msg]], ifnames: dict[int, str]) -> None:
    glob = address_from_msg(one(msgs["addresses"], IFA_ADDRESS="2001:db8::10"), ifnames)
    assert glob is not None
    assert (glob.ifname, str(glob.interface), glob.primary, glob.scope, glob.tentative, glob.label) == (
        "eth0", "2001:db8::10/64", True, "global", False, "")  # fmt: skip
    ll = [a for a in (address_from_msg(m, ifnames) for m in msgs["addresses"]) if a and a.scope == "link"]
    assert {a.ifname for a in ll} >= {"eth0", "eth2"}
    assert all(a.interface.version == 6 and a.interface.network == ipaddress.ip_network("fe80::/64") for a in ll)


def test_ifa_flags_attribute_wins_over_header(msgs: dict[str, list[Msg]], ifnames: dict[int, str]) -> None:
    m = one(msgs["addresses"], IFA_ADDRESS="2001:db8::10")
    m["flags"] = 0x80
    m["attrs"] = [a for a in m["attrs"] if a[0] != "IFA_FLAGS"] + [["IFA_FLAGS", 0x80 | 0x40 | 0x08 | 0x01]]
    a = address_from_msg(m, ifnames)
    assert a is not None and (a.tentative, a.dadfailed, a.primary) == (True, True, True)  # 0x01 is "temporary" in v6
    m["attrs"] = [a for a in m["attrs"] if a[0] != "IFA_FLAGS"]
    a = address_from_msg(m, ifnames)
    assert a is not None and (a.tentative, a.dadfailed) == (False, False)


def test_address_on_unknown_link_is_left_out(msgs: dict[str, list[Msg]]) -> None:
    assert address_from_msg(one(msgs["addresses"], IFA_LOCAL="192.0.2.10"), {}) is None


def test_read_addresses(msgs: dict[str, list[Msg]], links: dict[str, Link]) -> None:
    got = read_addresses(FakeIPRoute(msgs), links.values())
    assert len(got) == len(msgs["addresses"])
    assert {str(a.interface) for a in got if a.ifname == "lo"} == {"127.0.0.1/8", "::1/128"}


# --------------------------------------------------------------------- routes


def routes(msgs: dict[str, list[Msg]], ifnames: dict[int, str], table: int | None = 254) -> list[Route]:
    return [r for m in msgs["routes"] for r in routes_from_msg(m, ifnames, table)]


def test_main_table_unicast_only(msgs: dict[str, list[Msg]], ifnames: dict[int, str]) -> None:
    got = routes(msgs, ifnames)
    assert got and all(r.table == 254 and r.type == "unicast" for r in got)
    assert not [r for r in got if r.dst == ipaddress.ip_network("198.51.100.128/25")]  # blackhole
    assert not [r for r in got if r.dst.prefixlen in (32, 128) or r.dst.is_multicast]  # local table
    assert any(m.get("table") == 255 for m in msgs["routes"])  # they were in the dump


def test_connected_and_linkdown(msgs: dict[str, list[Msg]], ifnames: dict[int, str]) -> None:
    got = {r.ifname: r for r in routes(msgs, ifnames) if r.dst == ipaddress.ip_network("192.0.2.0/24")}
    assert set(got) == {"eth0", "eth1", "eth2"}
    assert (got["eth0"].proto, got["eth0"].scope, str(got["eth0"].src), got["eth0"].linkdown) == (
        "kernel", "link", "192.0.2.10", False)  # fmt: skip
    assert got["eth1"].linkdown and not got["eth2"].linkdown
    v6 = {r.ifname: r for r in routes(msgs, ifnames) if r.dst == ipaddress.ip_network("2001:db8::/64")}
    assert v6["eth1"].linkdown and not v6["eth0"].linkdown and v6["eth0"].metric == 256


def test_static_default_and_multipath(msgs: dict[str, list[Msg]], ifnames: dict[int, str]) -> None:
    got = routes(msgs, ifnames)
    (static,) = [r for r in got if r.dst == ipaddress.ip_network("198.51.100.0/24")]
    assert (static.ifname, str(static.gateway), static.proto, static.scope, static.metric) == (
        "eth0", "192.0.2.1", "static", "universe", None)  # fmt: skip
    (default,) = [r for r in got if r.dst == ipaddress.ip_network("0.0.0.0/0")]
    assert (default.ifname, str(default.gateway), default.metric, default.proto) == ("eth0", "192.0.2.1", 100, "boot")
    (default6,) = [r for r in got if r.dst == ipaddress.ip_network("::/0")]
    assert (default6.ifname, str(default6.gateway)) == ("eth0", "2001:db8::1")
    multi = sorted((r for r in got if r.dst == ipaddress.ip_network("203.0.113.0/24")), key=lambda r: str(r.ifname))
    assert [(r.ifname, str(r.gateway), r.linkdown) for r in multi] == [
        ("eth0", "192.0.2.1", False), ("eth1", "192.0.2.2", True)]  # fmt: skip


def test_route_tables_and_names(msgs: dict[str, list[Msg]], ifnames: dict[int, str]) -> None:
    m = one(msgs["routes"], RTA_DST="198.51.100.0", table=254)
    m["proto"] = 77
    m["attrs"] = [a for a in m["attrs"] if a[0] != "RTA_TABLE"] + [["RTA_TABLE", 1000]]
    m["table"] = 252  # RT_TABLE_COMPAT: the real number is in RTA_TABLE
    assert routes_from_msg(m, ifnames) == []
    (r,) = routes_from_msg(m, ifnames, table=1000)
    assert (r.table, r.proto) == (1000, "77")
    assert routes_from_msg(m, ifnames, table=None) == [r]
    local = one(msgs["routes"], RTA_DST="192.0.2.10", table=255)
    assert routes_from_msg(local, ifnames, table=None) == []
    m["attrs"] = [a for a in m["attrs"] if a[0] != "RTA_OIF"]
    assert routes_from_msg(m, ifnames, table=None)[0].ifname is None


def test_read_routes(msgs: dict[str, list[Msg]], links: dict[str, Link], ifnames: dict[int, str]) -> None:
    assert list(read_routes(FakeIPRoute(msgs), links.values())) == routes(msgs, ifnames)


# ----------------------------------------------------------------- neighbours


def test_neighbours(msgs: dict[str, list[Msg]], links: dict[str, Link]) -> None:
    got = {str(n.ip): n for n in read_neighbours(FakeIPRoute(msgs), links.values())}
    assert got["192.0.2.50"].state == "PERMANENT" and got["192.0.2.50"].mac == "02:1b:00:00:03:00"
    for ip in ("192.0.2.100", "2001:db8::100"):
        assert got[ip].ifname == "eth0" and got[ip].mac == "02:1b:00:00:01:00"
        assert got[ip].state in ("REACHABLE", "STALE", "DELAY", "PROBE")
    assert got["192.0.2.99"].mac is None and got["192.0.2.99"].state in ("INCOMPLETE", "FAILED")
    assert not [n for n in got.values() if n.ip.is_multicast or n.state == "NOARP"]
    assert any(m.get("state") == 0x40 for m in msgs["neighbours"])  # the NOARP entries were in the dump


def test_neighbour_filters(msgs: dict[str, list[Msg]], ifnames: dict[int, str]) -> None:
    m = one(msgs["neighbours"], NDA_DST="192.0.2.50")
    m["state"] = 0x40  # NOARP, unicast address, not loopback: kept
    n = neighbour_from_msg(m, ifnames)
    assert n is not None and n.state == "NOARP"
    assert neighbour_from_msg(m, ifnames, loopbacks={m["ifindex"]}) is None
    m["state"] = 0x02 | 0x100
    n = neighbour_from_msg(m, ifnames)
    assert n is not None and n.state == "REACHABLE|0x100"
    m["state"] = 0
    assert neighbour_from_msg(m, ifnames).state == "NONE"  # type: ignore[union-attr]
    m["family"] = 7  # AF_BRIDGE fdb entry
    assert neighbour_from_msg(m, ifnames) is None


# -------------------------------------------------------------------- sysctls


def test_effective_sysctls_rules() -> None:
    every = {"arp_ignore": 2, "arp_announce": 0, "promote_secondaries": 1, "ignore_routes_with_linkdown": 0,
             "disable_ipv6": 1, "accept_dad": 0}  # fmt: skip
    own = {"arp_ignore": 1, "arp_announce": 2, "promote_secondaries": 0, "ignore_routes_with_linkdown": 1,
           "disable_ipv6": 0, "accept_dad": 1}  # fmt: skip
    assert effective_sysctls(every, own) == LinkSysctls(
        arp_ignore=2, arp_announce=2, promote_secondaries=1, ignore_routes_with_linkdown=1,
        disable_ipv6=0, accept_dad=1)  # fmt: skip
    assert effective_sysctls(every, {}) == LinkSysctls()  # the link's file unreadable: unknown
    assert effective_sysctls({}, own) == LinkSysctls(**own)  # "all" unreadable: the link's own values


small = st.one_of(st.none(), st.integers(min_value=0, max_value=8))


@given(a=small, b=small, c=small, d=small)
def test_effective_sysctls_properties(a: int | None, b: int | None, c: int | None, d: int | None) -> None:
    got = effective_sysctls({"arp_ignore": a, "promote_secondaries": c}, {"arp_ignore": b, "promote_secondaries": d})
    assert got.arp_ignore == (None if b is None else max(b, a or 0))
    assert got.promote_secondaries == (None if d is None else int(bool(d or c)))


# ---------------------------------------------------------- I/O with a fake


class FakeIPRoute:
    """Replays recorded dumps; records link add/del requests for the feature probe."""

    def __init__(self, msgs: dict[str, list[Msg]] | None = None, add_error: int | None = None) -> None:
        self.msgs = msgs or {}
        self.add_error = add_error
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def _dump(self, key: str) -> Iterator[Msg]:
        return iter(copy.deepcopy(self.msgs[key]))

    def link(self, cmd: str, **kwargs: Any) -> Any:
        if cmd == "dump":
            return self._dump("links")
        self.requests.append((cmd, kwargs))
        if cmd == "add" and self.add_error is not None:
            raise NetlinkError(self.add_error)
        return ()

    def addr(self, cmd: str, **kwargs: Any) -> Iterator[Msg]:
        return self._dump("addresses")

    def route(self, cmd: str, **kwargs: Any) -> Iterator[Msg]:
        return self._dump("routes")

    def neigh(self, cmd: str, **kwargs: Any) -> Iterator[Msg]:
        return self._dump("neighbours")


def test_read_links_sorted(msgs: dict[str, list[Msg]]) -> None:
    got = read_links(FakeIPRoute(msgs))
    assert [link.index for link in got] == sorted(link.index for link in got)
    assert got[0].name == "lo"


@pytest.mark.parametrize(
    ("code", "expected"),
    [(errno.EOPNOTSUPP, False), (errno.EINVAL, True), (errno.EPERM, None), (errno.EEXIST, None)],
)
def test_link_kind_probe_decision(code: int, expected: bool | None) -> None:
    ipr = FakeIPRoute(add_error=code)
    assert link_kind_supported(ipr, "vlan") is expected
    assert ipr.requests == [("add", {"ifname": "ipshift-probe", "kind": "vlan"})]  # no IFLA_LINK, nothing deleted


def test_link_kind_probe_deletes_what_it_made() -> None:
    ipr = FakeIPRoute(add_error=None)
    assert link_kind_supported(ipr, "macvlan") is True
    assert ipr.requests == [("add", {"ifname": "ipshift-probe", "kind": "macvlan"}), ("del", {"ifname": "ipshift-probe"})]


# ------------------------------------------------------------------ recording

DROP_ATTRS = {
    "UNKNOWN", "IFLA_STATS", "IFLA_STATS64", "IFLA_AF_SPEC", "IFLA_MAP", "IFLA_XDP", "IFLA_PERM_ADDRESS",
    "IFA_CACHEINFO", "RTA_CACHEINFO", "NDA_CACHEINFO", "IFLA_PROP_LIST", "IFLA_PARENT_DEV_NAME",
    "IFLA_PARENT_DEV_BUS_NAME", "IFLA_DEVLINK_PORT",
}  # fmt: skip


def _plain(value: Any) -> Any:
    """A pyroute2 message as plain JSON-able data: dicts, lists, scalars."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("header", "__align", "__pad", "value"):
                continue
            if key == "attrs":
                out["attrs"] = [[name, _plain(v)] for name, v, *_ in item if name not in DROP_ATTRS]
            else:
                out[key] = _plain(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record() -> None:  # pragma: no cover - run by hand, as root
    import os
    import time

    from pyroute2 import IPRoute

    from ipshift.lab import Lab, unique_prefix

    with Lab(unique_prefix("ipsk"), nics=3, ipv6=True) as lab:
        gw = lab.gateway
        for cmd in (
            "ip addr add 192.0.2.20/24 dev eth0",
            "ip route add 198.51.100.0/24 via 192.0.2.1 proto static",
            "ip route add default via 192.0.2.1 metric 100",
            "ip route add 203.0.113.0/24 nexthop via 192.0.2.1 dev eth0 nexthop via 192.0.2.2 dev eth1",
            "ip route add blackhole 198.51.100.128/25",
            "ip -6 route add default via 2001:db8::1 dev eth0",
            "ip link set eth2 promisc on",
            "ip link add link eth2 name mv0 address 02:1b:00:00:02:00 type macvlan mode bridge",
            "ip link set mv0 up",
            "ip neigh add 192.0.2.50 lladdr 02:1b:00:00:03:00 dev eth0 nud permanent",
        ):
            lab.run(gw, *cmd.split())
        lab.run(lab.client, "ping", "-c1", "-W2", "192.0.2.10")
        lab.run(lab.client, "ping", "-c1", "-W2", "2001:db8::10")
        lab.run(gw, "ping", "-c1", "-W0.3", "192.0.2.99", check=False)
        lab.fail_nic("eth1")
        time.sleep(0.2)
        with IPRoute(netns=gw, flags=0) as ipr:
            data = {
                "recorded": f"pyroute2 0.9.7, Linux {os.uname().release}, lab gateway (see module docstring)",
                "links": [_plain(m) for m in ipr.link("dump")],
                "addresses": [_plain(m) for m in ipr.addr("dump")],
                "routes": [_plain(m) for m in ipr.route("dump", family=0)],
                "neighbours": [_plain(m) for m in ipr.neigh("dump")],
            }
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {DATA}")


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: test_snapshot_convert.py --record   (as root; rewrites tests/data/snapshot_msgs.json)")
    record()
