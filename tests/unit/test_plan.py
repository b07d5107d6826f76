"""Planner tests: table-driven cases and properties, no kernel involved."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ipshift.config import Config, parse_config
from ipshift.model import Address, KernelFeatures, Link, LinkSysctls, Route, Snapshot
from ipshift.plan import CHECK_CODES, addresses_on, converge, plan_failback, plan_failover
from ipshift.policy import sysctl_warnings
from ipshift.steps import (
    AddAddress, AddMacvlan, AddRoute, Announce, CheckConflict, DelAddress, DelLink, DelNeighbours, DelRoute,
    DemoteRoutes, FlushNeighbours, FlushRouteCache, MoveRoutes, RestoreRoutes, SaveRoutes, SetMac, stand_in_mac,
)

MACS = {"eth0": "02:00:00:00:00:01", "eth1": "02:00:00:00:00:02", "eth2": "02:00:00:00:00:03"}


def cfg(data: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump(data), "test.yaml")


def link(name: str, index: int, *, up: bool = True, carrier: bool = True, **kw: Any) -> Link:
    return Link(name=name, index=index, mac=MACS.get(name, "02:00:00:00:00:09"), admin_up=up,
                carrier=carrier, operstate="UP" if up and carrier else "DOWN", kind="veth", **kw)


def snap(links: list[Link], addrs: dict[str, list[str]], *, vlan: bool | None = False,
         routes: tuple[Route, ...] = (), sysctls: dict[str, LinkSysctls] | None = None) -> Snapshot:
    addresses = tuple(Address(ifname=n, interface=ipaddress.ip_interface(a)) for n, lst in addrs.items() for a in lst)
    return Snapshot(links=tuple(links), addresses=addresses, routes=routes, sysctls=sysctls or {},
                    features=KernelFeatures(vlan_8021q=vlan, macvlan=True))


BASE = {
    "interfaces": {
        "eth0": {"addresses": ["192.0.2.10/24"], "routes": [{"to": "198.51.100.0/24", "via": "192.0.2.1"}]},
        "eth1": {"addresses": ["192.0.2.11/24"]},
    },
}


STATIC = Route(dst=ipaddress.ip_network("198.51.100.0/24"), ifname="eth0",
               gateway=ipaddress.ip_address("192.0.2.1"), proto="static")


def two_nics(**eth1: Any) -> Snapshot:
    return snap([link("eth0", 2, carrier=False), link("eth1", 3, **eth1)],
                {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"]}, routes=(STATIC,))


def test_same_subnet_moves_with_ordered_steps() -> None:
    plan = plan_failover(cfg(BASE), two_nics(), "eth0")
    assert plan.complete and len(plan.moves) == 1
    move = plan.moves[0]
    assert (move.survivor, move.target) == ("eth1", "eth1")
    iface = ipaddress.ip_interface("192.0.2.10/24")
    net = iface.network
    assert move.steps == (  # make before break: announced before it leaves; the routes kept first
        CheckConflict("eth1", iface.ip, 0.2),
        AddAddress("eth1", iface),
        Announce("eth1", iface.ip, 3, 0.2),
        SaveRoutes("eth0"),
        DelAddress("eth0", iface),
        DelNeighbours("eth0", net),
        FlushNeighbours(net),
        FlushRouteCache(4),
    )
    # the route goes with the plan, to where the first address of its gateway's subnet goes
    assert plan.postlude == (MoveRoutes("eth0", "eth1", (STATIC,)), DemoteRoutes("eth0"))


@pytest.mark.parametrize(
    ("eth1_addr", "eth1_link", "extra_cfg", "expected"),
    [
        ("198.51.100.11/24", {}, {}, {"same-network", "same-subnet"}),
        ("192.0.2.130/25", {}, {}, {"same-subnet"}),
        ("192.0.2.11/24", {"carrier": False}, {}, {"survivor-healthy"}),
        ("192.0.2.11/24", {"up": False}, {}, {"survivor-healthy"}),
        ("192.0.2.11/24", {}, {"max_addresses": 1}, {"capacity"}),
    ],
    ids=["other-subnet", "overlapping-network", "no-carrier", "admin-down", "capacity"],
)
def test_refusals_name_the_failing_check(eth1_addr: str, eth1_link: dict[str, Any],
                                         extra_cfg: dict[str, Any], expected: set[str]) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["interfaces"]["eth1"] = {"addresses": [eth1_addr], **extra_cfg}
    del data["interfaces"]["eth0"]["routes"]
    s = snap([link("eth0", 2, carrier=False), link("eth1", 3, **eth1_link)],
             {"eth0": ["192.0.2.10/24"], "eth1": [eth1_addr]})
    plan = plan_failover(cfg(data), s, "eth0")
    assert not plan.moves
    (refusal,) = plan.refusals
    assert refusal.codes() == expected
    for cand in refusal.candidates:
        for f in cand.failures:
            assert f.code in CHECK_CODES and f.reason


def test_vlan_refused_on_kernel_without_8021q_names_it() -> None:
    data = {"interfaces": {
        "eth0": {"addresses": [{"address": "203.0.113.10/24", "vlan": 100}]},
        "eth1": {"addresses": ["192.0.2.11/24", {"address": "203.0.113.11/24", "vlan": 100}]},
    }}
    plan = plan_failover(cfg(data), two_nics(), "eth0")
    (refusal,) = plan.refusals
    assert refusal.codes() == {"vlan"}
    assert "802.1Q" in refusal.candidates[0].failures[0].reason


def test_vlan_moves_when_kernel_has_8021q_and_nic_permits() -> None:
    data = {"interfaces": {
        "eth0": {"addresses": [{"address": "203.0.113.10/24", "vlan": 100}]},
        "eth1": {"addresses": ["192.0.2.11/24", {"address": "203.0.113.11/24", "vlan": 100}], "vlans": [100]},
    }}
    s = replace(two_nics(), features=KernelFeatures(vlan_8021q=True, macvlan=True))
    plan = plan_failover(cfg(data), s, "eth0")
    assert plan.complete and plan.moves[0].target == "eth1.100"
    data["interfaces"]["eth1"]["vlans"] = [200]
    plan = plan_failover(cfg(data), s, "eth0")
    assert plan.refusals[0].codes() == {"vlan"}


def test_mac_move_uses_one_macvlan_per_survivor_and_respects_max_extra_macs() -> None:
    data = {"interfaces": {
        "eth0": {"addresses": [{"address": "192.0.2.10/24", "mac": "move"}, {"address": "192.0.2.20/24", "mac": "move"}]},
        "eth1": {"addresses": ["192.0.2.11/24"]},
    }}
    s = snap([link("eth0", 2, carrier=False), link("eth1", 3)],
             {"eth0": ["192.0.2.10/24", "192.0.2.20/24"], "eth1": ["192.0.2.11/24"]})
    plan = plan_failover(cfg(data), s, "eth0")
    assert plan.complete
    macvlans = [st for m in plan.moves for st in m.steps if isinstance(st, AddMacvlan)]
    assert macvlans == [AddMacvlan("eth1", "ipsmv2s3", MACS["eth0"])]
    assert {m.target for m in plan.moves} == {"ipsmv2s3"}
    data["interfaces"]["eth1"]["max_extra_macs"] = 0
    plan = plan_failover(cfg(data), s, "eth0")
    assert all(r.codes() == {"mac-capacity"} for r in plan.refusals) and len(plan.refusals) == 2


MAC_AWAY = {"interfaces": {
    "eth0": {"addresses": [{"address": "192.0.2.10/24", "mac": "move"}, "192.0.2.12/24"]},
    "eth1": {"addresses": ["192.0.2.11/24"]},
}}


def mac_away(*, eth1_carrier: bool = True) -> Snapshot:
    """eth0 is back with its stand-in MAC and holds its own address (192.0.2.5, unmanaged) and
    192.0.2.12; its mac: move address is on a macvlan of eth1 that carries eth0's MAC."""
    eth0 = replace(link("eth0", 2), mac=stand_in_mac(MACS["eth0"]))
    mv = Link(name="ipsmv2s3", index=7, mac=MACS["eth0"], admin_up=True, carrier=eth1_carrier,
              operstate="UP" if eth1_carrier else "LOWERLAYERDOWN", kind="macvlan", parent=3)
    return snap([eth0, link("eth1", 3, carrier=eth1_carrier), mv],
                {"eth0": ["192.0.2.5/24", "192.0.2.12/24"], "eth1": ["192.0.2.11/24"], "ipsmv2s3": ["192.0.2.10/24"]})


