"""Classic-BPF socket filters for the receiving ``AF_PACKET`` sockets (pure).

Theory of operation: a receiving :class:`~ipshift.wire.sender.FrameSocket`
gets one of these programs (``SO_ATTACH_FILTER``) before it is bound, so the
kernel runs it on every frame of the interface and queues only what it
accepts: :func:`arp_filter` keeps ARP, :func:`ndp_filter` keeps ICMPv6
neighbour solicitations and advertisements (no extension headers). Both
drop frames that carry a VLAN tag in skb metadata: Linux shows a VLAN
subinterface's traffic to sockets bound on the parent NIC, and an address in
use on VLAN 10 says nothing about the untagged segment. The path prober's
sockets get narrower programs made for one NIC: :func:`arp_reply_filter`
keeps only ARP replies whose target hardware address is the NIC's MAC, and
:func:`na_filter` only neighbour advertisements sent to it. Every other
frame of the segment (the ARP requests of all its hosts, the other NICs'
probes, gratuitous announcements) stays in the kernel: at a 2 ms probe
interval each frame let through costs a wake-up and a parse. The programs are
values (:class:`BpfInsn`); :func:`pack_bpf` gives the kernel's
``struct sock_filter`` array.

This module does no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ipshift.wire.arp import ARPOP_REPLY, ETH_P_ARP, ETH_P_IPV6, mac_to_bytes

__all__ = [
    "BpfInsn",
    "arp_filter",
    "arp_reply_filter",
    "na_filter",
    "ndp_filter",
    "pack_bpf",
]

# <linux/filter.h>
SKF_AD_OFF: Final = -0x1000
SKF_AD_VLAN_TAG_PRESENT: Final = 48

_SOCK_FILTER = struct.Struct("HBBI")  # code, jt, jf, k

BPF_LD_W_ABS: Final = 0x20
BPF_LD_H_ABS: Final = 0x28
BPF_LD_B_ABS: Final = 0x30
BPF_JEQ_K: Final = 0x15
BPF_JGT_K: Final = 0x25
BPF_JGE_K: Final = 0x35
BPF_RET_K: Final = 0x06
BPF_ACCEPT: Final = 0x40000  # "keep up to 256 KiB of the frame"
_VLAN_PRESENT_K: Final = (SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class BpfInsn:
    """One classic BPF instruction (``struct sock_filter``)."""

    code: int
    jt: int
    jf: int
    k: int


def arp_filter() -> tuple[BpfInsn, ...]:
    """Accept untagged ARP frames only (``tcpdump -dd 'not vlan and arp'``, by hand)."""
    return (
        BpfInsn(BPF_LD_W_ABS, 0, 0, _VLAN_PRESENT_K),  # 0: A = skb has a VLAN tag
        BpfInsn(BPF_JEQ_K, 0, 3, 0),  # 1: tagged -> 5
        BpfInsn(BPF_LD_H_ABS, 0, 0, 12),  # 2: A = ethertype
        BpfInsn(BPF_JEQ_K, 0, 1, ETH_P_ARP),  # 3: not ARP -> 5
        BpfInsn(BPF_RET_K, 0, 0, BPF_ACCEPT),  # 4: accept
        BpfInsn(BPF_RET_K, 0, 0, 0),  # 5: drop
    )


def ndp_filter() -> tuple[BpfInsn, ...]:
    """Accept untagged IPv6 ICMPv6 NS/NA without extension headers."""
    return (
        BpfInsn(BPF_LD_W_ABS, 0, 0, _VLAN_PRESENT_K),  # 0: A = skb has a VLAN tag
        BpfInsn(BPF_JEQ_K, 0, 8, 0),  # 1: tagged -> 10
        BpfInsn(BPF_LD_H_ABS, 0, 0, 12),  # 2: A = ethertype
        BpfInsn(BPF_JEQ_K, 0, 6, ETH_P_IPV6),  # 3: not IPv6 -> 10
        BpfInsn(BPF_LD_B_ABS, 0, 0, 14 + 6),  # 4: A = next header
        BpfInsn(BPF_JEQ_K, 0, 4, 58),  # 5: not ICMPv6 -> 10
        BpfInsn(BPF_LD_B_ABS, 0, 0, 14 + 40),  # 6: A = ICMPv6 type
        BpfInsn(BPF_JGE_K, 0, 2, 135),  # 7: below NS -> 10
        BpfInsn(BPF_JGT_K, 1, 0, 136),  # 8: above NA -> 10
        BpfInsn(BPF_RET_K, 0, 0, BPF_ACCEPT),  # 9: accept
        BpfInsn(BPF_RET_K, 0, 0, 0),  # 10: drop
    )


def _mac_words(mac: str) -> tuple[int, int]:
    raw = mac_to_bytes(mac)
    return int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:], "big")


def arp_reply_filter(mac: str) -> tuple[BpfInsn, ...]:
    """Accept untagged ARP replies whose target hardware address is ``mac`` only (the answers to
    a NIC's own requests; the prober checks the rest)."""
    high, low = _mac_words(mac)
    return (
        BpfInsn(BPF_LD_W_ABS, 0, 0, _VLAN_PRESENT_K),  # 0: A = skb has a VLAN tag
        BpfInsn(BPF_JEQ_K, 0, 9, 0),  # 1: tagged -> 11
        BpfInsn(BPF_LD_H_ABS, 0, 0, 12),  # 2: A = ethertype
        BpfInsn(BPF_JEQ_K, 0, 7, ETH_P_ARP),  # 3: not ARP -> 11
        BpfInsn(BPF_LD_H_ABS, 0, 0, 14 + 6),  # 4: A = ARP op
        BpfInsn(BPF_JEQ_K, 0, 5, ARPOP_REPLY),  # 5: not a reply -> 11
        BpfInsn(BPF_LD_W_ABS, 0, 0, 14 + 18),  # 6: A = target MAC, first 4 bytes
        BpfInsn(BPF_JEQ_K, 0, 3, high),  # 7: not ours -> 11
        BpfInsn(BPF_LD_H_ABS, 0, 0, 14 + 22),  # 8: A = target MAC, last 2 bytes
        BpfInsn(BPF_JEQ_K, 0, 1, low),  # 9: not ours -> 11
        BpfInsn(BPF_RET_K, 0, 0, BPF_ACCEPT),  # 10: accept
        BpfInsn(BPF_RET_K, 0, 0, 0),  # 11: drop
    )


def na_filter(mac: str) -> tuple[BpfInsn, ...]:
    """Accept untagged neighbour advertisements (no extension headers) sent to ``mac`` only."""
    high, low = _mac_words(mac)
    return (
        BpfInsn(BPF_LD_W_ABS, 0, 0, _VLAN_PRESENT_K),  # 0: A = skb has a VLAN tag
        BpfInsn(BPF_JEQ_K, 0, 11, 0),  # 1: tagged -> 13
        BpfInsn(BPF_LD_H_ABS, 0, 0, 12),  # 2: A = ethertype
        BpfInsn(BPF_JEQ_K, 0, 9, ETH_P_IPV6),  # 3: not IPv6 -> 13
        BpfInsn(BPF_LD_B_ABS, 0, 0, 14 + 6),  # 4: A = next header
        BpfInsn(BPF_JEQ_K, 0, 7, 58),  # 5: not ICMPv6 -> 13
        BpfInsn(BPF_LD_B_ABS, 0, 0, 14 + 40),  # 6: A = ICMPv6 type
        BpfInsn(BPF_JEQ_K, 0, 5, 136),  # 7: not an NA -> 13
        BpfInsn(BPF_LD_W_ABS, 0, 0, 0),  # 8: A = destination MAC, first 4 bytes
        BpfInsn(BPF_JEQ_K, 0, 3, high),  # 9: not to us -> 13
        BpfInsn(BPF_LD_H_ABS, 0, 0, 4),  # 10: A = destination MAC, last 2 bytes
        BpfInsn(BPF_JEQ_K, 0, 1, low),  # 11: not to us -> 13
        BpfInsn(BPF_RET_K, 0, 0, BPF_ACCEPT),  # 12: accept
        BpfInsn(BPF_RET_K, 0, 0, 0),  # 13: drop
    )


def pack_bpf(program: Sequence[BpfInsn]) -> bytes:
    """The program as the kernel's array of ``struct sock_filter``."""
    return b"".join(_SOCK_FILTER.pack(i.code, i.jt, i.jf, i.k) for i in program)
