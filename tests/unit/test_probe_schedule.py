"""What fast path probing rests on: the round schedule, the verdict machine's steady state, the cached
requests, the per-NIC reply filters, and the precise timer."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipshift.pathprobe import PathState, judge, probe_request
from ipshift.timerfd import PreciseTimer, next_due
from ipshift.wire import bpf
from ipshift.wire.arp import (ARPOP_REPLY, BROADCAST_MAC, UNSPECIFIED_V4, build_arp, build_arp_probe,
                              build_arp_request, build_gratuitous_arp, parse_arp)
from ipshift.wire.ndp import build_ns, build_unsolicited_na, parse_ndp

MAC, OTHER, PEER = "02:1b:00:00:00:10", "02:1b:00:00:00:11", "02:1b:00:00:01:00"
OWN, TGT = ipaddress.IPv4Address("192.0.2.10"), ipaddress.IPv4Address("192.0.2.100")
OWN6, TGT6 = ipaddress.IPv6Address("2001:db8::10"), ipaddress.IPv6Address("2001:db8::100")


# --------------------------------------------------------------------------- the schedule


def test_the_next_round_is_on_the_grid() -> None:
    assert next_due(1.0, 1.0005, 0.002) == pytest.approx(1.002)  # on time, or a little late: next slot
    assert next_due(1.0, 1.0019, 0.002) == pytest.approx(1.002)


def test_slots_slept_through_are_skipped_never_burst() -> None:
    assert next_due(1.0, 1.0071, 0.002) == pytest.approx(1.008)
    assert next_due(1.0, 1.002, 0.002) == pytest.approx(1.004)  # exactly on a slot: that one has passed


@given(st.floats(0, 1e5), st.floats(0, 10), st.floats(1e-3, 1.0))
def test_next_due_is_ahead_on_the_grid_and_within_one_interval(due: float, late: float, interval: float) -> None:
    now = due + late
    nxt = next_due(due, now, interval)
    assert now < nxt <= now + interval * (1 + 1e-6)
    slots = (nxt - due) / interval
    assert abs(slots - round(slots)) < 1e-6 * max(1.0, slots)


# --------------------------------------------------------------------------- the verdict machine


def test_a_steady_path_gives_back_the_same_state() -> None:
    s = PathState()
    for _ in range(5):
        s = judge(s, True, misses=3, rises=2)
    assert judge(s, True, misses=3, rises=2) is s and s.verdict == "up"
    dead = s
    for _ in range(6):
        dead = judge(dead, False, misses=3, rises=2)
    assert dead.verdict == "failed" and judge(dead, False, misses=3, rises=2) is dead
    silent = PathState()
    for _ in range(4):
        silent = judge(silent, False, misses=3, rises=2)
    assert judge(silent, False, misses=3, rises=2) is silent and silent.verdict == "unverified"


def reference(rounds: Sequence[bool], misses: int, rises: int) -> list[str]:
    """The verdicts with runs counted without bound (the rule as the module docstring states it)."""
    verdict, ok_run, miss_run, out = "unverified", 0, 0, []
    for answered in rounds:
        ok_run, miss_run = (ok_run + 1, 0) if answered else (0, miss_run + 1)
        if answered and (verdict == "unverified" or (verdict == "failed" and ok_run >= rises)):
            verdict = "up"
        elif not answered and verdict == "up" and miss_run >= misses:
            verdict = "failed"
        out.append(verdict)
    return out


@given(st.lists(st.booleans(), max_size=80), st.integers(1, 6), st.integers(1, 6))
def test_bounded_runs_decide_as_unbounded_ones(rounds: list[bool], misses: int, rises: int) -> None:
    s, got = PathState(), []
    for answered in rounds:
        s = judge(s, answered, misses=misses, rises=rises)
        got.append(s.verdict)
    assert got == reference(rounds, misses, rises)


# --------------------------------------------------------------------------- the requests


def test_probe_requests_ask_as_the_nics_own_address_or_as_nobody() -> None:
    assert probe_request(MAC, OWN, TGT) == (OWN, build_arp_request(MAC, OWN, TGT))
    assert probe_request(MAC, None, TGT) == (UNSPECIFIED_V4, build_arp_request(MAC, UNSPECIFIED_V4, TGT))
    assert probe_request(MAC, OWN6, TGT6) == (OWN6, build_ns(MAC, OWN6, TGT6))
    assert probe_request(MAC, None, TGT6) is None  # no IPv6 source: nothing sensible to send


# --------------------------------------------------------------------------- the reply filters


def run_bpf(program: Sequence[bpf.BpfInsn], frame: bytes, *, vlan_tag_present: bool = False) -> int:
    """A classic BPF machine for the instructions ipshift's programs use."""
    acc, pc = 0, 0
    for _ in range(len(program)):  # forward jumps only
        insn = program[pc]
        pc += 1
        if insn.code == bpf.BPF_LD_W_ABS and insn.k == bpf._VLAN_PRESENT_K:
            acc = int(vlan_tag_present)
        elif insn.code in (bpf.BPF_LD_W_ABS, bpf.BPF_LD_H_ABS, bpf.BPF_LD_B_ABS):
            size = {bpf.BPF_LD_W_ABS: 4, bpf.BPF_LD_H_ABS: 2, bpf.BPF_LD_B_ABS: 1}[insn.code]
            if insn.k + size > len(frame):
                return 0
            acc = int.from_bytes(frame[insn.k:insn.k + size], "big")
        elif insn.code in (bpf.BPF_JEQ_K, bpf.BPF_JGE_K, bpf.BPF_JGT_K):
            taken = {bpf.BPF_JEQ_K: acc == insn.k, bpf.BPF_JGE_K: acc >= insn.k, bpf.BPF_JGT_K: acc > insn.k}
            pc += insn.jt if taken[insn.code] else insn.jf
        elif insn.code == bpf.BPF_RET_K:
            return insn.k
        else:
            raise AssertionError(f"instruction not modelled: {insn}")
    raise AssertionError("fell off the end of the program")


