"""The kernel view: events, our own steps and re-reads, and the overlays that keep them apart."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from dataclasses import replace
from typing import Any

from ipshift.model import Address, Link, Route, Snapshot
from ipshift.steps import AddAddress, AddRoute, DelRoute
from ipshift.view import KernelView

ETH0 = Link("eth0", 2, "02:00:00:00:00:10", True, True, "UP", "veth")
ETH1 = Link("eth1", 3, "02:00:00:00:00:11", True, True, "UP", "veth")
A10 = Address("eth0", ipaddress.ip_interface("192.0.2.10/24"))
A11 = Address("eth1", ipaddress.ip_interface("192.0.2.11/24"))
BASE = Snapshot(links=(ETH0, ETH1), addresses=(A10, A11))
DST = ipaddress.ip_network("198.51.100.0/24")
VIA = ipaddress.ip_address("192.0.2.1")


class Reader:
    """A dump that takes as long as the test wants: each call waits for its own gate."""

    def __init__(self, *answers: Snapshot) -> None:
        self.answers = list(answers)
        self.gates = [threading.Event() for _ in answers]
        self.calls = 0

    def __call__(self) -> Snapshot:
        n = self.calls
        self.calls += 1
        self.gates[n].wait(5)
        return self.answers[n]


def view_of(snap: Snapshot, reader: Any = None) -> KernelView:
    v = KernelView(reader or (lambda: snap))
    v.load(snap)
    return v


def test_two_rereads_at_once_each_keep_their_own_overlay() -> None:
    """The converge loop's re-read and the monitor's (after an overrun) can overlap; the first to end
    must not take the other's overlay away (they compare equal until an event reaches one)."""
    reader = Reader(BASE, BASE)
    v = view_of(BASE, reader)

    async def scenario() -> None:
        first = asyncio.create_task(v.reread("converge"))
        while reader.calls < 1:
            await asyncio.sleep(0.001)
        second = asyncio.create_task(v.reread("overrun"))
        while reader.calls < 2:
            await asyncio.sleep(0.001)
        assert v.rereads_running == 2
        reader.gates[1].set()  # the later re-read ends first
        await second
        assert v.rereads_running == 1
        v.apply_address(True, "eth1", ipaddress.ip_interface("192.0.2.12/24"))  # only the first one sees it
        reader.gates[0].set()
        await first
        assert v.rereads_running == 0
        assert v.snapshot().where_is(ipaddress.ip_address("192.0.2.12"))[0].ifname == "eth1"  # newer than the dump

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_route_step_during_a_reread_is_not_undone_by_it() -> None:
    """Routes have no notifications here: a re-read whose dump predates our own route steps must not
    put the old routes back (it did: the next round then moved 1,000 routes again)."""
    before = replace(BASE, routes=(Route(dst=DST, ifname="eth1", gateway=VIA),))
    reader = Reader(before)
    v = view_of(before, reader)

    async def scenario() -> None:
        task = asyncio.create_task(v.reread("after converge"))
        while reader.calls < 1:
            await asyncio.sleep(0.001)
        v.note([DelRoute(DST, "eth1", VIA), AddRoute(DST, "eth0", VIA)])  # a failback moves it meanwhile
        reader.gates[0].set()
        await task
        assert [(r.dst, r.ifname) for r in v.snapshot().routes] == [(DST, "eth0")]

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_device_gone_during_a_reread_stays_gone() -> None:
    reader = Reader(BASE)
    v = view_of(BASE, reader)

    async def scenario() -> None:
        task = asyncio.create_task(v.reread("overrun"))
        while reader.calls < 1:
            await asyncio.sleep(0.001)
        v.remove_link("eth1")
        reader.gates[0].set()
        await task
        assert v.link("eth1") is None and not v.snapshot().addresses_on("eth1")

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_batch_of_route_steps_changes_the_view_like_one_step_at_a_time() -> None:
    nets = [ipaddress.ip_network(f"198.51.100.{i}/32") for i in range(40)]
    start = replace(BASE, routes=tuple(Route(dst=n, ifname="eth0", gateway=VIA) for n in nets[:30]))
    one, many = view_of(start), view_of(start)
    batches: list[list[Any]] = [[DelRoute(n, "eth0", VIA) for n in nets[:20]],
                                [AddRoute(n, "eth1", VIA, 10) for n in nets[:25]],
                                [DelRoute(n, "eth1", VIA) for n in nets[20:25]]]
    for batch in batches:
        for st in batch:
            one.note([st])
        many.note(batch)

    def key(r: Route) -> tuple[str, str | None, int | None]:
        return (str(r.dst), r.ifname, r.metric)

    assert sorted(map(key, one.snapshot().routes)) == sorted(map(key, many.snapshot().routes))
    assert len(many.snapshot().routes) == 10 + 20  # eth0 keeps 20..29, eth1 holds 0..19