def test_a_nic_given_its_own_mac_back_announces_every_address_that_stays_on_it() -> None:
    """Its neighbours hold the stand-in for the addresses it kept: each is announced again."""
    plan = plan_failback(cfg(MAC_AWAY), mac_away(), "eth0")
    (move,) = plan.moves
    ann = [st.ip for st in move.steps if isinstance(st, Announce)]
    assert move.steps[0] == SetMac("eth0", MACS["eth0"])
    assert sorted(map(str, ann)) == ["192.0.2.10", "192.0.2.12", "192.0.2.5"]
    assert move.target == "eth0" and DelLink("ipsmv2s3") in plan.postlude


def test_a_moved_mac_address_that_moves_on_to_its_home_nic_goes_onto_the_nic_with_its_own_mac() -> None:
    """The macvlan holding eth0's address fails with eth1 and eth0 is the survivor: the address goes
    onto eth0 itself (no macvlan on the NIC whose MAC it would carry), and eth0 gets its MAC back."""
    plan = plan_failover(cfg(MAC_AWAY), mac_away(eth1_carrier=False), "eth1")
    moves = {str(m.interface.ip): m for m in plan.moves}
    home = moves["192.0.2.10"]
    assert (home.survivor, home.target) == ("eth0", "eth0")
    assert not any(isinstance(st, AddMacvlan) for m in plan.moves for st in m.steps)
    sets = [st for m in plan.moves for st in m.steps if isinstance(st, SetMac)]
    assert sets == [SetMac("eth0", MACS["eth0"])]
    assert {str(st.ip) for st in home.steps if isinstance(st, Announce)} == {"192.0.2.5", "192.0.2.12", "192.0.2.10"}
    assert SetMac("eth1", stand_in_mac(MACS["eth1"])) not in plan.postlude  # eth1's own MAC went nowhere


