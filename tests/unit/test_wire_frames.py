"""Frame building and parsing in ipshift.wire, checked against scapy as an independent codec."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Padding

from ipshift.wire import arp, bpf, conflict, ndp, sender
from ipshift.wire.arp import (
    ArpPacket,
    build_arp_probe,
    build_arp_request,
    build_gratuitous_arp,
    conflict_from,
    parse_arp,
)
from ipshift.wire.ndp import (
    NdpPacket,
    build_dad_ns,
    build_ns,
    build_unsolicited_na,
    dad_conflict_from,
    multicast_mac,
    parse_ndp,
    solicited_node,
)

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
V4 = IPv4Address("192.0.2.10")
V4_OTHER = IPv4Address("192.0.2.11")
V6 = IPv6Address("2001:db8::10")
V6_OTHER = IPv6Address("2001:db8::11")

macs = st.binary(min_size=6, max_size=6).map(arp.mac_from_bytes)
ipv4s = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6s = st.integers(0, 2**128 - 1).map(IPv6Address)
slow = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- Ethernet helpers ---------------------------------------------------------


def test_mac_round_trip_and_normalisation() -> None:
    assert arp.mac_to_bytes("AA:bb:0C:dd:ee:FF") == bytes.fromhex("aabb0cddeeff")
    assert arp.mac_to_bytes("aa-bb-0c-dd-ee-ff") == bytes.fromhex("aabb0cddeeff")
    assert arp.normalize_mac("AA:BB:CC:DD:EE:FF") == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize(
    "bad",
    ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa:bb:cc:dd:ee:gg", "a:bb:cc:dd:ee:fff", "+a:bb:cc:dd:ee:ff"],
)
def test_bad_macs_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        arp.mac_to_bytes(bad)


@given(macs)
def test_mac_text_round_trip(mac: str) -> None:
    assert arp.mac_from_bytes(arp.mac_to_bytes(mac)) == mac


# --- ARP: known bytes and scapy -----------------------------------------------


def test_gratuitous_arp_exact_bytes() -> None:
    expected = bytes.fromhex(
        "ffffffffffff" "02000000000a" "0806"  # Ethernet
        "0001" "0800" "06" "04" "0001"  # Ethernet/IPv4, request
        "02000000000a" "c000020a"  # sender
        "000000000000" "c000020a"  # target
    )
    assert build_gratuitous_arp(MAC_A, V4) == expected


@pytest.mark.parametrize(
    ("frame", "scapy_frame"),
    [
        (
            build_gratuitous_arp(MAC_A, V4),
            Ether(dst="ff:ff:ff:ff:ff:ff", src=MAC_A)
            / ARP(op=1, hwsrc=MAC_A, psrc=str(V4), hwdst="00:00:00:00:00:00", pdst=str(V4)),
        ),
        (
            build_gratuitous_arp(MAC_A, V4, reply=True),
            Ether(dst="ff:ff:ff:ff:ff:ff", src=MAC_A) / ARP(op=2, hwsrc=MAC_A, psrc=str(V4), hwdst=MAC_A, pdst=str(V4)),
        ),
        (
            build_arp_probe(MAC_A, V4),
            Ether(dst="ff:ff:ff:ff:ff:ff", src=MAC_A)
            / ARP(op=1, hwsrc=MAC_A, psrc="0.0.0.0", hwdst="00:00:00:00:00:00", pdst=str(V4)),
        ),
        (
            build_arp_request(MAC_A, V4, V4_OTHER),
            Ether(dst="ff:ff:ff:ff:ff:ff", src=MAC_A)
            / ARP(op=1, hwsrc=MAC_A, psrc=str(V4), hwdst="00:00:00:00:00:00", pdst=str(V4_OTHER)),
        ),
    ],
    ids=["garp-request", "garp-reply", "probe", "request"],
)
def test_arp_frames_equal_scapy_built_ones(frame: bytes, scapy_frame: Ether) -> None:
    assert frame == bytes(scapy_frame)


@given(mac=macs, ip=ipv4s, reply=st.booleans())
def test_gratuitous_arp_round_trip(mac: str, ip: IPv4Address, reply: bool) -> None:
    packet = parse_arp(build_gratuitous_arp(mac, ip, reply=reply))
    assert packet == ArpPacket(
        op=arp.ARPOP_REPLY if reply else arp.ARPOP_REQUEST,
        sender_mac=mac,
        sender_ip=ip,
        target_mac=mac if reply else arp.ZERO_MAC,
        target_ip=ip,
        eth_src=mac,
        eth_dst=arp.BROADCAST_MAC,
    )


@given(mac=macs, ip=ipv4s)
def test_probe_round_trip(mac: str, ip: IPv4Address) -> None:
    packet = parse_arp(build_arp_probe(mac, ip))
    assert packet is not None
    assert (packet.op, packet.sender_mac, packet.sender_ip, packet.target_mac, packet.target_ip) == (
        1,
        mac,
        IPv4Address("0.0.0.0"),
        arp.ZERO_MAC,
        ip,
    )
    assert packet.is_probe and not packet.is_gratuitous


@given(mac=macs, src=ipv4s, target=ipv4s)
def test_request_round_trip(mac: str, src: IPv4Address, target: IPv4Address) -> None:
    packet = parse_arp(build_arp_request(mac, src, target))
    assert packet is not None
    assert (packet.sender_mac, packet.sender_ip, packet.target_ip, packet.eth_src) == (mac, src, target, mac)


@slow
@given(mac=macs, ip=ipv4s, reply=st.booleans())
def test_scapy_decodes_gratuitous_arp(mac: str, ip: IPv4Address, reply: bool) -> None:
    decoded = Ether(build_gratuitous_arp(mac, ip, reply=reply))
    assert decoded.dst == "ff:ff:ff:ff:ff:ff" and decoded.src == mac and decoded.type == 0x0806
    a = decoded[ARP]
    assert (a.hwtype, a.ptype, a.hwlen, a.plen) == (1, 0x0800, 6, 4)
    assert a.op == (2 if reply else 1)
    assert (a.hwsrc, a.psrc, a.pdst) == (mac, str(ip), str(ip))
    assert a.hwdst == (mac if reply else "00:00:00:00:00:00")


@slow
@given(mac=macs, sender_ip=ipv4s, target_ip=ipv4s, vlan=st.integers(0, 4095), pad=st.integers(0, 40))
def test_parse_scapy_built_arp_with_vlan_and_padding(
    mac: str, sender_ip: IPv4Address, target_ip: IPv4Address, vlan: int, pad: int
) -> None:
    frame = bytes(
        Ether(dst="ff:ff:ff:ff:ff:ff", src=mac)
        / Dot1Q(vlan=vlan)
        / ARP(op=2, hwsrc=mac, psrc=str(sender_ip), hwdst=MAC_B, pdst=str(target_ip))
        / Padding(b"\x00" * pad)
    )
    packet = parse_arp(frame)
    assert packet is not None
    assert (packet.op, packet.sender_mac, packet.sender_ip, packet.target_mac, packet.target_ip, packet.vlan) == (
        2,
        mac,
        sender_ip,
        MAC_B,
        target_ip,
        vlan,
    )


def test_parse_arp_qinq() -> None:
    tags = Ether(src=MAC_B, dst=MAC_A, type=0x88A8) / Dot1Q(vlan=100) / Dot1Q(vlan=7)
    frame = bytes(tags / ARP(hwsrc=MAC_B, psrc="192.0.2.1"))
    packet = parse_arp(frame)
    assert packet is not None and packet.vlan == 100 and packet.sender_ip == IPv4Address("192.0.2.1")


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xff" * 13,
        bytes(Ether() / IPv6()),  # not ARP
        bytes(Ether(type=0x0806)) + b"\x00\x01\x08\x00\x06\x04",  # truncated ARP
        bytes(Ether() / ARP(hwtype=6)),  # not Ethernet hardware
        bytes(Ether() / ARP(ptype=0x86DD, plen=16)),  # not IPv4
        bytes(Ether(type=0x8100)) + b"\x00",  # truncated VLAN tag
        bytes(Ether(type=0x8100) / Dot1Q(type=0x8100) / Dot1Q(type=0x8100) / Dot1Q() / ARP()),  # 3 tags
    ],
)
def test_parse_arp_rejects_non_arp(frame: bytes) -> None:
    assert parse_arp(frame) is None


@given(st.binary(max_size=120))
def test_parse_arp_never_raises(data: bytes) -> None:
    parse_arp(data)


@given(data=st.data(), mac=macs, ip=ipv4s)
def test_parse_arp_never_raises_on_damaged_frames(data: st.DataObject, mac: str, ip: IPv4Address) -> None:
    frame = bytearray(build_gratuitous_arp(mac, ip))
    for _ in range(data.draw(st.integers(0, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    parse_arp(bytes(frame[: data.draw(st.integers(0, len(frame)))]))


# --- ARP conflicts (RFC 5227 section 2.1.1) -----------------------------------


def _arp(op: int, sender_mac: str, sender_ip: str, target_ip: str) -> ArpPacket:
    return ArpPacket(
        op=op,
        sender_mac=sender_mac,
        sender_ip=IPv4Address(sender_ip),
        target_mac=arp.ZERO_MAC,
        target_ip=IPv4Address(target_ip),
        eth_src=sender_mac,
        eth_dst=arp.BROADCAST_MAC,
    )


@pytest.mark.parametrize(
    ("packet", "conflict"),
    [
        (_arp(2, MAC_B, "192.0.2.10", "0.0.0.0"), True),  # Linux's answer to our probe
        (_arp(2, MAC_B, "192.0.2.10", "192.0.2.99"), True),  # any reply from the address
        (_arp(1, MAC_B, "192.0.2.10", "192.0.2.99"), True),  # a request from the address
        (_arp(1, MAC_B, "192.0.2.10", "192.0.2.10"), True),  # its gratuitous ARP
        (_arp(1, MAC_B, "0.0.0.0", "192.0.2.10"), True),  # another host probing the same address
        (_arp(1, MAC_A, "0.0.0.0", "192.0.2.10"), False),  # our own probe echoed
        (_arp(1, MAC_A, "192.0.2.10", "192.0.2.10"), False),  # our own announcement
        (_arp(2, MAC_A.upper(), "192.0.2.10", "0.0.0.0"), False),  # ours, MAC case differs
        (_arp(1, MAC_B, "0.0.0.0", "192.0.2.11"), False),  # probe for another address
        (_arp(1, MAC_B, "192.0.2.11", "192.0.2.10"), False),  # someone asking for the address
        (_arp(2, MAC_B, "192.0.2.11", "192.0.2.10"), False),  # reply about another address
        (_arp(2, MAC_B, "0.0.0.0", "192.0.2.10"), False),  # a "reply" from 0.0.0.0 is not a probe
        (_arp(3, MAC_B, "192.0.2.10", "192.0.2.10"), False),  # RARP op code
    ],
)
def test_conflict_from_truth_table(packet: ArpPacket, conflict: bool) -> None:
    reason = conflict_from(packet, ip=V4, own_mac=MAC_A)
    if conflict:
        assert reason is not None and MAC_B in reason and str(V4) in reason and "\n" not in reason
    else:
        assert reason is None


def test_conflict_from_accepts_all_own_macs() -> None:
    packet = _arp(2, MAC_B, "192.0.2.10", "0.0.0.0")
    assert conflict_from(packet, ip=V4, own_mac=[MAC_A, MAC_B.upper()]) is None
    assert conflict_from(packet, ip=V4, own_mac=[MAC_A]) is not None


def test_conflict_from_parsed_reply() -> None:
    reply = bytes(Ether(src=MAC_B, dst=MAC_A) / ARP(op=2, hwsrc=MAC_B, psrc=str(V4), hwdst=MAC_A, pdst="0.0.0.0"))
    packet = parse_arp(reply)
    assert packet is not None
    assert conflict_from(packet, ip=V4, own_mac=MAC_A) == f"{V4} is in use by {MAC_B} (ARP reply with sender IP {V4})"


# --- NDP helpers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "group", "mac"),
    [
        ("4037::01:800:200e:8c6c", "ff02::1:ff0e:8c6c", "33:33:ff:0e:8c:6c"),  # RFC 4291 2.7.1
        ("2001:db8::10", "ff02::1:ff00:10", "33:33:ff:00:00:10"),
        ("fe80::aabb:ccff:fedd:eeff", "ff02::1:ffdd:eeff", "33:33:ff:dd:ee:ff"),
    ],
)
def test_solicited_node_and_multicast_mac(ip: str, group: str, mac: str) -> None:
    assert solicited_node(IPv6Address(ip)) == IPv6Address(group)
    assert multicast_mac(solicited_node(IPv6Address(ip))) == mac


def test_all_nodes_mac() -> None:
    assert multicast_mac(IPv6Address("ff02::1")) == "33:33:00:00:00:01"


@given(st.binary(max_size=64))
def test_internet_checksum_verifies_to_zero(data: bytes) -> None:
    if len(data) % 2:
        data += b"\x00"
    checksum = ndp.internet_checksum(data)
    assert ndp.internet_checksum(data + struct.pack("!H", checksum)) == 0


# --- NDP: scapy as the reference ----------------------------------------------


def _scapy_na(mac: str, ip: IPv6Address, router: bool = False) -> Ether:
    return (
        Ether(dst="33:33:00:00:00:01", src=mac)
        / IPv6(src=str(ip), dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(R=int(router), S=0, O=1, tgt=str(ip))
        / ICMPv6NDOptDstLLAddr(lladdr=mac)
    )


def _scapy_dad_ns(mac: str, ip: IPv6Address) -> Ether:
    group = solicited_node(ip)
    ip6 = IPv6(src="::", dst=str(group), hlim=255)
    return Ether(dst=multicast_mac(group), src=mac) / ip6 / ICMPv6ND_NS(tgt=str(ip))


def _scapy_ns(mac: str, src: IPv6Address, target: IPv6Address) -> Ether:
    group = solicited_node(target)
    return (
        Ether(dst=multicast_mac(group), src=mac)
        / IPv6(src=str(src), dst=str(group), hlim=255)
        / ICMPv6ND_NS(tgt=str(target))
        / ICMPv6NDOptSrcLLAddr(lladdr=mac)
    )


def _scapy_checksum_matches(frame: bytes, layer: type) -> None:
    """The checksum in ``frame`` equals the one scapy computes when it rebuilds the frame."""
    decoded = Ether(frame)
    ours = decoded[layer].cksum
    decoded[layer].cksum = None
    assert Ether(bytes(decoded))[layer].cksum == ours


def test_unsolicited_na_exact_bytes_equal_scapy() -> None:
    assert build_unsolicited_na(MAC_A, V6) == bytes(_scapy_na(MAC_A, V6))
    assert build_unsolicited_na(MAC_A, V6, router=True) == bytes(_scapy_na(MAC_A, V6, router=True))


def test_dad_ns_and_ns_exact_bytes_equal_scapy() -> None:
    assert build_dad_ns(MAC_A, V6) == bytes(_scapy_dad_ns(MAC_A, V6))
    assert build_ns(MAC_A, V6_OTHER, V6) == bytes(_scapy_ns(MAC_A, V6_OTHER, V6))


@slow
@given(mac=macs, ip=ipv6s)
def test_scapy_decodes_unsolicited_na(mac: str, ip: IPv6Address) -> None:
    frame = build_unsolicited_na(mac, ip)
    decoded = Ether(frame)
    assert (decoded.dst, decoded.src, decoded.type) == ("33:33:00:00:00:01", mac, 0x86DD)
    v6 = decoded[IPv6]
    assert (IPv6Address(v6.src), v6.dst, v6.hlim, v6.nh, v6.plen) == (ip, "ff02::1", 255, 58, 32)
    na = decoded[ICMPv6ND_NA]
    assert (na.type, na.code, na.R, na.S, na.O, IPv6Address(na.tgt)) == (136, 0, 0, 0, 1, ip)
    assert decoded[ICMPv6NDOptDstLLAddr].lladdr == mac
    _scapy_checksum_matches(frame, ICMPv6ND_NA)
    assert frame == bytes(_scapy_na(mac, ip))


@slow
@given(mac=macs, ip=ipv6s)
def test_scapy_decodes_dad_ns(mac: str, ip: IPv6Address) -> None:
    frame = build_dad_ns(mac, ip)
    decoded = Ether(frame)
    group = solicited_node(ip)
    assert decoded.dst == "33:33:ff:" + ":".join(f"{b:02x}" for b in ip.packed[13:])
    v6 = decoded[IPv6]
    assert (v6.src, IPv6Address(v6.dst), v6.hlim) == ("::", group, 255)
    ns = decoded[ICMPv6ND_NS]
    assert (ns.type, ns.code, IPv6Address(ns.tgt)) == (135, 0, ip)
    assert ICMPv6NDOptSrcLLAddr not in decoded
    _scapy_checksum_matches(frame, ICMPv6ND_NS)


@slow
@given(mac=macs, src=ipv6s, target=ipv6s)
def test_scapy_decodes_ns(mac: str, src: IPv6Address, target: IPv6Address) -> None:
    frame = build_ns(mac, src, target)
    decoded = Ether(frame)
    assert IPv6Address(decoded[IPv6].src) == src and IPv6Address(decoded[ICMPv6ND_NS].tgt) == target
    assert decoded[ICMPv6NDOptSrcLLAddr].lladdr == mac
    _scapy_checksum_matches(frame, ICMPv6ND_NS)


# --- NDP round trips and robustness -------------------------------------------


@given(mac=macs, ip=ipv6s, router=st.booleans())
def test_unsolicited_na_round_trip(mac: str, ip: IPv6Address, router: bool) -> None:
    packet = parse_ndp(build_unsolicited_na(mac, ip, router=router))
    assert packet == NdpPacket(
        type=136,
        src=ip,
        dst=IPv6Address("ff02::1"),
        target=ip,
        flags=ndp.NA_FLAG_OVERRIDE | (ndp.NA_FLAG_ROUTER if router else 0),
        lladdr=mac,
        eth_src=mac,
        eth_dst="33:33:00:00:00:01",
    )
    assert packet.override and not packet.solicited and packet.router == router and packet.valid


@given(mac=macs, ip=ipv6s)
def test_dad_ns_round_trip(mac: str, ip: IPv6Address) -> None:
    packet = parse_ndp(build_dad_ns(mac, ip))
    assert packet is not None
    assert (packet.type, packet.src, packet.dst, packet.target, packet.lladdr, packet.eth_src) == (
        135,
        IPv6Address("::"),
        solicited_node(ip),
        ip,
        None,
        mac,
    )
    assert packet.eth_dst == multicast_mac(solicited_node(ip))
    assert packet.is_dad and packet.valid and packet.hop_limit == 255


@given(mac=macs, src=ipv6s, target=ipv6s)
def test_ns_round_trip(mac: str, src: IPv6Address, target: IPv6Address) -> None:
    packet = parse_ndp(build_ns(mac, src, target))
    assert packet is not None
    assert (packet.type, packet.src, packet.target, packet.lladdr, packet.checksum_ok) == (135, src, target, mac, True)
    assert not packet.is_dad or src == IPv6Address("::")


@slow
@given(mac=macs, ip=ipv6s, vlan=st.integers(0, 4095), pad=st.integers(0, 30))
def test_parse_scapy_built_na_with_vlan_padding_and_hop_by_hop(
    mac: str, ip: IPv6Address, vlan: int, pad: int
) -> None:
    frame = bytes(
        Ether(dst="33:33:00:00:00:01", src=mac)
        / Dot1Q(vlan=vlan)
        / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
        / IPv6ExtHdrHopByHop()
        / ICMPv6ND_NA(S=1, O=0, tgt=str(ip))
        / ICMPv6NDOptSrcLLAddr(lladdr=MAC_B)  # ignored: an NA's lladdr is its TLLA
        / ICMPv6NDOptDstLLAddr(lladdr=mac)
        / Padding(b"\x00" * pad)
    )
    packet = parse_ndp(frame)
    assert packet is not None
    assert (packet.type, packet.target, packet.lladdr, packet.vlan, packet.checksum_ok) == (136, ip, mac, vlan, True)
    assert packet.solicited and not packet.override


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        bytes(Ether() / ARP()),
        bytes(Ether(src=MAC_B) / IPv6(src="fe80::1", dst="ff02::1") / ICMPv6EchoRequest()),
        bytes(Ether() / IPv6(nh=58, plen=24)),  # payload shorter than claimed
        bytes(Ether(type=0x86DD)) + b"\x40" + bytes(39),  # version 4 in an IPv6 frame
        bytes(Ether() / IPv6(dst="ff02::1:ff00:10") / ICMPv6ND_NS(tgt=str(V6)) / ICMPv6NDOptSrcLLAddr(len=0)),
        build_unsolicited_na(MAC_A, V6)[:-4],  # option cut short (payload length is checked)
    ],
)
def test_parse_ndp_rejects(frame: bytes) -> None:
    assert parse_ndp(frame) is None


def test_parse_ndp_reports_a_bad_checksum() -> None:
    frame = bytearray(build_unsolicited_na(MAC_A, V6))
    frame[14 + 40 + 2] ^= 0xFF
    packet = parse_ndp(bytes(frame))
    assert packet is not None and not packet.checksum_ok and not packet.valid


@given(st.binary(max_size=160))
def test_parse_ndp_never_raises(data: bytes) -> None:
    parse_ndp(data)


@given(data=st.data(), mac=macs, ip=ipv6s, kind=st.sampled_from(["na", "dad", "ns"]))
def test_parse_ndp_never_raises_on_damaged_frames(
    data: st.DataObject, mac: str, ip: IPv6Address, kind: str
) -> None:
    if kind == "na":
        frame = bytearray(build_unsolicited_na(mac, ip))
    else:
        frame = bytearray(build_dad_ns(mac, ip) if kind == "dad" else build_ns(mac, ip, ip))
    for _ in range(data.draw(st.integers(0, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    extra = data.draw(st.binary(max_size=24))
    parse_ndp(bytes(frame[: data.draw(st.integers(0, len(frame)))]) + extra)


# --- DAD conflicts (RFC 4862 sections 5.4.3, 5.4.4) ---------------------------


def _nd(
    type_: int,
    *,
    src: str = "2001:db8::99",
    target: IPv6Address = V6,
    eth_src: str = MAC_B,
    lladdr: str | None = None,
    hop_limit: int = 255,
    checksum_ok: bool = True,
    flags: int = 0,
) -> NdpPacket:
    return NdpPacket(
        type=type_,
        src=IPv6Address(src),
        dst=IPv6Address("ff02::1"),
        target=target,
        flags=flags,
        lladdr=lladdr,
        eth_src=eth_src,
        eth_dst="33:33:00:00:00:01",
        hop_limit=hop_limit,
        checksum_ok=checksum_ok,
    )


@pytest.mark.parametrize(
    ("packet", "conflict"),
    [
        (_nd(136, src=str(V6), lladdr=MAC_B, flags=0x20), True),  # Linux's defence of the address
        (_nd(136, lladdr=None), True),  # NA without TLLA still says "in use"
        (_nd(136, lladdr=MAC_B, flags=0x60), True),  # a solicited NA too
        (_nd(135, src="::"), True),  # another node doing DAD for it
        (_nd(135, src="2001:db8::99", lladdr=MAC_B), False),  # address resolution, not DAD
        (_nd(136, target=V6_OTHER, lladdr=MAC_B), False),  # another address
        (_nd(135, src="::", target=V6_OTHER), False),  # DAD for another address
        (_nd(135, src="::", eth_src=MAC_A), False),  # our own DAD NS echoed
        (_nd(136, eth_src=MAC_A, lladdr=MAC_A), False),  # our own NA
        (_nd(136, eth_src=MAC_B, lladdr=MAC_A.upper()), False),  # an NA naming our MAC
        (_nd(136, lladdr=MAC_B, hop_limit=64), False),  # not from the link: invalid
        (_nd(136, lladdr=MAC_B, checksum_ok=False), False),  # corrupt
    ],
)
def test_dad_conflict_truth_table(packet: NdpPacket, conflict: bool) -> None:
    reason = dad_conflict_from(packet, ip=V6, own_mac=MAC_A)
    if conflict:
        assert reason is not None and MAC_B in reason and str(V6) in reason and "\n" not in reason
    else:
        assert reason is None


def test_dad_conflict_from_parsed_defence() -> None:
    frame = build_unsolicited_na(MAC_B, V6)
    packet = parse_ndp(frame)
    assert packet is not None
    assert dad_conflict_from(packet, ip=V6, own_mac=MAC_A) is not None
    assert dad_conflict_from(packet, ip=V6, own_mac=(MAC_A, MAC_B)) is None


# --- classic BPF programs, run by a tiny interpreter --------------------------


def run_bpf(program: Sequence[bpf.BpfInsn], frame: bytes, *, vlan_tag_present: bool = False) -> int:
    """Enough of the classic BPF machine for the programs in ipshift.wire.bpf."""
    acc, pc = 0, 0
    for _ in range(len(program)):  # no backward jumps: each instruction runs at most once
        insn = program[pc]
        pc += 1
        if insn.code == bpf.BPF_LD_W_ABS and insn.k == bpf._VLAN_PRESENT_K:
            acc = int(vlan_tag_present)
        elif insn.code in (bpf.BPF_LD_H_ABS, bpf.BPF_LD_B_ABS):
            size = 2 if insn.code == bpf.BPF_LD_H_ABS else 1
            if insn.k + size > len(frame):
                return 0  # out-of-bounds load ends the program with "drop"
            acc = int.from_bytes(frame[insn.k : insn.k + size], "big")
        elif insn.code in (bpf.BPF_JEQ_K, bpf.BPF_JGE_K, bpf.BPF_JGT_K):
            taken = {
                bpf.BPF_JEQ_K: acc == insn.k,
                bpf.BPF_JGE_K: acc >= insn.k,
                bpf.BPF_JGT_K: acc > insn.k,
            }[insn.code]
            pc += insn.jt if taken else insn.jf
        elif insn.code == bpf.BPF_RET_K:
            return insn.k
        else:
            raise AssertionError(f"instruction not modelled: {insn}")
    raise AssertionError("fell off the end of the program")


NOT_ARP_OR_ND = [
    bytes(Ether(src=MAC_B) / IPv6(src="fe80::1", dst="ff02::1") / ICMPv6EchoRequest()),
    bytes(Ether(src=MAC_B) / IPv6(src="fe80::1", dst="ff02::16", nh=58) / bytes([143, 0, 0, 0])),  # MLDv2
    bytes(Ether(src=MAC_B, type=0x0800) / bytes(40)),
    b"\x00" * 13,
    bytes(Ether(src=MAC_B) / IPv6(src="fe80::1", dst="ff02::1", nh=58)),  # no ICMPv6 header at all
]


@pytest.mark.parametrize(
    "frame",
    [build_gratuitous_arp(MAC_A, V4), build_arp_probe(MAC_A, V4), bytes(Ether() / ARP(op=2) / Padding(bytes(18)))],
)
def test_arp_filter_accepts_arp(frame: bytes) -> None:
    assert run_bpf(bpf.arp_filter(), frame) == bpf.BPF_ACCEPT
    assert run_bpf(bpf.arp_filter(), frame, vlan_tag_present=True) == 0
    assert run_bpf(bpf.ndp_filter(), frame) == 0


@pytest.mark.parametrize(
    "frame", [build_unsolicited_na(MAC_A, V6), build_dad_ns(MAC_A, V6), build_ns(MAC_A, V6, V6)]
)
def test_ndp_filter_accepts_ns_and_na(frame: bytes) -> None:
    assert run_bpf(bpf.ndp_filter(), frame) == bpf.BPF_ACCEPT
    assert run_bpf(bpf.ndp_filter(), frame, vlan_tag_present=True) == 0
    assert run_bpf(bpf.arp_filter(), frame) == 0


@pytest.mark.parametrize("frame", NOT_ARP_OR_ND)
def test_filters_drop_other_traffic(frame: bytes) -> None:
    assert run_bpf(bpf.arp_filter(), frame) == 0
    assert run_bpf(bpf.ndp_filter(), frame) == 0


def test_bpf_packing() -> None:
    program = bpf.arp_filter()
    packed = bpf.pack_bpf(program)
    assert len(packed) == 8 * len(program)
    assert struct.unpack_from("HBBI", packed, 0) == (0x20, 0, 0, 0xFFFFF030)


# --- announce() and the probe loop, with a fake socket -------------------------


@dataclass
class FakeSocket:
    """Records sends; hands out scripted frames as if they arrived at given times."""

    arrivals: list[tuple[float, bytes]] = field(default_factory=list)  # (seconds after creation, frame)
    sent: list[tuple[float, bytes]] = field(default_factory=list)
    start: float = 0.0

    def __post_init__(self) -> None:
        self.start = time.monotonic()

    def send(self, frame: bytes) -> None:
        self.sent.append((time.monotonic() - self.start, frame))

    async def arecv(self, timeout: float) -> bytes | None:
        now = time.monotonic() - self.start
        if self.arrivals and self.arrivals[0][0] <= now + timeout:
            at, frame = self.arrivals.pop(0)
            await asyncio.sleep(max(0.0, at - now))
            return frame
        await asyncio.sleep(timeout)
        return None


def test_announce_sends_first_at_once_then_every_interval() -> None:
    fake = FakeSocket()
    times = asyncio.run(sender.announce(fake, b"frame", 4, 0.05))  # type: ignore[arg-type]
    assert len(times) == len(fake.sent) == 4
    assert fake.sent[0][0] < 0.02
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.04 <= g <= 0.1 for g in gaps), gaps
    assert times == sorted(times)


def test_announce_edge_cases() -> None:
    fake = FakeSocket()
    assert asyncio.run(sender.announce(fake, b"x", 0, 1.0)) == []  # type: ignore[arg-type]
    assert len(asyncio.run(sender.announce(fake, b"x", 3, 0.0))) == 3  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        asyncio.run(sender.announce(fake, b"x", -1, 0.1))  # type: ignore[arg-type]


def _judge(frame: bytes) -> str | None:
    return "conflict" if frame == b"bad" else None


def test_probe_returns_first_conflict_early() -> None:
    fake = FakeSocket(arrivals=[(0.01, b"noise"), (0.03, b"bad")])
    t0 = time.monotonic()
    reason = asyncio.run(conflict._probe(fake, b"probe", _judge, 0.5, 1))  # type: ignore[arg-type]
    assert reason == "conflict"
    assert time.monotonic() - t0 < 0.3
    assert [f for _, f in fake.sent] == [b"probe"]


def test_probe_spreads_probes_and_times_out() -> None:
    fake = FakeSocket(arrivals=[(0.05, b"noise")])
    t0 = time.monotonic()
    assert asyncio.run(conflict._probe(fake, b"probe", _judge, 0.3, 3)) is None  # type: ignore[arg-type]
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 0.5
    offsets = [at for at, _ in fake.sent]
    assert len(offsets) == 3 and offsets[0] < 0.02
    assert 0.08 <= offsets[1] <= 0.15 and 0.18 <= offsets[2] <= 0.25


def test_probe_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        asyncio.run(conflict._probe(FakeSocket(), b"p", _judge, 0.1, 0))  # type: ignore[arg-type]
