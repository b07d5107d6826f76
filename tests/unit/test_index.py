"""The kept indexes: the view's per-device address tables (shared between snapshots, updated per
event) and the planner's per-configuration and per-device counts. Each must answer what a fresh
reading of the same state answers, after any sequence of events, renames, steps and re-reads."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any
from unittest.mock import patch

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ipshift.config import Config, parse_config
from ipshift.model import Address, KernelFeatures, Link, Snapshot
from ipshift.plan import addresses_on, converge
from ipshift.plan.index import config_index, settled
from ipshift.plan.checks import managed_devices, nic_of
from ipshift.view import KernelView

LINKS = {n: Link(n, i + 2, f"02:00:00:00:00:{i + 1:02x}", True, True, "UP", "veth") for i, n in
         enumerate(("eth0", "eth1", "eth2", "eth3"))}
IPS = [ipaddress.ip_interface(f"192.0.2.{i}/24") for i in (10, 11, 50, 51)] + \
      [ipaddress.ip_interface(f"198.18.0.{i}/16") for i in range(2, 12)]


def cfg(data: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump(data), "test.yaml")


CONFIG = cfg({"interfaces": {
    "eth0": {"addresses": ["192.0.2.10/24", "192.0.2.50/24"], "backups": ["eth1"]},
    "eth1": {"addresses": ["192.0.2.11/24"], "backups": ["eth0"]},
    "eth2": {"addresses": [str(i) for i in IPS[4:10]], "backups": ["eth3"]},
    "eth3": {"addresses": ["198.18.0.11/16"], "backups": ["eth2"]},
}, "conflict_check": {"enabled": False}})


def home_snapshot() -> Snapshot:
    placed = [("eth0", IPS[0]), ("eth0", IPS[2]), ("eth1", IPS[1]), *(("eth2", i) for i in IPS[4:10]),
              ("eth3", IPS[13])]
    return Snapshot(links=tuple(LINKS.values()),
                    addresses=tuple(Address(d, i) for d, i in placed),
                    features=KernelFeatures(vlan_8021q=False, macvlan=True))


def fresh(s: Snapshot) -> Snapshot:
    """The same state as a plain snapshot: tables built from a tuple, nothing kept."""
    return Snapshot(links=s.links, addresses=tuple(s.addresses), routes=s.routes, neighbours=s.neighbours,
                    sysctls=s.sysctls, features=s.features)


def check_table(s: Snapshot) -> None:
    plain = fresh(s)
    names = {a.ifname for a in plain.addresses} | set(LINKS) | {"eth9"}
    for name in names:
        assert sorted(map(repr, s.addresses_on(name))) == sorted(map(repr, plain.addresses_on(name)))
    held: dict[Any, list[str]] = {}
    for a in plain.addresses:
        held.setdefault(a.ip, []).append(a.ifname)
    for ip in {i.ip for i in IPS}:
        assert sorted(a.ifname for a in s.where_is(ip)) == sorted(held.get(ip, []))
    assert s.table.multi == {ip for ip, devs in held.items() if len(devs) > 1}
    assert len(s.addresses) == len(plain.addresses)


def plans_of(s: Snapshot, usable: dict[str, bool]) -> list[Any]:
    """The plans, without and with every NIC asking its addresses back (and its routes restored)."""
    return [converge(CONFIG, s, usable),
            converge(CONFIG, s, usable, bring_back=frozenset(LINKS), restore=frozenset(LINKS))]


EVENT = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(sorted(LINKS)), st.sampled_from(IPS)),
    st.tuples(st.just("del"), st.sampled_from(sorted(LINKS)), st.sampled_from(IPS)),
    st.tuples(st.just("rename"), st.sampled_from(sorted(LINKS)), st.just(None)),
    st.tuples(st.just("reread"), st.just(""), st.just(None)),
    st.tuples(st.just("snapshot"), st.just(""), st.just(None)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(EVENT, max_size=25), st.sampled_from(sorted(LINKS)))
def test_view_tables_and_plans_match_a_fresh_reading_after_any_events(events: list[Any], down: str) -> None:
    view = KernelView(lambda: home_snapshot())
    view.load(home_snapshot())
    usable = {n: n != down for n in LINKS}
    for kind, dev, iface in events:
        if kind == "add":
            view.apply_address(True, dev, iface)
        elif kind == "del":
            view.apply_address(False, dev, iface)
        elif kind == "rename" and view.link(dev) is not None:
            link = view.link(dev)
            assert link is not None
            view.apply_link(replace(link, name=dev + "x"))  # same index: the device was renamed
            view.apply_link(replace(link, name=dev))  # and back, with its addresses
        elif kind == "reread":
            view.load(fresh(view.snapshot()))  # a dump of what is there: tables kept where equal
        s = view.snapshot()
        check_table(s)
        fast = plans_of(s, usable)
        assert fast == plans_of(fresh(s), usable)
        with patch("ipshift.plan.converge.settled", lambda *a: False):  # the full walk of every NIC
            assert plans_of(fresh(s), usable) == fast
        assert addresses_on(CONFIG, s, down) == addresses_on(CONFIG, fresh(s), down) == walked(s, down)


def walked(s: Snapshot, nic: str) -> list[Any]:
    """What addresses_on answers, by walking every configured address (as it did before the index)."""
    out = []
    for home, addr in CONFIG.all_addresses():
        found = s.where_is(addr.address.ip)
        holder = nic_of(s, found[0].ifname) if found else None
        if holder == nic or (holder is None and home == nic):
            out.append((home, addr))
    return sorted(out, key=lambda item: (item[1].address.version, item[1].address.ip))


def test_a_snapshot_never_changes_after_later_events() -> None:
    view = KernelView()
    view.load(home_snapshot())
    before = view.snapshot()
    kept = sorted(map(repr, before.addresses))
    view.apply_address(False, "eth2", IPS[4])
    view.apply_address(True, "eth3", IPS[4])
    after = view.snapshot()
    assert sorted(map(repr, before.addresses)) == kept
    assert [a.ifname for a in before.where_is(IPS[4].ip)] == ["eth2"]
    assert [a.ifname for a in after.where_is(IPS[4].ip)] == ["eth3"]
    # an unchanged device's table is the same object in both (what the planner counted stays)
    assert after.table.device("eth0") is before.table.device("eth0")
    assert after.table.device("eth2") is not before.table.device("eth2")


def test_a_reread_keeps_the_tables_of_unchanged_devices() -> None:
    view = KernelView()
    view.load(home_snapshot())
    s1 = view.snapshot()
    dump = home_snapshot()
    changed = replace(dump, addresses=tuple(a for a in dump.addresses if a.interface != IPS[5]))
    view.load(changed)
    s2 = view.snapshot()
    assert s2.table.device("eth0") is s1.table.device("eth0")
    assert s2.table.device("eth2") is not s1.table.device("eth2")
    assert IPS[5].ip not in s2.table.device("eth2").by_ip  # type: ignore[union-attr]


def test_settled_follows_the_devices_of_a_nic() -> None:
    s = home_snapshot()
    managed = managed_devices(CONFIG, s)
    assert all(settled(CONFIG, s, n, managed) for n in LINKS)
    view = KernelView()
    view.load(s)
    view.apply_address(True, "eth3", IPS[6])  # a copy of an eth2 address elsewhere
    s2 = view.snapshot()
    assert not settled(CONFIG, s2, "eth2", managed) and settled(CONFIG, s2, "eth0", managed)
    view.apply_address(False, "eth3", IPS[6])
    view.apply_address(False, "eth2", IPS[6])
    view.apply_address(True, "eth2", ipaddress.ip_interface("198.18.0.4/24"))  # another prefix
    assert not settled(CONFIG, view.snapshot(), "eth2", managed)
    view.apply_address(True, "eth2", IPS[6])
    assert settled(CONFIG, view.snapshot(), "eth2", managed)


def test_config_index_is_built_once_per_configuration() -> None:
    idx = config_index(CONFIG)
    assert config_index(CONFIG) is idx
    assert [a.address for a in idx.addresses("eth0")] == [IPS[0], IPS[2]]
    assert idx.by_ip[IPS[6].ip][0] == "eth2"
    other = cfg({"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}, "eth1": {}}})
    assert config_index(other) is not idx and config_index(other).addresses("eth0")[0].address == IPS[0]
    # a reload: the new configuration gets its own index, the planner follows it
    moved = cfg({"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]},
                                "eth1": {"addresses": ["192.0.2.11/24", "192.0.2.50/24"]},
                                "eth2": {"addresses": [str(i) for i in IPS[4:10]]},
                                "eth3": {"addresses": ["198.18.0.11/16"]}}})
    s = home_snapshot()
    usable = dict.fromkeys(LINKS, True)
    assert converge(CONFIG, s, usable) == []
    assert converge(moved, s, usable) == []  # held elsewhere: it comes only when asked to
    (plan,) = converge(moved, s, usable, bring_back=frozenset({"eth1"}))
    assert plan.failed == "eth1" and [str(m.interface) for m in plan.moves] == ["192.0.2.50/24"]


def test_where_is_names_the_holders_in_ifindex_order_whatever_the_events() -> None:
    """As a dump lists them: a restart after a move stopped halfway (the address on both NICs) must
    see the failed NIC as its holder, however the view's tables came to be."""
    for first, second in (("eth0", "eth1"), ("eth1", "eth0")):
        view = KernelView()
        view.load(Snapshot(links=tuple(LINKS.values())))
        view.apply_address(True, first, IPS[2])
        view.snapshot()
        view.apply_address(True, second, IPS[2])
        assert [a.ifname for a in view.snapshot().where_is(IPS[2].ip)] == ["eth0", "eth1"]
        view.load(Snapshot(links=tuple(LINKS.values()), addresses=(Address(second, IPS[2]), Address(first, IPS[2]))))
        assert [a.ifname for a in view.snapshot().where_is(IPS[2].ip)] == ["eth0", "eth1"]
