"""Status and metrics views: pure, in slices, never re-serialising a record."""

from __future__ import annotations

import asyncio
import ipaddress
import json

import yaml

from ipshift import health as hl
from ipshift.config import parse_config
from ipshift.model import Address, Link, Snapshot
from ipshift.status import SLICE, StatusInputs, away_placements, drive, metrics_view, run_now, status_parts

N = 2000
CFG = parse_config(yaml.safe_dump({"interfaces": {
    "eth0": {"addresses": [f"198.18.{i // 200}.{i % 200 + 10}/16" for i in range(N)]},
    "eth1": {"addresses": ["198.18.255.1/16"]}}}))
LINKS = (Link("eth0", 2, "02:00:00:00:00:10", True, False, "DOWN", "veth"),
         Link("eth1", 3, "02:00:00:00:00:11", True, True, "UP", "veth"))
SNAP = Snapshot(links=LINKS, addresses=tuple(Address("eth1", a.address) for _, a in CFG.all_addresses()))
HEALTH = {"eth0": hl.initial("eth0", False, 0.0), "eth1": hl.initial("eth1", True, 0.0)}


def inputs() -> StatusInputs:
    return StatusInputs(CFG, "test.yaml", 1, True, HEALTH, SNAP, {"198.18.0.10": ("eth1", 5.0)}, 10.0, 100.0)


def test_status_yields_every_slice_of_addresses_and_splices_the_records_as_they_are() -> None:
    gen = status_parts(inputs(), ['{"id":1}', ",", '{"id":2}'])
    yields = 0
    while True:
        try:
            next(gen)
            yields += 1
        except StopIteration as stop:
            parts = stop.value
            break
    assert yields >= (N + 1) // SLICE
    doc = json.loads("".join(parts))
    assert [r["id"] for r in doc["failovers"]] == [1, 2]
    assert len(doc["addresses"]) == N + 1 and doc["addresses"]["198.18.0.10/16"] == {
        "home": "eth0", "on": ["eth1"], "since": 5.0}
    assert doc["nics"]["eth0"]["state"] == "down" and doc["nics"]["eth1"]["link"]["carrier"]


def test_drive_runs_a_slice_per_turn_of_the_loop_and_waits_while_a_plan_runs() -> None:
    async def scenario() -> None:
        idle = asyncio.Event()
        task = asyncio.create_task(drive(metrics_view(CFG, SNAP, HEALTH, True, False), idle))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()  # a plan runs: not one slice
        idle.set()
        view = await task
        assert view.away == N and view.missing == 0 and view.held == {"eth1": N + 1}

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_placements_are_the_addresses_away_from_home() -> None:
    placed = run_now(away_placements(CFG, SNAP, {"198.18.0.10": ("eth1", 5.0)}))
    assert len(placed) == N and placed["198.18.0.10/16"].since == 5.0 and placed["198.18.0.11/16"].since == 0.0
    assert "198.18.255.1/16" not in placed
    assert ipaddress.ip_address("198.18.0.10")  # (documentation addresses only)
