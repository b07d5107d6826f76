"""The state file: atomic writes that never leave a torn or truncated file, and a reader that
survives any document."""

from __future__ import annotations

import errno
import ipaddress
import itertools
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipshift.journal import writer as journal
from ipshift.journal import (HISTORY_FILE, STATE_FILE, DurableState, InProgress, Journal, Placement, StateFile,
                             read_state, route_to_doc, write_atomic)
from ipshift.model import Route

OLD = b'{"version": 1, "pid": 1}'
REAL_WRITE = os.write
REAL_OPEN = os.open


def state_with_old(tmp_path: Path) -> Path:
    path = tmp_path / STATE_FILE
    path.write_bytes(OLD)
    return path


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- write_atomic


def test_short_writes_are_continued_until_all_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = state_with_old(tmp_path)
    calls: list[int] = []

    def short(fd: int, data: Any) -> int:
        calls.append(len(data))
        return REAL_WRITE(fd, bytes(data[:3]))

    monkeypatch.setattr(os, "write", short)
    data = json.dumps({"version": 1, "pid": 4242, "drained": ["eth0", "eth1"]}).encode()
    write_atomic(path, data)
    assert path.read_bytes() == data and len(calls) > 1 and leftovers(tmp_path) == []


def test_a_write_that_makes_no_progress_is_an_error_and_the_old_file_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = state_with_old(tmp_path)
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(OSError):
        write_atomic(path, b'{"version": 1, "pid": 2}')
    assert path.read_bytes() == OLD and leftovers(tmp_path) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_leaves_the_old_file_and_no_temporary_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    path = state_with_old(tmp_path)
    written: list[int] = []

    def half_then_full(fd: int, data: Any) -> int:
        if written:
            raise OSError(code, os.strerror(code))
        written.append(1)
        return REAL_WRITE(fd, bytes(data[:5]))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError) as exc:
        write_atomic(path, b'{"version": 1, "pid": 2}')
    assert exc.value.errno == code
    assert path.read_bytes() == OLD and leftovers(tmp_path) == []
    monkeypatch.setattr(os, "write", REAL_WRITE)
    write_atomic(path, b"new")  # the disk has room again
    assert path.read_bytes() == b"new" and leftovers(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_failed_fsync_leaves_the_old_file_and_no_temporary_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    path = state_with_old(tmp_path)

    def fail(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError) as exc:
        write_atomic(path, b'{"version": 1, "pid": 2}')
    assert exc.value.errno == code
    assert path.read_bytes() == OLD and leftovers(tmp_path) == []


def test_temporary_files_are_exclusive_unfollowed_private_and_unique_per_attempt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / STATE_FILE
    opened: list[tuple[str, int, int]] = []

    def spy(p: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        opened.append((os.fspath(p), flags, mode))
        return REAL_OPEN(p, flags, mode, **kw)

    monkeypatch.setattr(os, "open", spy)
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    tmps = [(p, f, m) for p, f, m in opened if p != os.fspath(tmp_path)]
    assert len(tmps) == 2 and tmps[0][0] != tmps[1][0]  # a fresh name for every attempt
    for p, flags, mode in tmps:
        assert Path(p).parent == tmp_path and str(os.getpid()) in Path(p).name
        want = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        assert flags & want == want and not flags & os.O_TRUNC and mode == 0o600
    assert path.read_bytes() == b"two" and os.stat(path).st_mode & 0o777 == 0o600


def test_a_stale_temporary_file_or_a_planted_symlink_is_neither_followed_nor_reused(tmp_path: Path) -> None:
    path = state_with_old(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    old_name = tmp_path / f".{STATE_FILE}.{os.getpid()}.tmp"  # the name the first versions used
    old_name.symlink_to(victim)
    stale = tmp_path / f".{STATE_FILE}.{os.getpid()}.0.tmp"
    stale.write_bytes(b"a crashed run's")
    for i in range(3):
        write_atomic(path, b"new %d" % i)
        assert path.read_bytes() == b"new %d" % i
    assert victim.read_bytes() == b"precious" and old_name.is_symlink()
    assert stale.read_bytes() == b"a crashed run's"
    assert leftovers(tmp_path) == sorted([old_name.name, stale.name])


def test_a_symlink_at_the_exact_temporary_name_is_refused_and_the_next_attempt_uses_a_fresh_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = state_with_old(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    monkeypatch.setattr(journal, "_tmp_seq", itertools.count(7))  # make the name predictable
    monkeypatch.setattr(secrets, "token_hex", lambda n: "feed")
    planted = tmp_path / f".{STATE_FILE}.{os.getpid()}.7.feed.tmp"
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_atomic(path, b"new")
    assert victim.read_bytes() == b"precious" and path.read_bytes() == OLD and planted.is_symlink()
    write_atomic(path, b"new")  # counter 8: a fresh name
    assert path.read_bytes() == b"new" and victim.read_bytes() == b"precious"
    assert leftovers(tmp_path) == [planted.name]


# --------------------------------------------------------------------------- Journal


def test_the_journal_logs_a_failed_write_reports_it_in_flush_and_writes_again_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = state_with_old(tmp_path)
    j = Journal(tmp_path)
    j.start()
    try:
        def full(fd: int, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full)
        with caplog.at_level(logging.ERROR, "ipshift.journal"):
            j.submit({"pid": 2})
            assert j.flush() is False  # handed over, but not on disk
        assert any(str(path) in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
        assert path.read_bytes() == OLD and leftovers(tmp_path) == []
        monkeypatch.setattr(os, "write", REAL_WRITE)
        j.submit({"pid": 3})
        assert j.flush() is True
        assert json.loads(path.read_text())["pid"] == 3
    finally:
        j.close()


def test_write_now_makes_a_pending_document_obsolete(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.submit({"doc": "A"})  # the thread has not run yet
    j.write_now({"doc": "B"})
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {"version": 1, "doc": "B"}
    j.start()
    assert j.flush() is True
    j.close()
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {"version": 1, "doc": "B"}


class Blocker:
    """Serialised (``default=str``) on the journal's thread, where it waits to be let go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def __str__(self) -> str:
        self.entered.set()
        assert self.go.wait(5)
        return "A"


def test_write_now_wins_over_a_document_the_thread_is_serialising(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.start()
    blocker = Blocker()
    j.submit({"doc": blocker})
    assert blocker.entered.wait(5)  # the thread has taken A and is serialising it
    j.write_now({"doc": "B"})
    blocker.go.set()
    assert j.flush() is True
    j.close()
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {"version": 1, "doc": "B"}


def test_write_now_waits_for_a_document_the_thread_is_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, go = threading.Event(), threading.Event()
    real = journal.write_atomic

    def slow(path: Path, data: bytes) -> None:
        if b'"A"' in data:
            entered.set()
            assert go.wait(5)
        real(path, data)

    monkeypatch.setattr(journal, "write_atomic", slow)
    j = Journal(tmp_path)
    j.start()
    j.submit({"doc": "A"})
    assert entered.wait(5)
    now = threading.Thread(target=j.write_now, args=({"doc": "B"},))
    now.start()
    now.join(0.05)
    go.set()
    now.join(5)
    assert j.flush() is True
    j.close()
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {"version": 1, "doc": "B"}


def test_write_now_raises_on_failure_and_works_again_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = state_with_old(tmp_path)
    j = Journal(tmp_path)

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        j.write_now({"pid": 2})
    assert path.read_bytes() == OLD and leftovers(tmp_path) == []
    monkeypatch.setattr(os, "write", REAL_WRITE)
    j.write_now({"pid": 3})
    assert json.loads(path.read_text()) == {"version": 1, "pid": 3}


def test_state_file_write_now_is_durable_on_return(tmp_path: Path) -> None:
    sf = StateFile(tmp_path)
    route = Route(ipaddress.ip_network("203.0.113.0/24"), "eth0", ipaddress.ip_address("192.0.2.1"))
    sf.write_now(DurableState(pid=7, withdrawn={"eth0": (route,)}))  # no thread started
    assert sf.read().withdrawn == {"eth0": (route,)}


# --------------------------------------------------------------------------- reading


def write_doc(tmp_path: Path, doc: Any, name: str = STATE_FILE) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("doc", [[1, 2], 3, None, "text", True])
def test_a_document_that_is_not_an_object_is_reported_and_read_as_empty(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, doc: Any) -> None:
    path = write_doc(tmp_path, doc)
    with caplog.at_level(logging.WARNING, "ipshift.journal"):
        assert read_state(tmp_path) == {}
        assert StateFile(tmp_path).read() == DurableState()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(str(path) in w and "not a JSON object" in w for w in warnings)


GOOD_ROUTE = Route(ipaddress.ip_network("203.0.113.0/24"), "eth0", ipaddress.ip_address("192.0.2.1"))


@pytest.mark.parametrize(("part", "value", "what"), [
    ("withdrawn", ["eth0"], "withdrawn"),
    ("withdrawn", {"eth0": {"dst": "203.0.113.0/24"}}, "withdrawn eth0"),
    ("withdrawn", {"eth0": ["203.0.113.0/24"]}, "withdrawn eth0"),
    ("withdrawn", {"eth0": [{"ifname": "eth0"}]}, "dst"),
    ("withdrawn", {"eth0": [{"dst": "203.0.113.300/24"}]}, "dst"),
    ("withdrawn", {"eth0": [{"dst": "203.0.113.0/24", "gateway": 5}]}, "gateway"),
    ("withdrawn", {"eth0": [{"dst": "203.0.113.0/24", "table": "main"}]}, "table"),
    ("demoted", "eth0", "demoted"),
    ("placements", ["192.0.2.10/24"], "placements"),
    ("placements", {"192.0.2.10/24": "eth1"}, "placements 192.0.2.10/24"),
    ("placements", {"192.0.2.10/24": {"home": "eth0", "device": "eth1", "since": "now"}}, "since"),
    ("placements", {"not an address": {"home": "eth0", "device": "eth1", "since": 1.0}}, "not an address"),
    ("in_progress", "failover", "in_progress"),
    ("in_progress", {"what": "failover", "moves": [["192.0.2.10/24", "eth0"]]}, "move"),
    ("in_progress", {"what": "failover", "moves": [["nowhere", "eth0", "eth1"]]}, "move"),
    ("in_progress", {"what": "failover", "moves": 5}, "moves"),
    ("drained", "eth0", "drained"),
    ("drained", ["eth0", 7], "drained"),
    ("pid", "1234", "pid"),
    ("pid", [1], "pid"),
    ("updated", "yesterday", "updated"),
    ("updated", True, "updated"),
])
def test_a_part_of_the_wrong_shape_is_reported_once_and_left_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, part: str, value: Any, what: str) -> None:
    good: dict[str, Any] = {"version": 1, "pid": 99, "drained": ["eth3"],
                            "withdrawn": {"eth2": [route_to_doc(GOOD_ROUTE)]}}
    if part == "demoted":
        del good["withdrawn"]
    path = write_doc(tmp_path, {**good, part: value})
    with caplog.at_level(logging.WARNING, "ipshift.journal"):
        state = StateFile(tmp_path).read()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and what in warnings[0], warnings
    assert isinstance(state, DurableState) and state.interrupted() == set()
    if part != "pid":
        assert state.pid == 99
    if part != "drained":
        assert state.drained == ("eth3",)
    if part not in ("withdrawn", "demoted"):
        assert state.withdrawn == {"eth2": (GOOD_ROUTE,)}


def test_a_bad_route_or_placement_does_not_lose_the_good_ones(tmp_path: Path) -> None:
    other = Route(ipaddress.ip_network("2001:db8::/64"), "eth0", None, metric=100, src=ipaddress.ip_address("2001:db8::1"))
    write_doc(tmp_path, {"version": 1, "withdrawn": {"eth0": [route_to_doc(GOOD_ROUTE), {"dst": "nope"},
                                                              route_to_doc(other)]},
                         "placements": {"192.0.2.10/24": {"home": "eth0", "device": "eth1", "since": 5},
                                        "192.0.2.11/24": {"device": "eth1"}},
                         "in_progress": {"what": "failover of eth0",
                                         "moves": [["192.0.2.10/24", "eth0", "eth1"], ["x"]]}})
    state = StateFile(tmp_path).read()
    assert state.withdrawn == {"eth0": (GOOD_ROUTE, other)}
    assert state.placements == {"192.0.2.10/24": Placement("eth0", "eth1", 5.0)}
    assert state.in_progress == InProgress("failover of eth0", (("192.0.2.10/24", "eth0", "eth1"),))
    assert DurableState.from_doc(state.to_doc()) == state


def test_a_history_that_is_not_a_list_is_reported_and_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_doc(tmp_path, {"version": 1, "history": {"id": 1, "moves": []}}, HISTORY_FILE)
    with caplog.at_level(logging.WARNING, "ipshift.journal"):
        doc = read_state(tmp_path, HISTORY_FILE)
    assert "history" not in doc
    assert [r.getMessage() for r in caplog.records if str(path) in r.getMessage() and "history" in r.getMessage()]
    write_doc(tmp_path, {"version": 1, "history": [{"id": 1, "moves": []}, "junk", 3]}, HISTORY_FILE)
    assert read_state(tmp_path, HISTORY_FILE)["history"] == [{"id": 1, "moves": []}]


def test_a_document_nested_too_deeply_to_parse_is_ignored(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("[" * 100_000 + "]" * 100_000)
    assert read_state(tmp_path) == {} and StateFile(tmp_path).read() == DurableState()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=20)
ROUTE_DOC = st.dictionaries(st.sampled_from(["dst", "ifname", "gateway", "table", "proto", "scope", "type",
                                             "metric", "linkdown", "src"]),
                            JSON | st.sampled_from(["203.0.113.0/24", "2001:db8::/64", "192.0.2.1", "eth0"]))
SHAPED = st.fixed_dictionaries({}, optional={
    "pid": JSON, "updated": JSON, "drained": JSON,
    "withdrawn": st.dictionaries(st.text(), st.lists(ROUTE_DOC, max_size=3) | JSON, max_size=3) | JSON,
    "demoted": st.dictionaries(st.text(), st.lists(ROUTE_DOC, max_size=3), max_size=3) | JSON,
    "placements": st.dictionaries(st.sampled_from(["192.0.2.10/24", "2001:db8::10/64", "x"]) | st.text(),
                                  st.fixed_dictionaries({}, optional={"home": JSON, "device": JSON, "since": JSON})
                                  | JSON, max_size=3) | JSON,
    "in_progress": st.fixed_dictionaries({}, optional={
        "what": JSON, "moves": st.lists(st.lists(st.sampled_from(["192.0.2.10/24", "eth0"]) | JSON, max_size=4))
        | JSON}) | JSON,
})


@settings(max_examples=400, deadline=None)
@given(JSON | SHAPED)
def test_from_doc_of_any_json_value_never_raises(doc: Any) -> None:
    logging.getLogger("ipshift.journal").disabled = True
    try:
        state = DurableState.from_doc(doc)
        assert isinstance(state, DurableState)
        state.arrived()
        state.interrupted()
        assert DurableState.from_doc(json.loads(json.dumps(state.to_doc()))) == state
    finally:
        logging.getLogger("ipshift.journal").disabled = False
