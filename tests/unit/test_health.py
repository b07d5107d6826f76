"""The health machine: failures act at once, recovery waits, flapping is held down."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipshift import health as hl

T = hl.Timing(delay=2.0, flap_count=4, flap_window=10.0)


def test_failure_is_immediate_and_recovery_waits_for_the_delay() -> None:
    h = hl.initial("eth0", True, 0.0)
    assert h.usable
    h, out = hl.observe(h, False, 1.0, T, reason="carrier lost")
    assert h.state == "down" and out == (hl.Failed("eth0", "carrier lost"),)
    h, out = hl.observe(h, True, 2.0, T)
    assert h.state == "returning" and not h.usable and out == (hl.Wakeup("eth0", 4.0),)
    h, out = hl.tick(h, 3.0, T)  # too early: asks to be woken at the right time
    assert h.state == "returning" and out == (hl.Wakeup("eth0", 4.0),)
    h, out = hl.tick(h, 4.0, T)
    assert h.state == "up" and h.usable and out == (hl.Recovered("eth0"),)


def test_loss_while_returning_goes_back_down_without_a_second_failover() -> None:
    h = hl.initial("eth0", True, 0.0)
    h, _ = hl.observe(h, False, 1.0, T)
    h, _ = hl.observe(h, True, 1.5, T)
    h, out = hl.observe(h, False, 1.8, T)
    assert h.state == "down" and out == ()  # its addresses already left on the first loss


def test_flapping_is_held_until_stable_for_a_window() -> None:
    h = hl.initial("eth0", True, 0.0)
    outs: list[hl.Output] = []
    t = 1.0
    for ok in (False, True, False, True):
        h, out = hl.observe(h, ok, t, T)
        outs += out
        t += 0.5
    assert h.state == "held"
    assert any(isinstance(o, hl.Held) and "flapping" in o.reason for o in outs)
    held_at = t - 0.5
    h, out = hl.tick(h, held_at + 5.0, T)
    assert h.state == "held" and out == (hl.Wakeup("eth0", held_at + 10.0),)
    h, out = hl.tick(h, held_at + 10.0, T)
    assert h.state == "returning" and out == (hl.Wakeup("eth0", held_at + 12.0),)
    h, out = hl.tick(h, held_at + 12.0, T)
    assert h.state == "up" and out == (hl.Recovered("eth0"),)


def test_held_nic_that_drops_again_stays_held() -> None:
    h = hl.NicHealth("eth0", "held", 0.0, True, "flapping", (0.0,))
    h, out = hl.observe(h, False, 1.0, T)
    assert h.state == "held" and out == ()
    h, out = hl.tick(h, 20.0, T)  # link still down: not released
    assert h.state == "held"


def test_down_at_start_and_unchanged_observations_are_quiet() -> None:
    h = hl.initial("eth1", False, 0.0)
    assert h.state == "down" and not h.usable
    h2, out = hl.observe(h, False, 1.0, T)
    assert h2 == h and out == ()


def test_illegal_transition_changes_nothing() -> None:
    h = hl.NicHealth("eth0", "up", 0.0, True)
    with pytest.raises(ValueError):
        hl._go(h, "settled", 1.0, "")
    assert h.state == "up"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(min_value=0.001, max_value=5.0)), max_size=40))
def test_any_sequence_keeps_the_invariants(seq: list[tuple[bool, float]]) -> None:
    h = hl.initial("eth0", True, 0.0)
    t = 0.0
    for ok, dt in seq:
        t += dt
        h, out = hl.tick(h, t, T)
        h, out2 = hl.observe(h, ok, t, T)
        for o in out + out2:
            if isinstance(o, hl.Wakeup):
                assert o.at >= t - 1e-9
        if not h.ok:
            assert not h.usable  # never usable without link
        if isinstance(next(iter(out2), None), hl.Failed):
            assert not ok


def test_path_and_drain_are_inputs_of_the_same_machine() -> None:
    T = hl.Timing(delay=2.0, flap_count=10, flap_window=10.0)
    h = hl.initial("eth0", True, 0.0, path="unverified")
    h, out = hl.path(h, "up", 1.0, T)
    assert out == () and h.usable
    h, out = hl.path(h, "failed", 2.0, T, "path lost")
    assert h.state == "down" and out == (hl.Failed("eth0", "path lost", "path"),)
    h, out = hl.link(h, True, 3.0, T)  # the link says nothing new; the path still holds it down
    assert h.state == "down" and out == ()
    h, out = hl.path(h, "up", 4.0, T, "path confirmed")
    assert h.state == "returning" and out == (hl.Wakeup("eth0", 6.0),)
    h, out = hl.tick(h, 6.0, T)
    assert h.usable and out == (hl.Recovered("eth0"),)
    h, out = hl.drain(h, True)
    assert not h.usable and h.state == "up" and out == (hl.Failed("eth0", "operator: ipshift failover", "operator"),)
    assert h.why_not == "drained by the operator (ipshift failover)"
    h, out = hl.link(h, False, 7.0, T)  # lost while drained: its addresses already left
    assert out == () and h.state == "down"
    h, out = hl.link(h, True, 8.0, T)
    h, out = hl.tick(h, 10.0, T)
    assert h.state == "up" and out == ()  # healthy again, but still drained: nothing comes back
    h, out = hl.drain(h, False)
    assert h.usable and out == (hl.Recovered("eth0", "operator"),)


def test_a_path_failed_before_the_start_is_down_at_start() -> None:
    h = hl.initial("eth0", True, 0.0, path="failed")
    assert h.state == "down" and "path failed" in h.reason