def test_a_nic_left_with_its_stand_in_mac_gets_its_own_back_once_no_macvlan_carries_it() -> None:
    """Every address home, eth0 still with its stand-in (a run stopped between the address and the
    MAC): its own MAC comes back and what it holds is announced; while a macvlan elsewhere carries
    that MAC (its mac: move address is away) it keeps the stand-in."""
    home = mac_away()
    home = replace(home, links=tuple(l for l in home.links if l.name != "ipsmv2s3"),
                   addresses=(*[a for a in home.addresses if a.ifname != "ipsmv2s3"],
                              Address("eth0", ipaddress.ip_interface("192.0.2.10/24"))))
    own = {"eth0": MACS["eth0"], "eth1": MACS["eth1"]}
    plans = converge(cfg(MAC_AWAY), home, {"eth0": True, "eth1": True}, own_macs=own)
    (plan,) = plans
    assert plan.failed == "eth0" and plan.postlude[0] == SetMac("eth0", MACS["eth0"])
    assert {str(st.ip) for st in plan.postlude if isinstance(st, Announce)} == {"192.0.2.5", "192.0.2.10", "192.0.2.12"}
    away = converge(cfg(MAC_AWAY), mac_away(), {"eth0": True, "eth1": True}, own_macs=own)
    assert not any(isinstance(st, SetMac) for p in away for st in p.postlude)


def test_a_moved_mac_is_the_nics_own_even_when_the_nic_shows_its_stand_in() -> None:
    """eth0 holds its mac: move address with its stand-in MAC (a state left by a crash) and fails:
    the macvlan on the survivor carries eth0's own MAC, never the stand-in."""
    s = mac_away()
    s = replace(s, links=tuple(replace(l, carrier=False) if l.name == "eth0" else l for l in s.links
                               if l.name != "ipsmv2s3"),
                addresses=(*[a for a in s.addresses if a.ifname != "ipsmv2s3"],
                           Address("eth0", ipaddress.ip_interface("192.0.2.10/24"))))
    plan = plan_failover(cfg(MAC_AWAY), s, "eth0", own_macs={"eth0": MACS["eth0"]})
    assert [st.mac for m in plan.moves for st in m.steps if isinstance(st, AddMacvlan)] == [MACS["eth0"]]


