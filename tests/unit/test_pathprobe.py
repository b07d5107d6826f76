"""The path-probe verdict machine: unverified until a first answer, failed after N misses, up after M rises."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from ipshift.pathprobe import PathState, judge, round_answered

T1, T2 = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")


def run(rounds: str, misses: int = 3, rises: int = 2) -> list[str]:
    s = PathState()
    out = []
    for r in rounds:
        s = judge(s, r == "y", misses=misses, rises=rises)
        out.append(s.verdict)
    return out


def test_never_answered_is_unverified_not_failed() -> None:
    assert run("nnnnnnnn") == ["unverified"] * 8


def test_fails_after_misses_and_rises_after_rises() -> None:
    assert run("ynnn") == ["up", "up", "up", "failed"]
    assert run("ynnnyy") == ["up", "up", "up", "failed", "failed", "up"]
    assert run("ynnnynyy") == ["up", "up", "up", "failed", "failed", "failed", "failed", "up"]
    assert run("ynnynnn") == ["up", "up", "up", "up", "up", "up", "failed"]  # misses must be consecutive


def test_any_and_all_semantics() -> None:
    assert round_answered({T1}, [T1, T2], "any")
    assert not round_answered({T1}, [T1, T2], "all")
    assert round_answered({T1, T2}, [T1, T2], "all")
    assert not round_answered(set(), [T1, T2], "any")


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5), st.integers(1, 5))
def test_failed_only_after_enough_consecutive_misses(rounds: list[bool], misses: int, rises: int) -> None:
    s = PathState()
    run_of_misses = 0
    for answered in rounds:
        prev = s.verdict
        s = judge(s, answered, misses=misses, rises=rises)
        run_of_misses = 0 if answered else run_of_misses + 1
        if s.verdict == "failed" and prev != "failed":
            assert run_of_misses >= misses
        if not s.ever_answered:
            assert s.verdict == "unverified"
