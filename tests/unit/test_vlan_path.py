"""The VLAN positive path, which this kernel (no 802.1Q) cannot run for real.

The executor is driven against a fake netlink socket that answers the way a
kernel with 8021q does (the request is accepted and the device appears), so
what ipshift asks for is checked exactly; the refusal on this kernel is
tested for real in tests/lab/test_check.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import yaml
from pyroute2.netlink.exceptions import NetlinkError

from ipshift.config import parse_config
from ipshift.kernel.apply import Executor, StepFailed
from ipshift.model import Address, KernelFeatures, Link, Snapshot
from ipshift.plan import plan_failback, plan_failover
from ipshift.steps import AddAddress, AddVlan, Announce, DelAddress, DelLink, RestoreRoutes, SaveRoutes


class FakeIPR:
    """Answers like a kernel with 802.1Q: devices it is asked to add exist afterwards."""

    def __init__(self, links: dict[str, int], vlan_supported: bool = True) -> None:
        self.links = dict(links)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.vlan_supported = vlan_supported

    async def link_lookup(self, ifname: str) -> list[int]:
        return [self.links[ifname]] if ifname in self.links else []

    async def link(self, cmd: str, **kw: Any) -> list[Any]:
        self.calls.append(("link", cmd, kw))
        if cmd == "add":
            if kw.get("kind") == "vlan" and not self.vlan_supported:
                raise NetlinkError(95, "Operation not supported")
            self.links[kw["ifname"]] = 100 + len(self.links)
        if cmd == "del":
            self.links = {k: v for k, v in self.links.items() if v != kw["index"]}
        return []

    async def addr(self, cmd: str, **kw: Any) -> list[Any]:
        self.calls.append(("addr", cmd, kw))
        return []


class FakeBatch:
    """Records address and route batches the way the kernel's batch socket would take them."""

    def __init__(self, calls: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.calls = calls

    def addresses(self, add: bool, items: Any) -> list[int]:
        items = list(items)
        for index, iface in items:
            self.calls.append(("addr", "add" if add else "del",
                               {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}))
        return [0] * len(items)

    def routes(self, add: bool, items: Any) -> list[int]:
        return [0] * len(list(items))

    def close(self) -> None: ...


CFG = {"interfaces": {
    "eth0": {"addresses": ["192.0.2.10/24", {"address": "203.0.113.10/24", "vlan": 100}]},
    "eth1": {"addresses": ["192.0.2.11/24"], "vlans": [100]},
}}
ETH0 = Link("eth0", 2, "02:00:00:00:00:10", True, False, "LOWERLAYERDOWN", "veth")
ETH1 = Link("eth1", 3, "02:00:00:00:00:11", True, True, "UP", "veth")
VL0 = Link("eth0.100", 4, "02:00:00:00:00:10", True, False, "LOWERLAYERDOWN", "vlan", parent=2, vlan_id=100)
V100 = ipaddress.ip_interface("203.0.113.10/24")


def test_vlan_address_moves_to_a_vlan_device_made_on_the_survivor_and_it_goes_home_after() -> None:
    cfg = parse_config(yaml.safe_dump(CFG))
    snap = Snapshot(links=(ETH0, ETH1, VL0),
                    addresses=(Address("eth0", ipaddress.ip_interface("192.0.2.10/24")), Address("eth0.100", V100),
                               Address("eth1", ipaddress.ip_interface("192.0.2.11/24"))),
                    features=KernelFeatures(vlan_8021q=True, macvlan=True))
    plan = plan_failover(cfg, snap, "eth0")
    assert plan.complete
    (move,) = [m for m in plan.moves if m.interface == V100]
    assert move.survivor == "eth1" and move.target == "eth1.100"
    assert move.steps[1:6] == (AddVlan("eth1", "eth1.100", 100), AddAddress("eth1.100", V100),
                               Announce("eth1.100", V100.ip, 3, 0.2), SaveRoutes("eth0"),
                               DelAddress("eth0.100", V100))
    # later, eth0 is back and the address is on eth1.100: failback removes the device ipshift made
    eth0_up = Link("eth0", 2, "02:00:00:00:00:10", True, True, "UP", "veth")
    vl0_up = Link("eth0.100", 4, "02:00:00:00:00:10", True, True, "UP", "vlan", parent=2, vlan_id=100)
    vl1 = Link("eth1.100", 5, "02:00:00:00:00:11", True, True, "UP", "vlan", parent=3, vlan_id=100)
    after = Snapshot(links=(eth0_up, ETH1, vl0_up, vl1),
                     addresses=(Address("eth0", ipaddress.ip_interface("192.0.2.10/24")), Address("eth1.100", V100),
                                Address("eth1", ipaddress.ip_interface("192.0.2.11/24"))),
                     features=KernelFeatures(vlan_8021q=True, macvlan=True))
    back = plan_failback(cfg, after, "eth0")
    (home,) = back.moves
    assert home.target == "eth0.100" and DelAddress("eth1.100", V100) in home.steps
    assert back.postlude == (DelLink("eth1.100"), RestoreRoutes("eth0"))


def test_vlan_not_permitted_or_no_8021q_is_refused_with_the_reason() -> None:
    cfg = parse_config(yaml.safe_dump(CFG))
    snap = Snapshot(links=(ETH0, ETH1, VL0), addresses=(Address("eth0.100", V100),),
                    features=KernelFeatures(vlan_8021q=False, macvlan=True))
    (refusal,) = plan_failover(cfg, snap, "eth0").refusals
    assert refusal.codes() == {"vlan"} and "no 802.1Q" in refusal.candidates[0].failures[0].reason
    cfg2 = parse_config(yaml.safe_dump({"interfaces": {**CFG["interfaces"], "eth1": {
        "addresses": ["192.0.2.11/24", {"address": "203.0.113.11/24", "vlan": 100}], "vlans": [200]}}}))
    snap2 = Snapshot(links=(ETH0, ETH1, VL0), addresses=(Address("eth0.100", V100),),
                     features=KernelFeatures(vlan_8021q=True, macvlan=True))
    (refusal,) = plan_failover(cfg2, snap2, "eth0").refusals
    assert refusal.codes() == {"vlan"} and "not permitted" in refusal.candidates[0].failures[0].reason


def test_executor_creates_the_vlan_device_and_adds_the_address() -> None:
    async def run() -> list[tuple[str, str, dict[str, Any]]]:
        ipr = FakeIPR({"lo": 1, "eth0": 2, "eth1": 3})
        ex = Executor(ipr, batch=FakeBatch(ipr.calls))
        ex.learn_link("eth1", 3, "02:00:00:00:00:11")
        await ex.run_step(AddVlan("eth1", "eth1.100", 100))
        await ex.run_step(AddAddress("eth1.100", ipaddress.ip_interface("203.0.113.10/24")))
        await ex.run_step(DelLink("eth1.100"))
        return ipr.calls

    calls = asyncio.run(run())
    assert calls[0] == ("link", "add", {"ifname": "eth1.100", "kind": "vlan", "link": 3, "vlan_id": 100})
    assert calls[1][:2] == ("link", "set") and calls[1][2]["state"] == "up"
    assert calls[2] == ("addr", "add", {"index": calls[1][2]["index"], "address": "203.0.113.10", "prefixlen": 24})
    assert calls[3] == ("link", "del", {"index": calls[1][2]["index"]})


def test_executor_reports_a_kernel_without_8021q_as_a_failed_step() -> None:
    async def run() -> None:
        ex = Executor(FakeIPR({"eth1": 3}, vlan_supported=False))
        await ex.run_step(AddVlan("eth1", "eth1.100", 100))

    try:
        asyncio.run(run())
    except StepFailed as exc:
        assert exc.code == 95 and "errno 95" in exc.reason
    else:
        raise AssertionError("AddVlan on a kernel without 802.1Q must fail")


def test_the_survivors_existing_vlan_child_is_used_whatever_its_name() -> None:
    cfg = parse_config(yaml.safe_dump(CFG))
    trunk = Link("trunk100", 6, "02:00:00:00:00:11", True, True, "UP", "vlan", parent=3, vlan_id=100)
    snap = Snapshot(links=(ETH0, ETH1, VL0, trunk), addresses=(Address("eth0.100", V100),),
                    features=KernelFeatures(vlan_8021q=True, macvlan=True))
    (move,) = [m for m in plan_failover(cfg, snap, "eth0").moves if m.interface == V100]
    assert move.target == "trunk100" and not any(isinstance(s, AddVlan) for s in move.steps)


def test_a_made_up_vlan_device_name_is_the_same_in_every_process() -> None:
    """A restarted daemon must find the device it made: no name from hash() (salted per process)."""
    import subprocess
    import sys

    code = ("from ipshift.model import Snapshot; from ipshift.plan import vlan_device; "
            "print(vlan_device(Snapshot(), 'enp129s0f1np1', 100))")
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin"}).stdout.strip()
             for seed in (1, 2, 3)}
    assert len(names) == 1 and len(names.pop()) <= 15
