"""Scenario tests: a sequence of kernel events in, the exact sequence of executed steps out.

The daemon runs against a fake executor that applies address steps to an
in-memory kernel, so these tests need neither root nor namespaces.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import yaml

from ipshift import health as hl
from ipshift.config import parse_config
from ipshift.daemon import Daemon
from ipshift.events import LinkEvent
from ipshift.kernel.apply import StepFailed
from ipshift.model import Address, KernelFeatures, Link, Snapshot
from ipshift.steps import AddAddress, CheckConflict, DelAddress, Step

MAC = {"eth0": "02:00:00:00:00:10", "eth1": "02:00:00:00:00:11", "eth2": "02:00:00:00:00:12"}


@dataclass
class FakeExecutor:
    """Records steps; applies address adds/deletes to the daemon's cached view like the kernel would."""

    daemon: Daemon
    fail: dict[str, str] = field(default_factory=dict)  # step text -> error
    ran: list[str] = field(default_factory=list)
    demoted: dict[str, list[Any]] = field(default_factory=dict)

    async def run_step(self, step: Step) -> None:
        self.ran.append(step.describe())
        if step.describe() in self.fail:
            raise StepFailed(step, self.fail[step.describe()], conflict=isinstance(step, CheckConflict))
        if isinstance(step, AddAddress):
            self.daemon.addresses[(step.ifname, step.interface.ip)] = Address(step.ifname, step.interface)
        elif isinstance(step, DelAddress):
            self.daemon.addresses.pop((step.ifname, step.interface.ip), None)

    def undo_of(self, step: Step) -> Step | None:
        from ipshift.kernel.apply import Executor

        return Executor.undo_of(None, step)  # type: ignore[arg-type]

    def learn_link(self, *a: Any) -> None: ...
    def forget_link(self, *a: Any) -> None: ...


def make(config: dict[str, Any], nics: list[str], addrs: dict[str, list[str]]) -> tuple[Daemon, FakeExecutor]:
    cfg = parse_config(yaml.safe_dump(config), "test.yaml")
    d = Daemon(cfg, "test.yaml", socket_path="/nonexistent")
    links = [Link(n, i + 2, MAC[n], True, True, "UP", "veth") for i, n in enumerate(nics)]
    d.snapshot = Snapshot(links=tuple(links), features=KernelFeatures(vlan_8021q=False, macvlan=True))
    d.links = {l.name: l for l in links}
    d.addresses = {(n, ipaddress.ip_interface(a).ip): Address(n, ipaddress.ip_interface(a))
                   for n, lst in addrs.items() for a in lst}
    for n in nics:
        d.health[n] = hl.initial(n, True, 0.0)
    ex = FakeExecutor(d)
    d.executor = ex
    return d, ex


def link_event(d: Daemon, nic: str, carrier: bool) -> None:
    import time

    l = d.links[nic]
    d._on_link(LinkEvent(nic, l.index, True, carrier, "UP" if carrier else "LOWERLAYERDOWN", "veth", l.mac,
                         time.monotonic()))