def test_conflict_inputs_and_peers_refuse() -> None:
    ip = ipaddress.ip_address("192.0.2.10")
    plan = plan_failover(cfg(BASE), two_nics(), "eth0", conflicts={(ip, "eth1"): "answered by 02:aa:00:00:00:01"})
    assert plan.refusals[0].codes() == {"conflict"}
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["interfaces"]["eth0"]["addresses"] += ["192.0.2.50/24", "192.0.2.51/24"]
    data["peers"] = [{"name": "gw2", "addresses": ["192.0.2.51"]}]
    s = snap([link("eth0", 2, carrier=False), link("eth1", 3), link("lo", 1)],
             {"eth0": ["192.0.2.10/24", "192.0.2.50/24", "192.0.2.51/24"], "eth1": ["192.0.2.11/24"],
              "lo": ["192.0.2.50/32"]})
    plan = plan_failover(cfg(data), s, "eth0")
    refused = {str(r.interface.ip): r for r in plan.refusals}
    assert set(refused) == {"192.0.2.50", "192.0.2.51"}
    assert refused["192.0.2.50"].codes() == {"conflict"}
    assert "lo" in refused["192.0.2.50"].candidates[0].failures[0].reason
    assert "peer gw2" in refused["192.0.2.51"].candidates[0].failures[0].reason


def test_backups_order_then_fewest_addresses() -> None:
    data = {"interfaces": {
        "eth0": {"addresses": ["192.0.2.10/24", "192.0.2.20/24"]},
        "eth1": {"addresses": ["192.0.2.11/24", "192.0.2.21/24"]},
        "eth2": {"addresses": ["192.0.2.12/24"]},
    }}
    s = snap([link("eth0", 2, carrier=False), link("eth1", 3), link("eth2", 4)],
             {"eth0": ["192.0.2.10/24", "192.0.2.20/24"], "eth1": ["192.0.2.11/24", "192.0.2.21/24"],
              "eth2": ["192.0.2.12/24"]})
    plan = plan_failover(cfg(data), s, "eth0")
    # eth2 has fewer addresses; after the first move both hold 2 and the name breaks the tie
    assert [m.survivor for m in plan.moves] == ["eth2", "eth1"]
    data["interfaces"]["eth0"]["backups"] = ["eth1"]
    plan = plan_failover(cfg(data), s, "eth0")
    assert [m.survivor for m in plan.moves] == ["eth1", "eth1"]
    data["interfaces"]["eth0"]["backups"] = []
    plan = plan_failover(cfg(data), s, "eth0")
    assert all(r.reason and not r.candidates for r in plan.refusals)


