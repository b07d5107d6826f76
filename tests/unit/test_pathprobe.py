"""The path-probe verdict machine: unverified until a first answer, failed after N misses, up after M rises;
and the rule of which received frame answers an outstanding request."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipshift.model import IPAddress
from ipshift.pathprobe import PathState, answered_target, judge, round_answered
from ipshift.wire.arp import ARPOP_REPLY, ARPOP_REQUEST, BROADCAST_MAC, ArpPacket, build_arp, parse_arp
from ipshift.wire.ndp import NA_FLAG_OVERRIDE, NA_FLAG_SOLICITED, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, NdpPacket

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


# --------------------------------------------------------------------------- which reply answers a request

MAC = "02:1b:00:00:00:10"  # the probing NIC
PEER = "02:1b:00:00:00:99"  # the target's
OTHER_MAC = "02:1b:00:00:00:11"
TGT, OWN, NOBODY = (ipaddress.IPv4Address(a) for a in ("192.0.2.100", "192.0.2.10", "0.0.0.0"))
TGT6, OWN6 = ipaddress.IPv6Address("2001:db8::100"), ipaddress.IPv6Address("2001:db8::10")
ASKED: dict[IPAddress, IPAddress] = {TGT: OWN, TGT6: OWN6}
PROBED: dict[IPAddress, IPAddress] = {TGT: NOBODY}  # asked with 0.0.0.0 (an RFC 5227 probe)

# what Linux sends back to our request: unicast to our MAC, target IP = our request's sender IP
REPLY = ArpPacket(op=ARPOP_REPLY, sender_mac=PEER, sender_ip=TGT, target_mac=MAC, target_ip=OWN,
                  eth_src=PEER, eth_dst=MAC)
NA = NdpPacket(type=ND_NEIGHBOR_ADVERT, src=TGT6, dst=OWN6, target=TGT6, flags=NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE,
               lladdr=PEER, eth_src=PEER, eth_dst=MAC)


def test_the_answer_to_our_request_counts() -> None:
    assert answered_target(REPLY, MAC, ASKED) == TGT
    assert answered_target(NA, MAC, ASKED) == TGT6
    # the same, through real bytes
    frame = build_arp(op=ARPOP_REPLY, eth_src=PEER, eth_dst=MAC, sender_mac=PEER, sender_ip=TGT,
                      target_mac=MAC, target_ip=OWN)
    parsed = parse_arp(frame)
    assert parsed is not None and answered_target(parsed, MAC, ASKED) == TGT


@pytest.mark.parametrize(("why", "packet", "outstanding"), [
    ("nothing asked in this round", REPLY, {}),
    ("asked another target", REPLY, {ipaddress.IPv4Address("192.0.2.1"): OWN}),
    ("from a host that is not the target", replace(REPLY, sender_ip=ipaddress.IPv4Address("192.0.2.200")), ASKED),
    ("a request, not a reply", replace(REPLY, op=ARPOP_REQUEST), ASKED),
    ("gratuitous 'target is-at' reply", replace(REPLY, target_ip=TGT), ASKED),
    ("a reply meant for another address", replace(REPLY, target_ip=ipaddress.IPv4Address("192.0.2.99")), ASKED),
    ("target IP 0.0.0.0, but we asked as 192.0.2.10", replace(REPLY, target_ip=NOBODY), ASKED),
    ("our address, but we asked as 0.0.0.0", REPLY, PROBED),
    ("to another MAC", replace(REPLY, eth_dst=OTHER_MAC, target_mac=OTHER_MAC), ASKED),
    ("Ethernet to us, ARP to another MAC", replace(REPLY, target_mac=OTHER_MAC), ASKED),
    ("broadcast, to a request that had our address", replace(REPLY, eth_dst=BROADCAST_MAC), ASKED),
    ("VLAN-tagged", replace(REPLY, vlan=100), ASKED),
    ("unsolicited NA", replace(NA, flags=NA_FLAG_OVERRIDE), ASKED),
    ("NA to all-nodes", replace(NA, dst=ipaddress.IPv6Address("ff02::1")), ASKED),
    ("NA to another address", replace(NA, dst=ipaddress.IPv6Address("2001:db8::99")), ASKED),
    ("NA to another MAC", replace(NA, eth_dst=OTHER_MAC), ASKED),
    ("NA for another target", replace(NA, target=ipaddress.IPv6Address("2001:db8::1")), ASKED),
    ("NA with a bad checksum", replace(NA, checksum_ok=False), ASKED),
    ("NA forwarded by a router (hop limit)", replace(NA, hop_limit=254), ASKED),
    ("an NS, not an NA", replace(NA, type=ND_NEIGHBOR_SOLICIT, flags=0), ASKED),
    ("NA, nothing asked", NA, {}),
])
def test_frames_that_answer_no_request_of_ours_do_not_count(
        why: str, packet: ArpPacket | NdpPacket, outstanding: dict[IPAddress, IPAddress]) -> None:
    assert answered_target(packet, MAC, outstanding) is None, why


def test_an_rfc5227_probe_is_answered_to_0000_unicast_or_broadcast() -> None:
    linux = replace(REPLY, target_ip=NOBODY)  # Linux: to the requester's MAC, target IP 0.0.0.0
    assert answered_target(linux, MAC, PROBED) == TGT
    assert answered_target(replace(linux, eth_dst=BROADCAST_MAC), MAC, PROBED) == TGT  # RFC 5227 2.6
    assert answered_target(replace(linux, target_mac=OTHER_MAC, eth_dst=BROADCAST_MAC), MAC, PROBED) is None
