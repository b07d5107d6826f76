"""The history: records serialised once, when they end, and kept within bounds."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import zlib
from collections.abc import Sequence

from ipshift.records import History, MoveRecord, Record
from ipshift.steps import AddAddress


class Sink:
    def __init__(self) -> None:
        self.docs: list[str] = []

    def submit_text(self, parts: Sequence[str | bytes]) -> None:  # bytes: zlib-compressed text
        self.docs.append("".join(p if isinstance(p, str) else zlib.decompress(p).decode() for p in parts))


def big(i: int, n: int) -> Record:
    rec = Record(i, "failover", "eth0", "carrier lost", "link", 0.0, 0.0)
    step = AddAddress("eth1", ipaddress.ip_interface("198.18.0.1/16"))
    rec.moves = [MoveRecord(f"198.18.{k // 250}.{k % 250 + 1}/16", "eth0", "eth1", "eth1", ok=True,
                            raw=[(step, 0.001, 0.002, "", False)]) for k in range(n)]
    return rec


def test_records_are_bounded_by_the_moves_they_hold() -> None:
    sink = Sink()
    h = History(sink, max_moves=250, max_file=2)
    for i, n in enumerate([100, 100, 100, 3, 100], start=1):
        h.finish(big(i, n))
        h.flush()
    assert h.kept_ids == [3, 4, 5]  # 100 + 3 + 100 <= 250; one more would not be
    assert [r["id"] for r in json.loads(sink.docs[-1])["history"]] == [4, 5]  # the file keeps the last two
    h.finish(big(6, 400))  # one record over the cap alone: it stays, the others go
    h.flush()
    assert h.kept_ids == [6]
    assert h.tally.moves[("failover", "moved")] == 803


def test_each_record_is_serialised_once_however_often_it_is_read() -> None:
    async def scenario() -> None:
        h = History(Sink())
        idle = asyncio.Event()
        idle.set()
        worker = asyncio.create_task(h.worker(idle))
        for i in range(1, 4):
            h.finish(big(i, 50))
        await h.settled()
        for _ in range(10):
            doc = json.loads("[" + "".join(h.parts()) + "]")
        assert h.encoded == 3 and [r["id"] for r in doc] == [1, 2, 3]
        assert doc[0]["moves"][0]["steps"][0] == {"op": "AddAddress", "text": "add 198.18.0.1/16 to eth1",
                                                 "at_ms": 1.0, "ms": 1.0, "ok": True, "error": "", "undo": False}
        worker.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_serialisation_waits_while_a_plan_runs_and_yields_between_slices() -> None:
    async def scenario() -> None:
        ticks = iter(range(10**9))
        h = History(Sink(), clock=lambda: next(ticks) * 1.0)  # every clock reading: a second later
        idle = asyncio.Event()  # a plan is running
        worker = asyncio.create_task(h.worker(idle))
        h.finish(big(1, 200))
        for _ in range(10):
            await asyncio.sleep(0)
        assert h.encoded == 0  # nothing serialised while the plan runs
        idle.set()
        turns = 0
        while h.encoded == 0:
            await asyncio.sleep(0)
            turns += 1
        assert turns >= 200 // 32  # a slice per 32 moves at most when each slice is over its time
        worker.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_an_earlier_runs_history_is_loaded_and_a_bad_entry_skipped() -> None:
    h = History()
    h.load([{"id": 7, "kind": "failover", "moves": [{"address": "192.0.2.10/24"}]}, {"no": "id"}, "junk"])  # type: ignore[list-item]
    assert h.kept_ids == [7] and h.next_id() == 8
    (rec,) = json.loads("[" + "".join(h.parts()) + "]")
    assert rec["moves"] == [{"address": "192.0.2.10/24"}] and rec["verification"]["state"] == "none"