def test_passed_over_candidates_keep_their_reasons() -> None:
    data = {"interfaces": {
        "eth0": {"addresses": ["192.0.2.10/24"], "backups": ["eth1", "eth2"]},
        "eth1": {"addresses": ["192.0.2.11/24"]},
        "eth2": {"addresses": ["192.0.2.12/24"]},
    }}
    s = snap([link("eth0", 2, carrier=False), link("eth1", 3, carrier=False), link("eth2", 4)],
             {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"], "eth2": ["192.0.2.12/24"]})
    (move,) = plan_failover(cfg(data), s, "eth0").moves
    assert move.survivor == "eth2"
    assert [c.nic for c in move.passed_over] == ["eth1"]
    assert move.passed_over[0].failures[0].code == "survivor-healthy"


def test_held_down_survivor_is_not_eligible() -> None:
    plan = plan_failover(cfg(BASE), two_nics(), "eth0", unhealthy={"eth1": "path probes unanswered"})
    assert plan.refusals[0].codes() == {"survivor-healthy"}
    assert "path probes" in plan.refusals[0].candidates[0].failures[0].reason


def test_addresses_already_moved_belong_to_their_holder() -> None:
    s = snap([link("eth0", 2, carrier=False), link("eth1", 3)],
             {"eth1": ["192.0.2.11/24", "192.0.2.10/24"]})
    c = cfg(BASE)
    assert [str(a.address) for _, a in addresses_on(c, s, "eth0")] == []
    assert sorted(str(a.address) for _, a in addresses_on(c, s, "eth1")) == ["192.0.2.10/24", "192.0.2.11/24"]


def test_ipv6_disabled_is_a_capacity_refusal_and_v6_added_nodad() -> None:
    data = {"interfaces": {"eth0": {"addresses": ["2001:db8::10/64"]}, "eth1": {"addresses": ["2001:db8::11/64"]}}}
    s = snap([link("eth0", 2, carrier=False), link("eth1", 3)],
             {"eth0": ["2001:db8::10/64"], "eth1": ["2001:db8::11/64"]})
    (move,) = plan_failover(cfg(data), s, "eth0").moves
    assert AddAddress("eth1", ipaddress.ip_interface("2001:db8::10/64"), nodad=True) in move.steps
    s = replace(s, sysctls={"eth1": LinkSysctls(disable_ipv6=1)})
    assert plan_failover(cfg(data), s, "eth0").refusals[0].codes() == {"capacity"}


def test_sysctl_warnings() -> None:
    s = replace(two_nics(), sysctls={"eth0": LinkSysctls(arp_ignore=0, arp_announce=0, promote_secondaries=0,
                                                         ignore_routes_with_linkdown=0),
                                     "eth1": LinkSysctls(arp_ignore=1, arp_announce=2, promote_secondaries=1,
                                                         ignore_routes_with_linkdown=1)})
    codes = {(w.nic, w.code) for w in sysctl_warnings(cfg(BASE), s)}
    assert codes == {("eth0", "arp_ignore"), ("eth0", "arp_announce"), ("eth0", "promote_secondaries"),
                     ("eth0", "ignore_routes_with_linkdown")}


# --------------------------------------------------------------------------- properties

NICS = ["eth0", "eth1", "eth2", "eth3"]
SUBNETS = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], Snapshot, str]:
    nics = draw(st.lists(st.sampled_from(NICS), min_size=2, max_size=4, unique=True))
    used: set[str] = set()
    interfaces: dict[str, Any] = {}
    links = []
    addrs: dict[str, list[str]] = {}
    for i, nic in enumerate(nics):
        subnet = ipaddress.ip_network(draw(st.sampled_from(SUBNETS)))
        n_addr = draw(st.integers(min_value=1, max_value=3))
        mine = []
        for _ in range(n_addr):
            host = draw(st.integers(min_value=2, max_value=250))
            ip = f"{subnet.network_address + host}/24"
            if ip.split("/")[0] in used:
                continue
            used.add(ip.split("/")[0])
            mine.append(ip)
        entry: dict[str, Any] = {"addresses": mine}
        if draw(st.booleans()):
            entry["max_addresses"] = draw(st.integers(min_value=1, max_value=5))
        interfaces[nic] = entry
        links.append(Link(name=nic, index=i + 2, mac=f"02:00:00:00:00:{i + 1:02x}",
                          admin_up=draw(st.booleans()), carrier=draw(st.booleans()),
                          operstate="UP", kind="veth"))
        addrs[nic] = list(mine)
    failed = draw(st.sampled_from(nics))
    s = snap(links, addrs)
    return {"interfaces": interfaces}, s, failed


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.randoms())
def test_plan_properties(scn: tuple[dict[str, Any], Snapshot, str], rnd: Any) -> None:
    data, s, failed = scn
    config = cfg(data)
    plan = plan_failover(config, s, failed)
    for move in plan.moves:
        assert move.survivor != failed
        link = s.link(move.survivor)
        assert link is not None and link.healthy
        survivor_nets = {ipaddress.ip_interface(a).network for a in data["interfaces"][move.survivor]["addresses"]}
        survivor_nets |= {a.network for a in s.addresses_on(move.survivor)}
        assert move.interface.network in survivor_nets
    for refusal in plan.refusals:
        assert refusal.reason or any(c.failures for c in refusal.candidates)
        assert all(c.failures for c in refusal.candidates)
        assert all(f.code in CHECK_CODES and f.reason for c in refusal.candidates for f in c.failures)
    # every address that was on the failed NIC is accounted for exactly once
    on_failed = {a.address for _, a in addresses_on(config, s, failed)}
    accounted = [m.interface for m in plan.moves] + [r.interface for r in plan.refusals]
    assert sorted(map(str, accounted)) == sorted(map(str, on_failed))
    # the result does not depend on the order of the configuration's keys
    shuffled_names = list(data["interfaces"])
    rnd.shuffle(shuffled_names)
    shuffled = {"interfaces": {n: data["interfaces"][n] for n in shuffled_names}}
    links = list(s.links)
    rnd.shuffle(links)
    assert plan_failover(cfg(shuffled), replace(s, links=tuple(links)), failed) == plan