def where(d: Daemon) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for (ifname, ip), _ in sorted(d.addresses.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        out.setdefault(str(ip), []).append(ifname)
    return out


CFG = {
    "interfaces": {
        "eth0": {"addresses": ["192.0.2.10/24"]},
        "eth1": {"addresses": ["192.0.2.11/24"]},
        "eth2": {"addresses": ["192.0.2.12/24"]},
    },
    "announce": {"count": 1, "interval": "10ms"},
    "failback": {"mode": "auto", "delay": "1s"},
    "conflict_check": {"enabled": True, "timeout": "10ms"},
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_carrier_loss_runs_the_move_in_order() -> None:
    async def scenario() -> None:
        d, ex = make(CFG, ["eth0", "eth1", "eth2"],
                     {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"], "eth2": ["192.0.2.12/24"]})
        link_event(d, "eth0", False)
        (rec,) = await d.converge_once()
        assert ex.ran == [
            "ARP probe for 192.0.2.10 from eth1 (wait 10 ms)",
            "remove 192.0.2.10/24 from eth0",
            "add 192.0.2.10/24 to eth1",
            "gratuitous ARP for 192.0.2.10 from eth1, 1x every 10 ms",
            "remove neighbour entries of 192.0.2.0/24 on eth0",
            "flush neighbour entries of 192.0.2.0/24",
            "flush the IPv4 route cache",
            "withdraw routes through eth0 while it is failed",
        ]
        assert rec.kind == "failover" and rec.trigger == "carrier lost" and rec.moves[0].ok
        assert where(d)["192.0.2.10"] == ["eth1"]
        assert await d.converge_once() == []  # converged: nothing more to do

    run(scenario())


def test_conflict_on_first_candidate_tries_the_next() -> None:
    async def scenario() -> None:
        d, ex = make(CFG, ["eth0", "eth1", "eth2"],
                     {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"], "eth2": ["192.0.2.12/24"]})
        ex.fail["ARP probe for 192.0.2.10 from eth1 (wait 10 ms)"] = "answered by 02:aa:00:00:00:01"
        link_event(d, "eth0", False)
        (rec1,) = await d.converge_once()
        assert not rec1.moves[0].ok and "02:aa" in rec1.moves[0].error
        assert "remove 192.0.2.10/24 from eth0" not in ex.ran  # nothing touched on a conflict
        (rec2,) = await d.converge_once()
        assert rec2.moves[0].ok and rec2.moves[0].target == "eth2"
        assert where(d)["192.0.2.10"] == ["eth2"]

    run(scenario())


def test_failed_add_is_undone_and_the_next_survivor_is_used() -> None:
    async def scenario() -> None:
        d, ex = make(CFG, ["eth0", "eth1", "eth2"],
                     {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"], "eth2": ["192.0.2.12/24"]})
        ex.fail["add 192.0.2.10/24 to eth1"] = "kernel refused: No buffer space available (errno 105)"
        link_event(d, "eth0", False)
        (rec1,) = await d.converge_once()
        m = rec1.moves[0]
        assert not m.ok and [s.op for s in m.steps][-1] == "undo:AddAddress"  # the delete was undone
        assert where(d)["192.0.2.10"] == ["eth0"]  # back where it was: never lost
        (rec2,) = await d.converge_once()
        assert rec2.moves[0].ok and where(d)["192.0.2.10"] == ["eth2"]

    run(scenario())


def test_operator_failover_and_manual_failback() -> None:
    async def scenario() -> None:
        cfg = dict(CFG, failback={"mode": "manual", "delay": "1s"})
        d, ex = make(cfg, ["eth0", "eth1", "eth2"],
                     {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"], "eth2": ["192.0.2.12/24"]})
        d._journal_now = lambda *a, **k: None  # type: ignore[method-assign]
        answer = await d.cmd_failover("eth0")
        assert answer["ok"] and where(d)["192.0.2.10"] != ["eth0"]
        assert await d.converge_once() == []  # drained: stays away
        answer = await d.cmd_failback("eth0")
        assert answer["ok"] and where(d)["192.0.2.10"] == ["eth0"]
        assert (await d.cmd_failover("eth9"))["error"] == "eth9 is not a configured interface"

    run(scenario())


def test_all_down_then_one_back_adopts_everything() -> None:
    async def scenario() -> None:
        cfg = {"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}, "eth1": {"addresses": ["192.0.2.11/24"]}},
               "conflict_check": {"enabled": False}, "announce": {"count": 1, "interval": "10ms"}}
        d, ex = make(cfg, ["eth0", "eth1"], {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"]})
        link_event(d, "eth0", False)
        link_event(d, "eth1", False)
        assert await d.converge_once() == []  # nowhere to go: addresses stay put
        assert where(d) == {"192.0.2.10": ["eth0"], "192.0.2.11": ["eth1"]}
        link_event(d, "eth1", True)
        d.health["eth1"] = hl.tick(d.health["eth1"], d.health["eth1"].since + 10, d.timing)[0]
        assert d.health["eth1"].usable
        (rec,) = await d.converge_once()
        assert rec.nic == "eth0" and where(d) == {"192.0.2.10": ["eth1"], "192.0.2.11": ["eth1"]}

    run(scenario())


def test_optimistic_conflict_mode_moves_first_and_undoes_on_an_answer() -> None:
    async def scenario() -> None:
        cfg = dict(CFG, conflict_check={"enabled": True, "timeout": "10ms", "mode": "optimistic"})
        d, ex = make(cfg, ["eth0", "eth1", "eth2"],
                     {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"], "eth2": ["192.0.2.12/24"]})
        ex.fail["ARP probe for 192.0.2.10 from eth1 (wait 10 ms)"] = "answered by 02:aa:00:00:00:01"
        link_event(d, "eth0", False)
        (rec1,) = await d.converge_once()
        m = rec1.moves[0]
        # the address was added and announced before the probe's verdict, then taken back
        assert ex.ran.index("add 192.0.2.10/24 to eth1") < ex.ran.index("remove 192.0.2.10/24 from eth1")
        assert not m.ok and "02:aa" in m.error and where(d)["192.0.2.10"] == ["eth0"]
        (rec2,) = await d.converge_once()
        assert rec2.moves[0].ok and where(d)["192.0.2.10"] == ["eth2"]

    run(scenario())


def test_two_kernel_rereads_at_once_each_keep_their_own_overlay(monkeypatch: Any) -> None:
    """The converge loop's re-read and the monitor's (after an overrun) can overlap; the first to end
    must not take the other's overlay away (they compare equal until an event reaches one)."""
    import threading

    import ipshift.kernel.snapshot as snapshot_mod

    d, _ = make({"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]},
                                "eth1": {"addresses": ["192.0.2.11/24"]}}},
                ["eth0", "eth1"], {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"]})
    gates = [threading.Event(), threading.Event()]
    calls: list[int] = []
    kernel = d._view()

    def slow_read(*_a: Any, **_k: Any) -> Snapshot:
        n = len(calls)
        calls.append(n)
        gates[n].wait(5)
        return kernel

    monkeypatch.setattr(snapshot_mod, "read_snapshot", slow_read)

    async def scenario() -> None:
        first = asyncio.create_task(d._resync("converge"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(d._resync("overrun"))
        await asyncio.sleep(0.05)
        assert len(d._overlays) == 2
        gates[1].set()  # the later re-read ends first
        await second
        assert len(d._overlays) == 1
        # an event while the first re-read still runs: it reaches the first re-read's overlay only
        key = ("eth1", ipaddress.ip_address("192.0.2.12"))
        new = Address("eth1", ipaddress.ip_interface("192.0.2.12/24"))
        for _, oa in d._overlays:
            oa[key] = new
        gates[0].set()
        await first
        assert d._overlays == []
        assert d.addresses[key] == new  # the event newer than the dump won

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_route_step_during_a_kernel_reread_is_not_undone_by_it(monkeypatch: Any) -> None:
    """Routes have no notifications here: a re-read whose dump predates our own route steps must not
    put the old routes back into the view (it did: the next round then moved 1,000 routes again)."""
    import threading

    import ipshift.kernel.snapshot as snapshot_mod
    from ipshift.model import Route
    from ipshift.steps import AddRoute, DelRoute

    d, _ = make({"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]},
                                "eth1": {"addresses": ["192.0.2.11/24"]}}},
                ["eth0", "eth1"], {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"]})
    dst = ipaddress.ip_network("198.51.100.0/24")
    via = ipaddress.ip_address("192.0.2.1")
    before = replace_routes(d._view(), (Route(dst=dst, ifname="eth1", gateway=via),))  # what the dump read
    gate = threading.Event()

    def slow_read(*_a: Any, **_k: Any) -> Snapshot:
        gate.wait(5)
        return before

    monkeypatch.setattr(snapshot_mod, "read_snapshot", slow_read)

    async def scenario() -> None:
        task = asyncio.create_task(d._resync("after converge"))
        await asyncio.sleep(0.05)
        d._note(DelRoute(dst, "eth1", via))  # a failback moves the route while the dump runs
        d._note(AddRoute(dst, "eth0", via))
        gate.set()
        await task
        assert [(r.dst, r.ifname) for r in d.snapshot.routes if r.dst == dst] == [(dst, "eth0")]
        assert d._route_logs == []

    asyncio.run(asyncio.wait_for(scenario(), 10))


def replace_routes(snap: Snapshot, routes: tuple[Any, ...]) -> Snapshot:
    from dataclasses import replace

    return replace(snap, routes=routes)


def test_a_batch_of_route_steps_changes_the_view_like_one_step_at_a_time() -> None:
    from ipshift.model import Route
    from ipshift.steps import AddRoute, DelRoute

    via = ipaddress.ip_address("192.0.2.1")
    nets = [ipaddress.ip_network(f"198.51.100.{i}/32") for i in range(40)]
    start = tuple(Route(dst=n, ifname="eth0", gateway=via) for n in nets[:30])
    cfg = {"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}, "eth1": {"addresses": ["192.0.2.11/24"]}}}
    one, _ = make(cfg, ["eth0", "eth1"], {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"]})
    many, _ = make(cfg, ["eth0", "eth1"], {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"]})
    for d in (one, many):
        d.snapshot = replace_routes(d.snapshot, start)
    batches: list[list[Any]] = [[DelRoute(n, "eth0", via) for n in nets[:20]],
                                [AddRoute(n, "eth1", via, 10) for n in nets[:25]],
                                [DelRoute(n, "eth1", via) for n in nets[20:25]]]
    for batch in batches:
        for st in batch:
            one._note(st)
        many._note_many(batch)

    def key(r: Any) -> tuple[str, str, Any]:
        return (str(r.dst), r.ifname, r.metric)

    assert sorted(map(key, one.snapshot.routes)) == sorted(map(key, many.snapshot.routes))
    assert len(many.snapshot.routes) == 10 + 20  # eth0 keeps 20..29, eth1 holds 0..19


def test_records_are_bounded_by_the_moves_they_hold(monkeypatch: Any) -> None:
    import ipshift.daemon as daemon_mod
    from ipshift.daemon import MoveRecord, Record

    monkeypatch.setattr(daemon_mod, "MAX_KEPT_MOVES", 250)
    d, _ = make({"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]},
                                "eth1": {"addresses": ["192.0.2.11/24"]}}},
                ["eth0", "eth1"], {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"]})

    def big(i: int, n: int) -> Record:
        rec = Record(i, "failover", "eth0", "carrier lost", 0.0, 0.0)
        rec.moves = [MoveRecord(f"198.18.{k // 250}.{k % 250 + 1}/16", "eth0", "eth1", "eth1", ok=True)
                     for k in range(n)]
        return rec

    for i, n in enumerate([100, 100, 100, 3, 100], start=1):
        d.records.append(big(i, n))
        d._history.append(d.records[-1].as_dict())
        d._trim_records()
    assert [r.id for r in d.records] == [3, 4, 5]  # 100 + 3 + 100 <= 250; adding 1 or 2 would not be
    assert [h["id"] for h in d._history] == [3, 4, 5]
    d.records.append(big(6, 400))  # one record over the cap alone: it stays, the others go
    d._history.append(d.records[-1].as_dict())
    d._trim_records()
    assert [r.id for r in d.records] == [6] and [h["id"] for h in d._history] == [6]

    # a confirmation re-serializes only the record that holds the move
    d.records.append(big(7, 2))
    d._history.append(d.records[-1].as_dict())
    old6 = d._history[0]
    d.records[-1].moves[0].verified = "confirmed by 192.0.2.1"
    d._history_refresh(d.records[-1].moves[0])
    assert d._history[0] is old6
    assert d._history[1]["moves"][0]["verified"] == "confirmed by 192.0.2.1"