def test_the_snapshot_is_built_once_per_change() -> None:
    v = view_of(BASE)
    s1 = v.snapshot()
    assert v.snapshot() is s1
    v.note([AddAddress("eth1", ipaddress.ip_interface("192.0.2.13/24"))])
    s2 = v.snapshot()
    assert s2 is not s1 and s2.where_is(ipaddress.ip_address("192.0.2.13"))


def test_a_renamed_link_keeps_its_addresses_and_events_carry_the_whole_link() -> None:
    v = view_of(BASE)
    renamed = replace(ETH0, name="wan0", mtu=9000)
    change = v.apply_link(renamed)
    assert change.renamed_from == "eth0" and not change.new
    assert v.link("eth0") is None and v.link("wan0") == renamed  # the MTU came with the event
    assert [a.ifname for a in v.snapshot().where_is(A10.ip)] == ["wan0"]
    vlan = Link("wan0.7", 9, ETH0.mac, True, True, "UP", "vlan", parent=2, vlan_id=7)
    assert v.apply_link(vlan).new and v.link("wan0.7") == vlan  # parent and VLAN id kept


def test_probe_source_is_the_nics_own_address_in_the_targets_subnet() -> None:
    ll = Address("eth0", ipaddress.ip_interface("fe80::1/64"), scope="link")
    v = view_of(replace(BASE, addresses=(A10, A11, ll)))
    assert v.probe_source("eth0", ipaddress.ip_address("192.0.2.1")) == A10.ip
    assert v.probe_source("eth0", ipaddress.ip_address("198.51.100.1")) is None
    assert v.probe_source("eth0", ipaddress.ip_address("2001:db8::1")) == ll.ip


def test_a_nics_own_mac_is_not_replaced_by_its_stand_in_and_survives_a_restart() -> None:
    from ipshift.steps import stand_in_mac

    v = view_of(BASE)
    v.load(BASE)
    assert v.own_macs()["eth0"] == ETH0.mac
    stand_in = replace(ETH0, mac=stand_in_mac(ETH0.mac))
    v.apply_link(stand_in)
    v.load(replace(BASE, links=(stand_in, ETH1)))
    assert v.own_macs()["eth0"] == ETH0.mac  # a stand-in ipshift gave it is not its own
    v.apply_link(replace(ETH0, mac="02:00:00:00:00:77"))  # an operator gave it another
    assert v.own_macs()["eth0"] == "02:00:00:00:00:77"
    after = view_of(BASE)  # a restart: the state file's MAC first, then the kernel with the stand-in
    after.remember({"eth0": replace(ETH0, admin_up=False, carrier=False, operstate="NOTPRESENT")})
    after.load(replace(BASE, links=(stand_in, ETH1)))
    assert after.own_macs()["eth0"] == ETH0.mac
    after.apply_link(replace(stand_in, name="lan0"))  # renamed: its own MAC goes with the name
    assert after.own_macs()["lan0"] == ETH0.mac