# --------------------------------------------------------------------------- failback and convergence


def test_failback_is_make_before_break_and_cleans_the_macvlan() -> None:
    data = {"interfaces": {
        "eth0": {"addresses": [{"address": "192.0.2.10/24", "mac": "move"}],
                 "routes": [{"to": "198.51.100.0/24", "via": "192.0.2.1"}]},
        "eth1": {"addresses": ["192.0.2.11/24"]},
    }}
    mv = Link(name="ipsmv2", index=9, mac=MACS["eth0"], admin_up=True, carrier=True, operstate="UP",
              kind="macvlan", parent=3)
    moved = Route(dst=ipaddress.ip_network("198.51.100.0/24"), ifname="ipsmv2",
                  gateway=ipaddress.ip_address("192.0.2.1"), proto="static")
    s = snap([link("eth0", 2), link("eth1", 3), mv], {"eth1": ["192.0.2.11/24"], "ipsmv2": ["192.0.2.10/24"]},
             routes=(moved,))
    iface = ipaddress.ip_interface("192.0.2.10/24")
    # manual mode: nothing comes home unless asked
    assert plan_failback(cfg(data), s, "eth0", bring_back=False).moves == ()
    plan = plan_failback(cfg(data), s, "eth0", bring_back=True)
    (move,) = plan.moves
    assert plan.kind == "failback" and plan.prelude == (RestoreRoutes("eth0"),)  # and again after the moves
    assert move.steps == (
        AddAddress("eth0", iface),
        Announce("eth0", iface.ip, 3, 0.2),
        DelAddress("ipsmv2", iface),
        DelRoute(ipaddress.ip_network("198.51.100.0/24"), "ipsmv2", ipaddress.ip_address("192.0.2.1")),
        AddRoute(ipaddress.ip_network("198.51.100.0/24"), "eth0", ipaddress.ip_address("192.0.2.1")),
        FlushNeighbours(iface.network),
        FlushRouteCache(4),
    )
    assert plan.postlude == (DelLink("ipsmv2"), RestoreRoutes("eth0"))


def test_converge_places_missing_addresses_and_removes_duplicates() -> None:
    c = cfg(BASE)
    # after a crash: 192.0.2.10 on nobody, 192.0.2.11 on both NICs
    s = snap([link("eth0", 2), link("eth1", 3)], {"eth0": ["192.0.2.11/24"], "eth1": ["192.0.2.11/24"]})
    plans = converge(c, s, {"eth0": True, "eth1": True})
    steps = {(p.failed, type(st).__name__, str(getattr(st, "ifname", ""))) for p in plans for m in p.moves
             for st in m.steps}
    assert ("eth0", "AddAddress", "eth0") in steps  # 192.0.2.10 placed at home
    assert ("eth1", "DelAddress", "eth0") in steps  # the stray copy of eth1's address goes
    # home down: its addresses are placed on the survivor instead
    plans = converge(c, snap([link("eth0", 2, carrier=False), link("eth1", 3)], {"eth1": ["192.0.2.11/24"]}),
                     {"eth0": False, "eth1": True})
    assert [(p.failed, p.kind, [m.survivor for m in p.moves]) for p in plans] == [("eth0", "failover", ["eth1"])]


def test_converge_all_down_leaves_addresses_put() -> None:
    s = snap([link("eth0", 2, carrier=False), link("eth1", 3, carrier=False)],
             {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"]})
    plans = converge(cfg(BASE), s, {"eth0": False, "eth1": False})
    assert all(not p.moves for p in plans)
    assert {str(r.interface) for p in plans for r in p.refusals} == {"192.0.2.10/24", "192.0.2.11/24"}
