"""NIC states across a restart: verdicts, hold-downs and drains come back as they were."""

from __future__ import annotations

import asyncio
import ipaddress

import yaml

from ipshift.config import parse_config
from ipshift.journal import DurableState, NicRecord
from ipshift.model import Address, Link, Snapshot
from ipshift.nics import NicStates
from ipshift.policy import confirmed_announcements
from ipshift.steps import Announce

CFG = parse_config(yaml.safe_dump({"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]},
                                                  "eth1": {"addresses": ["192.0.2.11/24"]}},
                                   "failback": {"delay": "2s", "flap_count": 4, "flap_window": "10s"}}))
UP = {n: Link(n, i + 2, f"02:00:00:00:00:1{i}", True, True, "UP", "veth") for i, n in enumerate(("eth0", "eth1"))}


def test_a_restart_keeps_a_failed_path_a_hold_down_and_a_drain() -> None:
    async def scenario() -> None:
        now = [100.0]
        before = NicStates(CFG, on_change=lambda: None, clock=lambda: now[0])
        before.start(UP)
        before.paths_changed([("eth0", "up", "", now[0]), ("eth1", "up", "", now[0])])
        before.path_changed("eth0", "failed", "path lost", now[0])
        before.drain("eth1")
        # the state file round trip
        doc = DurableState(boot_id="b1", nics=before.records(), drained=before.drained()).to_doc()
        saved = DurableState.from_doc(doc)
        assert saved.nics["eth0"] == NicRecord("down", 100.0, False, "path lost", (100.0,), "failed")
        now[0] = 101.0
        after = NicStates(CFG, on_change=lambda: None, clock=lambda: now[0])
        after.start(UP, drained=saved.drained, saved=saved.nics)
        h = after.health()
        assert h["eth0"].state == "down" and h["eth0"].path == "failed"  # the link is fine; its path was not
        assert h["eth1"].drained and not after.usable()["eth1"]
        held = NicRecord("held", 95.0, True, "flapping", (93.0, 94.0, 95.0, 96.0), "up")
        again = NicStates(CFG, on_change=lambda: None, clock=lambda: now[0])
        again.start(UP, saved={"eth0": held, "eth1": saved.nics["eth1"]})
        assert again.health()["eth0"].state == "held" and not again.usable()["eth0"]
        again.close()
        after.close()
        before.close()

    asyncio.run(scenario())


def test_addresses_placed_on_an_unverified_path_are_handed_back_once_it_answers() -> None:
    async def scenario() -> None:
        now, woken = [100.0], []
        nics = NicStates(CFG, on_change=lambda: woken.append(1), clock=lambda: now[0])
        nics.start(UP)
        nics.paths_changed([("eth0", "unverified", "", now[0]), ("eth1", "unverified", "", now[0])])
        a, b, c = (ipaddress.ip_address(f"192.0.2.{i}") for i in (20, 21, 22))
        nics.placed([("eth1", a), ("eth1", b)])
        nics.paths_changed([("eth0", "up", "", now[0])])
        assert nics.take_confirmed() == {}  # another NIC's path: nothing for eth1 yet
        nics.placed([("eth0", c)])  # eth0's path is verified: announced into a live path, not kept
        woken.clear()
        nics.paths_changed([("eth1", "up", "", now[0])])
        assert woken, "the converge loop is woken to announce them"
        assert nics.take_confirmed() == {"eth1": {a, b}}
        assert nics.take_confirmed() == {}  # handed over once
        nics.path_changed("eth1", "failed", "path lost", now[0])
        nics.path_changed("eth1", "up", "", now[0])
        assert nics.take_confirmed() == {}  # nothing was placed on it since
        nics.close()

    asyncio.run(scenario())


def test_confirmed_announcements_are_for_the_addresses_still_on_that_nic() -> None:
    snap = Snapshot(
        links=(UP["eth0"], UP["eth1"]),
        addresses=tuple(Address("eth1", ipaddress.ip_interface(f"192.0.2.{i}/24")) for i in (20, 21))
        + (Address("eth0", ipaddress.ip_interface("192.0.2.22/24")),))
    a, b, c, gone = (ipaddress.ip_address(f"192.0.2.{i}") for i in (20, 21, 22, 23))
    steps = confirmed_announcements(CFG, snap, {"eth1": {a, b, c, gone}}, moved={b})
    assert steps == [Announce("eth1", a, CFG.announce.count, CFG.announce.interval)]
