"""Ethernet and ARP frames as bytes: build, parse, judge (pure, no I/O).

Theory of operation: after a failover ipshift must (1) make sure nobody else
on the segment already uses the address it is about to take over, and (2) tell
every host and switch on the segment that the address now lives behind a new
MAC. Both are plain ARP frames (RFC 826) with the conventions of RFC 5227:

* **Probe** (RFC 5227 section 2.1.1): an ARP *request*, broadcast, sender
  hardware address = our MAC, sender IP = 0.0.0.0 (so that no listener's ARP
  cache is polluted if the address turns out to be taken), target hardware
  address = 00:00:00:00:00:00, target IP = the address being probed.
* **Announcement / gratuitous ARP** (RFC 5227 section 2.3): an ARP request,
  broadcast, with sender IP = target IP = the address and sender MAC = our
  MAC. Hosts that already hold an entry for the address update it (Linux does
  so regardless of ``arp_accept``), switches learn the MAC on the new port.
  Some stacks prefer the *reply* form (like ``arping -A``); for Linux to treat
  a reply as gratuitous its target hardware address must equal the sender's,
  so ``reply=True`` builds exactly that.
* **Conflict** (RFC 5227 section 2.1.1): while probing an address, any ARP
  packet whose sender IP is the address, or any other host's probe for the
  same address, means the address is not free. :func:`conflict_from` is that
  rule as a pure function; the probes (``ipshift.wire.conflict``) feed it
  whatever arrives on the wire.

Frames are built with :mod:`struct` only, without Ethernet padding (the NIC
pads short frames to 60 bytes; veth does not, and nobody minds). The parser
accepts what real wires carry: 802.1Q / 802.1ad tags in the frame and trailing
padding, and returns ``None`` for anything that is not Ethernet/ARP for IPv4
over Ethernet, never raising on malformed input.

The small Ethernet helpers here (:func:`mac_to_bytes`, :func:`mac_from_bytes`,
:func:`ethernet_header`, :func:`split_ethernet`) are shared with
``ipshift.wire.ndp``.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

ETH_P_ARP: Final = 0x0806
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
ETH_P_8021Q: Final = 0x8100
ETH_P_8021AD: Final = 0x88A8
VLAN_ETHERTYPES: Final = frozenset({ETH_P_8021Q, ETH_P_8021AD})
MAX_VLAN_TAGS: Final = 2  # single tag or Q-in-Q

ARPHRD_ETHER: Final = 1
ARPOP_REQUEST: Final = 1
ARPOP_REPLY: Final = 2

BROADCAST_MAC: Final = "ff:ff:ff:ff:ff:ff"
ZERO_MAC: Final = "00:00:00:00:00:00"
UNSPECIFIED_V4: Final = IPv4Address("0.0.0.0")

_ETH_HEADER = struct.Struct("!6s6sH")
_VLAN_TAG = struct.Struct("!HH")  # TCI, inner ethertype
# htype, ptype, hlen, plen, op, sha, spa, tha, tpa
_ARP_IPV4 = struct.Struct("!HHBBH6s4s6s4s")

_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")

ETH_HEADER_LEN: Final = _ETH_HEADER.size  # 14
ARP_IPV4_LEN: Final = _ARP_IPV4.size  # 28


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """One decoded Ethernet/ARP (IPv4 over Ethernet) frame. MACs are lower case."""

    op: int  # ARPOP_REQUEST (1) or ARPOP_REPLY (2); other values are passed through
    sender_mac: str
    sender_ip: IPv4Address
    target_mac: str
    target_ip: IPv4Address
    eth_src: str
    eth_dst: str
    vlan: int | None = None  # VLAN id of the outermost 802.1Q tag carried in the frame

    @property
    def is_probe(self) -> bool:
        """An RFC 5227 probe: a request with sender IP 0.0.0.0."""
        return self.op == ARPOP_REQUEST and self.sender_ip == UNSPECIFIED_V4

    @property
    def is_gratuitous(self) -> bool:
        """Sender IP equals target IP (announcement), and is not 0.0.0.0."""
        return self.sender_ip == self.target_ip and self.sender_ip != UNSPECIFIED_V4


@dataclass(frozen=True, slots=True)
class EthernetFrame:
    """The Ethernet part of a frame, VLAN tags already stepped over."""

    dst: str
    src: str
    ethertype: int
    payload: bytes
    vlan: int | None = None


# --- Ethernet helpers ---------------------------------------------------------


def mac_to_bytes(mac: str) -> bytes:
    """``"aa:bb:cc:dd:ee:ff"`` (any case, ``:`` or ``-``) to 6 bytes; ValueError otherwise."""
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or any(len(p) != 2 or not set(p) <= _HEX_DIGITS for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_from_bytes(raw: bytes) -> str:
    """6 bytes to lower-case ``"aa:bb:cc:dd:ee:ff"``."""
    if len(raw) != 6:
        raise ValueError(f"a MAC address has 6 bytes, not {len(raw)}")
    return ":".join(f"{b:02x}" for b in raw)


def normalize_mac(mac: str) -> str:
    """Canonical lower-case colon form of ``mac``; ValueError when it is not one."""
    return mac_from_bytes(mac_to_bytes(mac))


def ethernet_header(dst: str, src: str, ethertype: int) -> bytes:
    """The 14-byte Ethernet II header."""
    return _ETH_HEADER.pack(mac_to_bytes(dst), mac_to_bytes(src), ethertype)


def split_ethernet(frame: bytes) -> EthernetFrame | None:
    """Decode the Ethernet header, stepping over up to two VLAN tags; None if too short."""
    if len(frame) < ETH_HEADER_LEN:
        return None
    dst, src, ethertype = _ETH_HEADER.unpack_from(frame)
    offset = ETH_HEADER_LEN
    vlan: int | None = None
    for _ in range(MAX_VLAN_TAGS):
        if ethertype not in VLAN_ETHERTYPES:
            break
        if len(frame) < offset + _VLAN_TAG.size:
            return None
        tci, ethertype = _VLAN_TAG.unpack_from(frame, offset)
        if vlan is None:
            vlan = tci & 0x0FFF
        offset += _VLAN_TAG.size
    return EthernetFrame(
        dst=mac_from_bytes(dst),
        src=mac_from_bytes(src),
        ethertype=ethertype,
        payload=bytes(frame[offset:]),
        vlan=vlan,
    )


# --- ARP builders -------------------------------------------------------------


def build_arp(
    *,
    op: int,
    eth_src: str,
    eth_dst: str,
    sender_mac: str,
    sender_ip: IPv4Address,
    target_mac: str,
    target_ip: IPv4Address,
) -> bytes:
    """Any Ethernet/ARP IPv4 frame; the specific builders below are the ones to use."""
    arp = _ARP_IPV4.pack(
        ARPHRD_ETHER,
        ETH_P_IP,
        6,
        4,
        op,
        mac_to_bytes(sender_mac),
        sender_ip.packed,
        mac_to_bytes(target_mac),
        target_ip.packed,
    )
    return ethernet_header(eth_dst, eth_src, ETH_P_ARP) + arp


def build_gratuitous_arp(mac: str, ip: IPv4Address, *, reply: bool = False) -> bytes:
    """Broadcast announcement that ``ip`` is at ``mac`` (RFC 5227 section 2.3).

    Request form (default): sender = target = ``ip``, target MAC all zeros.
    Reply form (``reply=True``, like ``arping -A``): target MAC = ``mac``, which
    Linux requires before it counts a reply as gratuitous.
    """
    return build_arp(
        op=ARPOP_REPLY if reply else ARPOP_REQUEST,
        eth_src=mac,
        eth_dst=BROADCAST_MAC,
        sender_mac=mac,
        sender_ip=ip,
        target_mac=mac if reply else ZERO_MAC,
        target_ip=ip,
    )


def build_arp_probe(mac: str, ip: IPv4Address) -> bytes:
    """RFC 5227 probe for ``ip``: broadcast request, sender IP 0.0.0.0, target MAC zero."""
    return build_arp(
        op=ARPOP_REQUEST,
        eth_src=mac,
        eth_dst=BROADCAST_MAC,
        sender_mac=mac,
        sender_ip=UNSPECIFIED_V4,
        target_mac=ZERO_MAC,
        target_ip=ip,
    )


def build_arp_request(mac: str, src_ip: IPv4Address, target_ip: IPv4Address) -> bytes:
    """Ordinary broadcast "who has ``target_ip``? tell ``src_ip``" request."""
    return build_arp(
        op=ARPOP_REQUEST,
        eth_src=mac,
        eth_dst=BROADCAST_MAC,
        sender_mac=mac,
        sender_ip=src_ip,
        target_mac=ZERO_MAC,
        target_ip=target_ip,
    )


# --- parsing and judging ------------------------------------------------------


def parse_arp(frame: bytes) -> ArpPacket | None:
    """Decode an Ethernet/ARP IPv4 frame; None for anything else (never raises)."""
    eth = split_ethernet(frame)
    if eth is None or eth.ethertype != ETH_P_ARP or len(eth.payload) < ARP_IPV4_LEN:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP_IPV4.unpack_from(eth.payload)
    if (htype, ptype, hlen, plen) != (ARPHRD_ETHER, ETH_P_IP, 6, 4):
        return None
    return ArpPacket(
        op=op,
        sender_mac=mac_from_bytes(sha),
        sender_ip=IPv4Address(spa),
        target_mac=mac_from_bytes(tha),
        target_ip=IPv4Address(tpa),
        eth_src=eth.src,
        eth_dst=eth.dst,
        vlan=eth.vlan,
    )


def _own_macs(own_mac: str | Collection[str]) -> frozenset[str]:
    if isinstance(own_mac, str):
        return frozenset({normalize_mac(own_mac)})
    return frozenset(normalize_mac(m) for m in own_mac)


def conflict_from(
    packet: ArpPacket, *, ip: IPv4Address, own_mac: str | Collection[str]
) -> str | None:
    """Whether ``packet``, received while probing ``ip``, shows ``ip`` is taken.

    RFC 5227 section 2.1.1: any ARP request or reply whose sender IP is ``ip``,
    or another host's probe (sender IP 0.0.0.0) whose target IP is ``ip``.
    Packets whose sender MAC is ours (``own_mac``: one MAC or all of the
    host's) are our own echoes and never a conflict. Returns a one-line
    reason naming the other MAC, or None.
    """
    sender = normalize_mac(packet.sender_mac)
    if packet.op not in (ARPOP_REQUEST, ARPOP_REPLY) or sender in _own_macs(own_mac):
        return None
    kind = "reply" if packet.op == ARPOP_REPLY else "request"
    if packet.sender_ip == ip:
        return f"{ip} is in use by {sender} (ARP {kind} with sender IP {ip})"
    if packet.is_probe and packet.target_ip == ip:
        return f"{ip} is being probed for by {sender} (RFC 5227 ARP probe)"
    return None
