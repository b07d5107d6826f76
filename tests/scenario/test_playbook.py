"""Scenario tests: a sequence of kernel events in, the exact steps and the records out.

Every scenario drives the daemon through its public surface (``dispatch``, ``converge_once``,
``converge_round``, the operator commands, ``status``) on an in-memory kernel; see
``playbook.py``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from typing import Any

import pytest
from playbook import Playbook

CFG: dict[str, Any] = {
    "interfaces": {
        "eth0": {"addresses": ["192.0.2.10/24"]},
        "eth1": {"addresses": ["192.0.2.11/24"]},
        "eth2": {"addresses": ["192.0.2.12/24"]},
    },
    "announce": {"count": 1, "interval": "10ms"},
    "failback": {"mode": "auto", "delay": "1s"},
    "conflict_check": {"enabled": True, "timeout": "10ms"},
}
THREE = ["eth0", "eth1", "eth2"]
HOMES = {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"], "eth2": ["192.0.2.12/24"]}
PROBE_ETH1 = "ARP probe for 192.0.2.10 from eth1 (wait 10 ms)"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_carrier_loss_runs_the_move_in_order() -> None:
    async def scenario() -> None:
        pb = Playbook(CFG, THREE, HOMES)
        await pb.carrier("eth0", False)
        (rec,) = await pb.converge()
        assert pb.kernel.ran == [
            PROBE_ETH1,
            "add 192.0.2.10/24 to eth1",
            "gratuitous ARP for 192.0.2.10 from eth1, 1x every 10 ms",
            "keep the routes through eth0",
            "remove 192.0.2.10/24 from eth0",
            "remove neighbour entries of 192.0.2.0/24 on eth0",
            "flush neighbour entries of 192.0.2.0/24",
            "flush the IPv4 route cache",
            "withdraw routes through eth0 while it is failed",
        ]
        assert rec["kind"] == "failover" and rec["trigger"] == "carrier lost" and rec["trigger_kind"] == "link"
        (move,) = rec["moves"]
        assert move["ok"] and [s["op"] for s in move["steps"]] == [
            "CheckConflict", "AddAddress", "Announce", "SaveRoutes", "DelAddress", "DelNeighbours",
            "FlushNeighbours", "FlushRouteCache"]
        assert move["first_announce_ms"] is not None
        assert [s["op"] for s in rec["nic_steps"]] == ["DemoteRoutes"]
        assert pb.where()["192.0.2.10"] == ["eth1"]
        assert await pb.converge() == []  # converged: nothing more to do

    run(scenario())


def test_conflict_on_first_candidate_tries_the_next() -> None:
    async def scenario() -> None:
        pb = Playbook(CFG, THREE, HOMES)
        pb.kernel.answers[("eth1", ipaddress.ip_address("192.0.2.10"))] = "02:aa:00:00:00:01"
        await pb.carrier("eth0", False)
        (rec1,) = await pb.converge()
        m = rec1["moves"][0]
        assert not m["ok"] and m["conflict"] and "02:aa" in m["error"]
        assert [s["op"] for s in m["steps"]] == ["CheckConflict"]  # nothing touched on a conflict
        (rec2,) = await pb.converge()
        assert rec2["moves"][0]["ok"] and rec2["moves"][0]["target"] == "eth2"
        assert pb.where()["192.0.2.10"] == ["eth2"]

    run(scenario())


def test_a_failed_add_leaves_the_address_where_it_was_and_the_next_survivor_is_used() -> None:
    async def scenario() -> None:
        pb = Playbook(CFG, THREE, HOMES)
        pb.kernel.fail["add 192.0.2.10/24 to eth1"] = "kernel refused: No buffer space available (errno 105)"
        await pb.carrier("eth0", False)
        (rec1,) = await pb.converge()
        m = rec1["moves"][0]
        assert not m["ok"] and m["error"].startswith("add 192.0.2.10/24 to eth1: kernel refused")
        # make before break: the address had not left eth0, so there is nothing to undo
        assert not any(s["undo"] for s in m["steps"]) and "remove 192.0.2.10/24 from eth0" not in pb.kernel.ran
        assert pb.where()["192.0.2.10"] == ["eth0"]  # never lost
        (rec2,) = await pb.converge()
        assert rec2["moves"][0]["ok"] and pb.where()["192.0.2.10"] == ["eth2"]

    run(scenario())


def test_undo_runs_newest_first() -> None:
    async def scenario() -> None:
        cfg = {**CFG, "interfaces": {**CFG["interfaces"], "eth0": {
            "addresses": ["192.0.2.10/24"], "routes": [{"to": "198.51.100.0/24", "via": "192.0.2.1"}]}}}
        from ipshift.model import Route

        route = Route(dst=ipaddress.ip_network("198.51.100.0/24"), ifname="eth0",
                      gateway=ipaddress.ip_address("192.0.2.1"))
        pb = Playbook(cfg, THREE, HOMES, routes=[route])
        pb.kernel.fail["flush neighbour entries of 192.0.2.0/24"] = "kernel refused: EPERM"
        await pb.carrier("eth0", False)
        (rec,) = await pb.converge()
        undo = [s["text"] for s in rec["moves"][0]["steps"] if s["undo"]]
        assert undo == ["add 192.0.2.10/24 to eth0", "remove 192.0.2.10/24 from eth1"]
        assert pb.where()["192.0.2.10"] == ["eth0"]
        # no move stood, so the plan's routes stayed where they were
        assert [(r.ifname, str(r.dst)) for r in pb.kernel.routes] == [("eth0", "198.51.100.0/24")]

    run(scenario())


def test_operator_failover_and_manual_failback() -> None:
    async def scenario() -> None:
        pb = Playbook({**CFG, "failback": {"mode": "manual", "delay": "1s"}}, THREE, HOMES)
        answer = await pb.daemon.cmd_failover("eth0")
        assert answer.ok and pb.where()["192.0.2.10"] != ["eth0"]
        assert pb.record(pb.daemon.history.kept_ids[-1])["trigger"] == "operator: ipshift failover"
        assert await pb.converge() == []  # drained: stays away
        answer = await pb.daemon.cmd_failback("eth0")
        assert answer.ok and pb.where()["192.0.2.10"] == ["eth0"]
        rec = pb.record(pb.daemon.history.kept_ids[-1])
        assert rec["kind"] == "failback" and rec["trigger"] == "operator: ipshift failback"
        assert (await pb.daemon.cmd_failover("eth9")).error == "eth9 is not a configured interface"

    run(scenario())


def test_all_down_then_one_back_adopts_everything() -> None:
    async def scenario() -> None:
        cfg = {"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}, "eth1": {"addresses": ["192.0.2.11/24"]}},
               "conflict_check": {"enabled": False}, "announce": {"count": 1, "interval": "10ms"}}
        pb = Playbook(cfg, ["eth0", "eth1"], {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"]})
        await pb.carrier("eth0", False)
        await pb.carrier("eth1", False)
        assert await pb.converge() == []  # nowhere to go: addresses stay put
        assert pb.where() == {"192.0.2.10": ["eth0"], "192.0.2.11": ["eth1"]}
        await pb.carrier("eth1", True)
        assert not pb.daemon.nics.usable()["eth1"]  # returning: waits for the failback delay
        pb.later(10, "eth1")
        assert pb.daemon.nics.usable()["eth1"]
        (rec,) = await pb.converge()
        assert rec["nic"] == "eth0" and pb.where() == {"192.0.2.10": ["eth1"], "192.0.2.11": ["eth1"]}

    run(scenario())


def test_optimistic_conflict_mode_moves_first_and_undoes_on_an_answer() -> None:
    async def scenario() -> None:
        cfg = {**CFG, "conflict_check": {"enabled": True, "timeout": "10ms", "mode": "optimistic"}}
        pb = Playbook(cfg, THREE, HOMES)
        pb.kernel.answers[("eth1", ipaddress.ip_address("192.0.2.10"))] = "02:aa:00:00:00:01"
        await pb.carrier("eth0", False)
        (rec1,) = await pb.converge()
        m = rec1["moves"][0]
        ran = pb.kernel.ran
        # the address was added and announced before the probe's verdict, then taken back
        assert ran.index("add 192.0.2.10/24 to eth1") < ran.index("remove 192.0.2.10/24 from eth1")
        assert not m["ok"] and m["conflict"] and "02:aa" in m["error"] and pb.where()["192.0.2.10"] == ["eth0"]
        (rec2,) = await pb.converge()
        assert rec2["moves"][0]["ok"] and pb.where()["192.0.2.10"] == ["eth2"]

    run(scenario())


# --------------------------------------------------------------------------- bulk: the same model, batched


def bulk(n: int, **extra: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    addrs = [f"198.18.{i // 200}.{i % 200 + 10}/16" for i in range(n)]
    cfg = {"interfaces": {"eth0": {"addresses": list(addrs)}, "eth1": {"addresses": ["198.18.1.1/16"]}},
           "announce": {"count": 1, "interval": "10ms"}, "conflict_check": {"enabled": False}, **extra}
    return cfg, {"eth0": addrs, "eth1": ["198.18.1.1/16"]}


def test_a_bulk_plan_runs_each_kind_of_step_in_one_batch_and_records_every_move() -> None:
    async def scenario() -> None:
        cfg, addrs = bulk(40)
        pb = Playbook(cfg, ["eth0", "eth1"], addrs)
        await pb.carrier("eth0", False)
        (rec,) = await pb.converge()
        assert len(rec["moves"]) == 40 and all(m["ok"] for m in rec["moves"])
        # one batch per kind (the neighbour and cache flushes are the same step 40 times: run once)
        assert pb.kernel.batches == [("AddAddress", 40), ("Announce", 40), ("SaveRoutes", 40), ("DelAddress", 40),
                                     ("DelNeighbours", 40), ("FlushNeighbours", 40), ("FlushRouteCache", 40),
                                     ("DemoteRoutes", 1)]
        for m in rec["moves"]:  # every move has its own steps, as a single move would
            assert [s["op"] for s in m["steps"]] == ["AddAddress", "Announce", "SaveRoutes", "DelAddress",
                                                     "DelNeighbours", "FlushNeighbours", "FlushRouteCache"]
            assert m["first_announce_ms"] is not None
        assert all(pb.where()[f"198.18.0.{i + 10}"] == ["eth1"] for i in range(40))

    run(scenario())


def test_a_bulk_plan_adds_the_macvlan_before_the_addresses_whatever_comes_first() -> None:
    """The first move keeps its MAC, a later one moves it: the macvlan must still exist before any
    address is added to it (bulk used to order the phases by the first move's steps)."""
    async def scenario() -> None:
        cfg, addrs = bulk(30)
        cfg["interfaces"]["eth0"]["addresses"][25] = {"address": "198.18.0.35/16", "mac": "move"}
        pb = Playbook(cfg, ["eth0", "eth1"], addrs)
        await pb.carrier("eth0", False)
        (rec,) = await pb.converge()
        kinds = [k for k, _ in pb.kernel.batches]
        assert kinds.index("AddMacvlan") < kinds.index("AddAddress")
        assert all(m["ok"] for m in rec["moves"]), [m["error"] for m in rec["moves"] if not m["ok"]]
        assert pb.where()["198.18.0.35"] == ["ipsmv2s3"]

    run(scenario())


def test_a_bulk_plan_in_optimistic_mode_undoes_only_the_address_that_was_answered() -> None:
    async def scenario() -> None:
        cfg, addrs = bulk(30, conflict_check={"enabled": True, "timeout": "10ms", "mode": "optimistic"})
        pb = Playbook(cfg, ["eth0", "eth1"], addrs)
        taken = ipaddress.ip_address("198.18.0.20")
        pb.kernel.answers[("eth1", taken)] = "02:aa:00:00:00:01"
        await pb.carrier("eth0", False)
        (rec,) = await pb.converge()
        bad = [m for m in rec["moves"] if not m["ok"]]
        assert [m["address"] for m in bad] == ["198.18.0.20/16"] and bad[0]["conflict"]
        # moved and announced first, the probe started after the announcement, then judged, then undone
        assert [(s["op"], s["undo"]) for s in bad[0]["steps"]] == [
            ("AddAddress", False), ("Announce", False), ("CheckConflict", False), ("SaveRoutes", False),
            ("DelAddress", False), ("DelNeighbours", False), ("FlushNeighbours", False), ("FlushRouteCache", False),
            ("AddAddress", True), ("DelAddress", True)]
        # the failed NIC's routes were withdrawn while the probes still waited, not after their answers
        probe = next(s for s in bad[0]["steps"] if s["op"] == "CheckConflict")
        (demote,) = [s for s in rec["nic_steps"] if s["op"] == "DemoteRoutes"]
        undo = next(s for s in bad[0]["steps"] if s["undo"])
        assert demote["at_ms"] < undo["at_ms"] and demote["at_ms"] <= probe["at_ms"] + probe["ms"]
        assert pb.where()["198.18.0.20"] == ["eth0"] and pb.where()["198.18.0.21"] == ["eth1"]

    run(scenario())


def test_every_move_of_a_bulk_plan_is_verified() -> None:
    async def scenario() -> None:
        cfg, addrs = bulk(20, detect={"probe": {"targets": ["198.18.255.1"], "interval": "100ms"}})
        pb = Playbook(cfg, ["eth0", "eth1"], addrs)
        target = ipaddress.ip_address("198.18.255.1")
        for i in range(19):
            pb.verifier.confirms[("eth1", ipaddress.ip_address(f"198.18.0.{i + 10}"))] = target
        await pb.carrier("eth0", False)
        (rec,) = await pb.converge()
        assert rec["verification"]["state"] == "checking"
        await pb.settled()
        (asked,) = pb.verifier.asked
        assert asked[0] == "eth1" and len(asked[1]) == 20 and asked[2] == (target,)
        v = pb.record(rec["id"])["verification"]
        assert v["state"] == "done"
        assert sum(1 for r in v["moves"].values() if r["result"] == "confirmed") == 19
        assert v["moves"]["198.18.0.29/16"] == {"result": "unconfirmed", "by": None, "at_ms": None,
                                                "detail": "no answer"}

    run(scenario())


def test_a_single_move_is_verified_the_same_way() -> None:
    async def scenario() -> None:
        cfg = {**CFG, "detect": {"probe": {"targets": ["192.0.2.1"], "interval": "100ms"}}}
        pb = Playbook(cfg, THREE, HOMES)
        pb.verifier.confirms[("eth1", ipaddress.ip_address("192.0.2.10"))] = ipaddress.ip_address("192.0.2.1")
        await pb.carrier("eth0", False)
        (rec,) = await pb.converge()
        await pb.settled()
        v = pb.record(rec["id"])["verification"]
        assert v["state"] == "done" and v["moves"]["192.0.2.10/24"]["by"] == "192.0.2.1"

    run(scenario())


# --------------------------------------------------------------------------- reload, refusals, probe-only NICs


def test_reload_places_a_new_address_and_refuses_a_bad_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import yaml

    async def scenario() -> None:
        cfg = {**CFG, "conflict_check": {"enabled": False}}
        pb = Playbook(cfg, THREE, HOMES, path=tmp_path / "ipshift.yaml")
        new = {**cfg, "interfaces": {**cfg["interfaces"], "eth2": {"addresses": ["192.0.2.12/24", "192.0.2.13/24"]}}}
        pb.path.write_text(yaml.safe_dump(new))  # type: ignore[union-attr]
        await pb.daemon.reload()
        (rec,) = await pb.converge()
        assert rec["kind"] == "failback" and rec["trigger"] == "placement"
        assert pb.where()["192.0.2.13"] == ["eth2"]
        pb.path.write_text("interfaces: {eth0: {addresses: [nonsense]}}\n")  # type: ignore[union-attr]
        with caplog.at_level(logging.ERROR, logger="ipshift.config"):
            await pb.daemon.reload()
        assert "reload refused" in caplog.text and "ipshift.yaml:1" in caplog.text
        assert "eth2" in pb.daemon.config.interfaces and await pb.converge() == []  # nothing lost

    run(scenario())


def test_a_refusal_that_recurs_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        cfg = {"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}, "eth1": {"addresses": ["198.51.100.11/24"]}},
               "conflict_check": {"enabled": False}}
        pb = Playbook(cfg, ["eth0", "eth1"], {"eth0": ["192.0.2.10/24"], "eth1": ["198.51.100.11/24"]})
        with caplog.at_level(logging.WARNING, logger="ipshift.records"):
            await pb.carrier("eth0", False)
            await pb.converge()
            await pb.converge()  # still refused: not logged twice
            assert caplog.text.count("192.0.2.10/24 stays on eth0") == 1
            await pb.carrier("eth0", True)
            pb.later(10, "eth0")
            await pb.converge()  # the refusal ended
            await pb.carrier("eth0", False)
            await pb.converge()  # ... and came back: logged again
        assert caplog.text.count("192.0.2.10/24 stays on eth0") == 2

    run(scenario())


def test_detect_link_false_leaves_carrier_to_the_path_probes() -> None:
    async def scenario() -> None:
        cfg = {**CFG, "conflict_check": {"enabled": False},
               "detect": {"link": False, "probe": {"targets": ["192.0.2.1"], "interval": "100ms"}}}
        pb = Playbook(cfg, THREE, HOMES)
        await pb.carrier("eth0", False)
        assert pb.daemon.nics.usable()["eth0"] and await pb.converge() == []
        pb.daemon.nics.path_changed("eth0", "up", "", pb.clock())
        pb.daemon.nics.path_changed("eth0", "failed", "path lost: 3 probe rounds unanswered", pb.clock())
        (rec,) = await pb.converge()
        assert rec["trigger_kind"] == "path" and rec["moves"][0]["ok"]

    run(scenario())


def test_a_renamed_nic_is_a_gone_nic_and_keeps_its_addresses_in_the_view() -> None:
    async def scenario() -> None:
        from dataclasses import replace

        pb = Playbook({**CFG, "conflict_check": {"enabled": False}}, THREE, HOMES)
        old = pb.kernel.links.pop("eth0")
        pb.kernel.addresses = {(("eth9" if k[0] == "eth0" else k[0]), k[1]): replace(a, ifname="eth9")
                               if k[0] == "eth0" else a for k, a in pb.kernel.addresses.items()}
        await pb.link(replace(old, name="eth9"))
        assert pb.daemon.view.link("eth0") is None
        assert pb.daemon.view.snapshot().where_is(ipaddress.ip_address("192.0.2.10"))[0].ifname == "eth9"
        assert not pb.daemon.nics.usable()["eth0"]
        assert "renamed to eth9" in pb.daemon.nics.health()["eth0"].reason

    run(scenario())


# --------------------------------------------------------------------------- status never competes with a plan


def test_status_waits_while_a_plan_changes_the_kernel_and_reuses_each_record() -> None:
    async def scenario() -> None:
        cfg, addrs = bulk(600)
        pb = Playbook(cfg, ["eth0", "eth1"], addrs)
        await pb.carrier("eth0", False)
        await pb.converge()
        assert pb.daemon.history.encoded == 1
        for _ in range(5):
            st = await pb.status()
        assert pb.daemon.history.encoded == 1  # five status answers, the record serialised once
        assert len(st["failovers"][0]["moves"]) == 600 and len(st["addresses"]) == 601
        # a plan under way: status waits until it has changed the kernel
        await pb.carrier("eth1", False)
        await pb.carrier("eth0", True)
        pb.later(10, "eth0")
        pb.kernel.gate, pb.kernel.gate_kind = asyncio.Event(), "DelAddress"
        plan = asyncio.ensure_future(pb.daemon.converge_once())
        while not pb.kernel.batches or pb.kernel.batches[-1][0] != "DelAddress":
            await asyncio.sleep(0)
        status = asyncio.ensure_future(pb.daemon.status())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not status.done()
        pb.kernel.gate.set()
        await plan
        parts = await status
        assert parts and not plan.exception()

    run(scenario())


def test_a_failed_announcement_is_sent_again_and_the_move_stands() -> None:
    async def scenario() -> None:
        pb = Playbook({**CFG, "conflict_check": {"enabled": False}}, THREE, HOMES)
        pb.kernel.fail["gratuitous ARP for 192.0.2.10 from eth1, 1x every 10 ms"] = "Network is down (errno 100)"
        await pb.carrier("eth0", False)
        (rec,) = await pb.converge()
        (m,) = rec["moves"]
        assert m["ok"] and pb.where()["192.0.2.10"] == ["eth1"]
        announces = [s for s in m["steps"] if s["op"] == "Announce"]
        assert [a["ok"] for a in announces] == [False, False]  # the first try and the retry, both recorded
        assert not any(s["undo"] for s in m["steps"])

    run(scenario())


def test_an_unverified_nic_is_no_target_while_another_is_verified() -> None:
    async def scenario() -> None:
        cfg = {**CFG, "conflict_check": {"enabled": False},
               "detect": {"probe": {"targets": ["192.0.2.1"], "interval": "100ms"}}}
        pb = Playbook(cfg, THREE, HOMES)
        nics = pb.daemon.nics
        nics.paths_changed([(n, "unverified", "", pb.clock()) for n in THREE])
        assert all(nics.usable().values())  # nobody verified: nobody held down (a silent target at boot)
        nics.paths_changed([("eth1", "up", "", pb.clock()), ("eth2", "up", "", pb.clock())])
        assert nics.usable() == {"eth0": False, "eth1": True, "eth2": True}
        assert "not verified" in nics.unhealthy()["eth0"]
        (rec,) = await pb.converge()  # eth0's address goes to a NIC whose path answers
        assert rec["nic"] == "eth0" and rec["trigger_kind"] == "path"
        assert pb.where()["192.0.2.10"] != ["eth0"]
        nics.paths_changed([("eth0", "up", "path confirmed", pb.clock())])
        assert not nics.usable()["eth0"]  # verified: back after the failback delay, not at once
        pb.later(10, "eth0")
        (back,) = await pb.converge()
        assert back["kind"] == "failback" and pb.where()["192.0.2.10"] == ["eth0"]

    run(scenario())


# --------------------------------------------------------------------------- the device life cycle


def test_a_nic_deleted_while_the_monitor_overran_is_still_failed() -> None:
    async def scenario() -> None:
        from ipshift.events import Resync

        pb = Playbook({**CFG, "conflict_check": {"enabled": False}}, THREE, HOMES)
        pb.kernel.links.pop("eth0")  # deleted; the notification was lost in the overrun
        pb.kernel.addresses = {k: a for k, a in pb.kernel.addresses.items() if k[0] != "eth0"}
        await pb.daemon.dispatch(Resync("netlink receive buffer overrun (ENOBUFS)", pb.clock()))
        assert not pb.daemon.nics.usable()["eth0"]
        (rec,) = await pb.converge()
        assert rec["nic"] == "eth0" and rec["moves"][0]["ok"] and pb.where()["192.0.2.10"] != ["eth0"]

    run(scenario())


def test_a_deleted_nics_mac_still_moves_with_its_address() -> None:
    async def scenario() -> None:
        cfg = {**CFG, "conflict_check": {"enabled": False},
               "interfaces": {**CFG["interfaces"], "eth0": {"addresses": [{"address": "192.0.2.10/24", "mac": "move"}]}}}
        pb = Playbook(cfg, THREE, HOMES)
        mac = pb.kernel.links["eth0"].mac
        await pb.gone("eth0")
        (rec,) = await pb.converge()
        assert rec["moves"][0]["ok"] and pb.where()["192.0.2.10"] == ["ipsmv2s3"]
        assert pb.kernel.links["ipsmv2s3"].mac == mac  # remembered from before the device went

    run(scenario())


def test_an_empty_macvlan_left_behind_is_removed_and_a_nic_whose_mac_moved_gets_a_stand_in() -> None:
    async def scenario() -> None:
        from ipshift.model import Link
        from ipshift.steps import stand_in_mac

        cfg = {**CFG, "conflict_check": {"enabled": False},
               "interfaces": {**CFG["interfaces"], "eth0": {"addresses": [{"address": "192.0.2.10/24", "mac": "move"}]}}}
        pb = Playbook(cfg, THREE, HOMES)
        stray = Link("ipsmv9", 9, "02:00:00:00:00:99", True, True, "UP", "macvlan", parent=3)  # on eth1, empty
        pb.kernel.links["ipsmv9"] = stray
        await pb.link(stray)
        (rec,) = await pb.converge()
        assert [s["op"] for s in rec["nic_steps"]] == ["DelLink"] and "ipsmv9" not in pb.kernel.links
        mac = pb.kernel.links["eth0"].mac
        await pb.carrier("eth0", False)
        (rec,) = await pb.converge()
        assert "set the MAC of eth0 to " + stand_in_mac(mac) in pb.kernel.ran

    run(scenario())


def test_a_moved_mac_stays_its_home_nics_when_the_address_moves_again_and_comes_home() -> None:
    """eth0's mac: move address goes to eth1 (a macvlan with eth0's MAC), then eth1 fails: the next
    macvlan carries eth0's MAC again -- not eth1's -- and eth1 keeps its own; home, eth0 gets its
    MAC back from its stand-in."""
    async def scenario() -> None:
        from ipshift.steps import stand_in_mac

        cfg = {**CFG, "conflict_check": {"enabled": False}, "failback": {"mode": "auto", "delay": "1s"},
               "interfaces": {**CFG["interfaces"], "eth0": {"addresses": [{"address": "192.0.2.10/24", "mac": "move"}]}}}
        pb = Playbook(cfg, THREE, HOMES)
        mac0, mac1 = pb.kernel.links["eth0"].mac, pb.kernel.links["eth1"].mac
        await pb.carrier("eth0", False)
        await pb.converge()
        await pb.daemon.view.reread("test")
        (first,) = pb.where()["192.0.2.10"]
        assert pb.kernel.links[first].mac == mac0 and pb.kernel.links["eth0"].mac == stand_in_mac(mac0)
        await pb.carrier("eth1", False)  # the first survivor (fewest addresses, then by name)
        await pb.converge()
        await pb.daemon.view.reread("test")
        (second,) = pb.where()["192.0.2.10"]
        assert second != first and pb.kernel.links[second].mac == mac0
        assert pb.kernel.links["eth1"].mac == mac1  # the survivor that failed keeps its own MAC
        await pb.carrier("eth0", True)
        pb.later(10, "eth0")
        await pb.converge()
        await pb.daemon.view.reread("test")
        assert pb.where()["192.0.2.10"] == ["eth0"] and pb.kernel.links["eth0"].mac == mac0

    run(scenario())
