"""Background conflict knowledge without a network: pairs, pacing, freshness, findings."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Collection, Sequence
from typing import Any

import yaml

from ipshift.config import parse_config
from ipshift.model import Address, IPAddress, KernelFeatures, Link, Snapshot
from ipshift.nics import NicStates
from ipshift.scout import ConflictScout, pace, pairs
from ipshift.status import run_now
from ipshift.view import KernelView

MACS = {"eth0": "02:00:00:00:00:01", "eth1": "02:00:00:00:00:02", "eth2": "02:00:00:00:00:03"}


def config(**conflict: Any) -> Any:
    return parse_config(yaml.safe_dump({
        "interfaces": {"eth0": {"addresses": ["192.0.2.10/24", "192.0.2.50/24", "203.0.113.5/24"]},
                       "eth1": {"addresses": ["192.0.2.11/24"], "backups": ["eth0"]},
                       "eth2": {"addresses": ["192.0.2.12/24", {"address": "198.51.100.7/24", "vlan": 7}]}},
        "conflict_check": {"timeout": "50ms", **conflict}}), "test.yaml")


def snapshot(addrs: dict[str, list[str]]) -> Snapshot:
    links = tuple(Link(n, i + 2, m, True, True, "UP", "veth") for i, (n, m) in enumerate(MACS.items()))
    return Snapshot(links=links, addresses=tuple(Address(n, ipaddress.ip_interface(a)) for n, lst in addrs.items()
                                                 for a in lst), features=KernelFeatures(macvlan=True))


HOME = {"eth0": ["192.0.2.10/24", "192.0.2.50/24", "203.0.113.5/24"], "eth1": ["192.0.2.11/24"],
        "eth2": ["192.0.2.12/24"]}
ip = ipaddress.ip_address


def test_pairs_are_the_nics_a_plan_could_put_each_address_on() -> None:
    got = run_now(pairs(config(), snapshot(HOME)))
    assert (ip("192.0.2.50"), "eth1") in got and (ip("192.0.2.50"), "eth2") in got
    assert (ip("192.0.2.50"), "eth0") not in got  # the holder itself is not asked
    assert not any(a == ip("203.0.113.5") for a, _ in got)  # no other NIC is on its subnet
    assert not any(a == ip("198.51.100.7") for a, _ in got)  # a VLAN address: asked for at failure only
    assert (ip("192.0.2.11"), "eth0") in got and (ip("192.0.2.11"), "eth2") not in got  # eth1's backups: eth0
    away = dict(HOME, eth0=["192.0.2.10/24", "203.0.113.5/24"], eth1=["192.0.2.11/24", "192.0.2.50/24"])
    moved = run_now(pairs(config(), snapshot(away)))
    # on eth1 now: its home, and eth1's backups (eth0, the home), not eth1 itself
    assert [n for a, n in moved if a == ip("192.0.2.50")] == ["eth0"]


def test_pace_spreads_each_cycle_and_caps_the_rate() -> None:
    p = pace(100, 60.0, 100.0)
    assert abs(p.period - 0.6) < 1e-9 and abs(p.cycle - 60.0) < 1e-9 and not p.stretched
    q = pace(10_000, 60.0, 100.0)  # 10,000 pairs at 100/s: 100 s, not 60
    assert abs(q.period - 0.01) < 1e-9 and abs(q.cycle - 100.0) < 1e-9 and q.stretched
    assert pace(0, 60.0, 100.0).cycle == 60.0


class FakeProbe:
    def __init__(self, answers: dict[IPAddress, str]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[IPAddress, ...], float]] = []

    async def __call__(self, nic: str, mac: str, ips: Sequence[IPAddress], timeout: float,
                       own: Collection[str]) -> dict[IPAddress, str]:
        assert mac == MACS[nic] and set(MACS.values()) <= set(own)  # this host's MACs are never a conflict
        self.calls.append((nic, tuple(ips), timeout))
        return {a: why for a, why in self.answers.items() if a in ips}


async def run_scout(cfg: Any, probe: FakeProbe, seconds: float) -> None:
    """A scout over the HOME snapshot, run for ``seconds`` and cancelled."""
    view = KernelView(lambda: snapshot(HOME))
    await view.reread("test")
    nics = NicStates(cfg, on_change=lambda: None)
    nics.start(view.links)
    idle = asyncio.Event()
    idle.set()
    task = asyncio.create_task(ConflictScout(lambda: cfg, view, nics, idle, probe=probe).run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    nics.close()


def test_a_sweep_keeps_findings_fresh_for_two_cycles_and_only_since_the_nics_last_change() -> None:
    async def scenario() -> None:
        now = [1000.0]
        cfg = config(background={"every": "10s", "max_rate": 1000})
        view = KernelView(lambda: snapshot(HOME))
        await view.reread("test")
        nics = NicStates(cfg, on_change=lambda: None, clock=lambda: now[0])
        nics.start(view.links)
        idle = asyncio.Event()
        idle.set()
        probe = FakeProbe({ip("192.0.2.50"): "02:1b:00:00:02:00 answered"})
        scout = ConflictScout(lambda: cfg, view, nics, idle, probe=probe, clock=lambda: now[0])
        assert scout.fresh(ip("192.0.2.10"), "eth1") is None  # nothing known yet
        task = asyncio.create_task(scout.run())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if scout.report()["known"] >= 5 and scout.report()["cycle_s"] > 0:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert probe.calls and all(t == 0.05 for _, _, t in probe.calls)
        clear = scout.fresh(ip("192.0.2.10"), "eth1")
        assert clear is not None and clear.reason == ""
        assert scout.in_use() == {(ip("192.0.2.50"), "eth1"): "in use on the segment of eth1: 02:1b:00:00:02:00 "
                                  "answered (background probe)",
                                  (ip("192.0.2.50"), "eth2"): "in use on the segment of eth2: 02:1b:00:00:02:00 "
                                  "answered (background probe)"}
        rep = scout.report()
        assert {(c["address"], c["nic"]) for c in rep["conflicts"]} == {("192.0.2.50", "eth1"), ("192.0.2.50", "eth2")}
        assert rep["probes"] == sum(len(ips) for _, ips, _ in probe.calls)
        now[0] += 2 * rep["cycle_s"] + 1.0  # two cycles and the timeout later: stale
        assert scout.fresh(ip("192.0.2.10"), "eth1") is None and scout.in_use() == {}
        now[0] -= 2 * rep["cycle_s"] + 1.0
        now[0] += 0.5
        nics.link_changed("eth1", None, now[0], "gone")  # eth1 changed since: its findings say nothing
        now[0] += 0.5
        assert scout.fresh(ip("192.0.2.10"), "eth1") is None
        assert scout.fresh(ip("192.0.2.10"), "eth2") is not None
        nics.close()

    asyncio.run(scenario())


def test_no_background_probes_when_off_or_when_the_check_is_off() -> None:
    async def scenario(**conflict: Any) -> list[Any]:
        probe = FakeProbe({})
        await run_scout(config(**conflict), probe, 0.05)
        return probe.calls

    assert asyncio.run(scenario(background=None)) == []
    assert asyncio.run(scenario(enabled=False)) == []


def test_batches_overlap_a_probes_wait_does_not_hold_the_schedule() -> None:
    class SlowProbe(FakeProbe):
        def __init__(self) -> None:
            super().__init__({})
            self.live = self.most = 0

        async def __call__(self, nic: str, mac: str, ips: Sequence[IPAddress], timeout: float,
                           own: Collection[str]) -> dict[IPAddress, str]:
            self.live += 1
            self.most = max(self.most, self.live)
            await asyncio.sleep(timeout)  # listening for answers, as a real probe does
            self.live -= 1
            return await super().__call__(nic, mac, ips, timeout, own)

    async def scenario() -> SlowProbe:
        probe = SlowProbe()
        # 1 pair per 50 ms
        await run_scout(config(timeout="300ms", background={"every": "10s", "max_rate": 20}), probe, 0.45)
        return probe

    probe = asyncio.run(scenario())
    # a pair every 100 ms (one tick), each listening 300 ms: three or more in flight at once
    assert probe.most >= 3, probe.most