def arp_reply(eth_dst: str, target_mac: str, target_ip: ipaddress.IPv4Address = OWN) -> bytes:
    return build_arp(op=ARPOP_REPLY, eth_src=PEER, eth_dst=eth_dst, sender_mac=PEER, sender_ip=TGT,
                     target_mac=target_mac, target_ip=target_ip)


@pytest.mark.parametrize("frame", [arp_reply(MAC, MAC), arp_reply(BROADCAST_MAC, MAC, UNSPECIFIED_V4)])
def test_the_arp_reply_filter_keeps_answers_to_the_nic(frame: bytes) -> None:
    program = bpf.arp_reply_filter(MAC)
    assert run_bpf(program, frame) == bpf.BPF_ACCEPT
    assert run_bpf(program, frame, vlan_tag_present=True) == 0
    assert parse_arp(frame) is not None


@pytest.mark.parametrize("frame", [
    arp_reply(OTHER, OTHER),  # the other NIC's answer
    arp_reply(MAC, OTHER),  # to our MAC on the wire, but answering someone else
    build_arp_request(OTHER, ipaddress.IPv4Address("192.0.2.11"), TGT),  # the other NIC's probe
    build_arp_request(PEER, TGT, OWN),  # a host asking for us
    build_gratuitous_arp(PEER, TGT),
    build_arp_probe(MAC, OWN),
    build_unsolicited_na(PEER, TGT6),
    b"\0" * 20,
])
def test_the_arp_reply_filter_drops_the_rest_of_the_segment(frame: bytes) -> None:
    assert run_bpf(bpf.arp_reply_filter(MAC), frame) == 0


def na_to(eth_dst: str) -> bytes:
    frame = build_unsolicited_na(PEER, TGT6)
    return bytes.fromhex(eth_dst.replace(":", "")) + frame[6:]


def test_the_na_filter_keeps_advertisements_sent_to_the_nic() -> None:
    program = bpf.na_filter(MAC)
    frame = na_to(MAC)
    packet = parse_ndp(frame)
    assert packet is not None and packet.is_na
    assert run_bpf(program, frame) == bpf.BPF_ACCEPT
    assert run_bpf(program, frame, vlan_tag_present=True) == 0
    assert run_bpf(program, na_to(OTHER)) == 0
    assert run_bpf(program, build_unsolicited_na(PEER, TGT6)) == 0  # to all nodes: answers nobody's question
    assert run_bpf(program, build_ns(PEER, TGT6, OWN6)) == 0
    assert run_bpf(program, arp_reply(MAC, MAC)) == 0


def test_a_filter_needs_an_ethernet_mac() -> None:
    with pytest.raises(ValueError):
        bpf.arp_reply_filter("")


# --------------------------------------------------------------------------- the precise timer


def test_the_timer_fires_once_not_before_its_instant_and_can_be_rearmed_or_cancelled() -> None:
    async def main() -> list[tuple[str, float, float]]:
        fired: list[tuple[str, float, float]] = []
        due = {"at": 0.0}
        timer = PreciseTimer(lambda: fired.append(("t", due["at"], time.monotonic())))
        try:
            due["at"] = time.monotonic() + 0.003
            timer.at(due["at"])
            await asyncio.sleep(0.05)
            due["at"] = time.monotonic() + 0.5
            timer.at(due["at"])
            due["at"] = time.monotonic() + 0.002  # re-arming replaces the earlier instant
            timer.at(due["at"])
            await asyncio.sleep(0.05)
            timer.at(time.monotonic() + 0.002)
            timer.cancel()
            await asyncio.sleep(0.05)
            due["at"] = time.monotonic() - 1.0  # in the past: at once
            timer.at(due["at"])
            await asyncio.sleep(0.02)
        finally:
            timer.close()
        return fired

    fired = asyncio.run(main())
    assert len(fired) == 3
    assert all(at >= due for _, due, at in fired)
