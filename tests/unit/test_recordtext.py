"""Records kept compressed: the same text for status and the history file, and the heap trim."""

from __future__ import annotations

import ipaddress
import json
import zlib
from collections.abc import Sequence
from pathlib import Path

from ipshift.records import COMPRESS_OVER, History, MoveRecord, Record
from ipshift.recordtext import trim_heap
from ipshift.steps import AddAddress


class Sink:
    def __init__(self) -> None:
        self.parts: list[Sequence[str | bytes]] = []

    def submit_text(self, parts: Sequence[str | bytes]) -> None:
        self.parts.append(parts)


def record(i: int, n: int) -> Record:
    rec = Record(i, "failover", "eth0", "carrier lost", "link", 0.0, 0.0)
    step = AddAddress("eth1", ipaddress.ip_interface("198.18.0.1/16"))
    rec.moves = [MoveRecord(f"198.18.{k // 250}.{k % 250 + 1}/16", "eth0", "eth1", "eth1", ok=True,
                            raw=[(step, 0.001, 0.002, "", False)]) for k in range(n)]
    return rec


def test_a_large_record_is_kept_compressed_and_reads_back_the_same() -> None:
    sink = Sink()
    h = History(sink)
    big, small = record(1, COMPRESS_OVER + 50), record(2, 3)
    h.finish(big)
    h.finish(small)
    h.flush()
    doc = json.loads("[" + "".join(h.parts()) + "]")
    assert [len(r["moves"]) for r in doc] == [COMPRESS_OVER + 50, 3]
    assert doc[0]["moves"][7]["address"] == "198.18.0.8/16" and doc[0]["moves"][7]["steps"][0]["op"] == "AddAddress"
    stored = sink.parts[-1]
    assert sum(isinstance(p, bytes) for p in stored) == 1  # the large one only
    text = "".join(p if isinstance(p, str) else zlib.decompress(p).decode() for p in stored)
    assert json.loads(text)["history"] == doc
    assert big.moves[0].raw == []  # the text holds the steps now
    assert json.loads("".join(h.parts_of([1])))["moves"] == doc[0]["moves"]
    # a history file with a large record loads (and is kept compressed again)
    again = History(Sink())
    again.load(json.loads(text)["history"])
    assert json.loads("[" + "".join(again.parts()) + "]") == doc


def test_trim_heap_runs_on_this_libc() -> None:
    assert trim_heap() is True  # the lab machines run glibc


def test_the_history_file_is_written_from_the_compressed_parts(tmp_path: Path) -> None:
    from ipshift.journal import HISTORY_FILE, Journal

    text = json.dumps([{"n": i, "pad": "x" * 50} for i in range(40_000)])
    journal = Journal(str(tmp_path), HISTORY_FILE)
    journal.start()
    journal.submit_text(['{"version":1,"history":', zlib.compress(text.encode(), 1), "}"])
    journal.close()
    assert json.loads((tmp_path / HISTORY_FILE).read_text())["history"] == json.loads(text)


def test_compressed_text_reads_back_in_pieces_without_splitting_a_character() -> None:
    from ipshift.recordtext import PIECE, Kept

    text = "é€x" * (PIECE // 2) + "end"
    kept = Kept(1, 1, ['{"a":', zlib.compress(json.dumps(text).encode(), 1)], "{}")
    parts = kept.parts()
    assert len(parts) > 3 and all(len(p) <= PIECE for p in parts)
    assert json.loads("".join(parts)) == {"a": text, "verification": {}}
