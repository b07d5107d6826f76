"""The bench's switch agent: which frames count as announcements (decoded with scapy as the reference)."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

SURV = "02:1b:00:00:00:11"


@pytest.fixture(scope="module")
def swagent() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "swagent.py"
    spec = importlib.util.spec_from_file_location("bench_swagent", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_swagent"] = mod
    spec.loader.exec_module(mod)
    return mod


def run_bpf(prog: list[tuple[int, int, int, int]], frame: bytes) -> int:
    """A classic-BPF interpreter for the instructions the agent uses: ldh/ldb [k], jeq #k, ret #k."""
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == 0x28:  # ldh [k]
            if k + 2 > len(frame):
                return 0
            acc = struct.unpack_from("!H", frame, k)[0]
        elif code == 0x30:  # ldb [k]
            if k + 1 > len(frame):
                return 0
            acc = frame[k]
        elif code == 0x15:  # jeq #k
            pc += jt if acc == k else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")
        pc += 1


def na(solicited: int = 0, override: int = 1, lladdr: str | None = SURV, hlim: int = 255) -> bytes:
    pkt = (Ether(src=SURV, dst="33:33:00:00:00:01") / IPv6(src="2001:db8::50", dst="ff02::1", hlim=hlim)
           / ICMPv6ND_NA(tgt="2001:db8::50", R=0, S=solicited, O=override))
    if lladdr:
        pkt = pkt / ICMPv6NDOptDstLLAddr(lladdr=lladdr)
    return bytes(pkt)


def garp(ip: str = "192.0.2.50", op: int = 1) -> bytes:
    return bytes(Ether(src=SURV, dst="ff:ff:ff:ff:ff:ff") / ARP(op=op, hwsrc=SURV, psrc=ip, pdst=ip,
                                                                  hwdst="00:00:00:00:00:00"))


def test_unsolicited_na_is_an_announcement_with_the_lladdr_option(swagent: ModuleType) -> None:
    assert swagent.parse_announcement(na()) == ("2001:db8::50", SURV)
    # the target link-layer address option wins over the frame's source
    assert swagent.parse_announcement(na(lladdr="02:1b:00:00:02:00")) == ("2001:db8::50", "02:1b:00:00:02:00")
    # no option: the frame's source
    assert swagent.parse_announcement(na(lladdr=None)) == ("2001:db8::50", SURV)


@pytest.mark.parametrize("frame", [
    na(solicited=1),  # an answer to a solicitation, not an announcement
    na(override=0),  # does not replace the cached MAC
    na(hlim=64),  # not from the link (RFC 4861 drops it)
    bytes(Ether(src=SURV) / IPv6(src="::", dst="ff02::1:ff00:50") / ICMPv6ND_NS(tgt="2001:db8::50")),
    bytes(Ether(src=SURV) / IPv6(src="2001:db8::50", dst="2001:db8::100") / ICMPv6EchoReply()),
])
def test_other_icmpv6_is_not_an_announcement(swagent: ModuleType, frame: bytes) -> None:
    assert swagent.parse_announcement(frame) is None


def test_gratuitous_arp_still_counts_and_a_plain_request_does_not(swagent: ModuleType) -> None:
    assert swagent.parse_announcement(garp()) == ("192.0.2.50", SURV)
    assert swagent.parse_announcement(garp(op=2)) == ("192.0.2.50", SURV)
    plain = bytes(Ether(src=SURV) / ARP(op=1, hwsrc=SURV, psrc="192.0.2.11", pdst="192.0.2.100"))
    assert swagent.parse_announcement(plain) is None


def test_the_socket_filter_passes_arp_and_neighbour_advertisements_only(swagent: ModuleType) -> None:
    prog = swagent.ANNOUNCE_BPF
    assert run_bpf(prog, garp()) > 0
    assert run_bpf(prog, na()) > 0
    assert run_bpf(prog, na(solicited=1)) > 0  # the filter is coarse: Python decides the flags
    dropped = [
        bytes(Ether() / IPv6(src="2001:db8::50", dst="2001:db8::100") / ICMPv6EchoReply()),
        bytes(Ether() / IPv6(src="::", dst="ff02::1:ff00:50") / ICMPv6ND_NS(tgt="2001:db8::50")),
        bytes(Ether() / IP(src="192.0.2.50", dst="192.0.2.100") / ICMP(type=0)),
        b"\x00" * 13,
    ]
    for frame in dropped:
        assert run_bpf(prog, frame) == 0, frame.hex()
