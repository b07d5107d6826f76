"""Forged answers on a dead path: unsolicited "target is-at" ARP replies and NAs must not keep it up.

eth0 is cut off the switch (its carrier stays up), and a forger on eth0's switch-side peer, the only
thing eth0 can still hear, sends unsolicited answers that claim to come from the probe target and are
addressed to eth0's MAC, at a bounded rate for a bounded time. None of them answers a request of ours
(wrong target IP, not solicited, or not addressed to the address the request came from), so eth0's path
must still be declared failed, its address moved, and it must stay failed while the forgery goes on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from failover_kit import holders, on
from labtools import DaemonHandle

from ipshift.lab import Lab
from ipshift.wire.arp import ARPOP_REPLY, build_arp

A10 = "192.0.2.10/24"
A6 = "2001:db8::10/64"
TARGET = "192.0.2.100"
TARGET6 = "2001:db8::100"
FORGED_MAC = "02:1b:00:00:09:99"

# sends each frame (hex on argv) in turn, one every 2 ms: bounded in count and in time
FORGER = r"""
import socket, sys, time
ifname, seconds, frames = sys.argv[1], float(sys.argv[2]), [bytes.fromhex(h) for h in sys.argv[3:]]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end and n < 2000:
    s.send(frames[n % len(frames)]); n += 1
    time.sleep(0.002)
print(n)
"""
FORGE_SECONDS = 2.5


def config(addresses: tuple[str, str], target: str) -> dict[str, Any]:
    return {
        "interfaces": {"eth0": {"addresses": [addresses[0]]}, "eth1": {"addresses": [addresses[1]]}},
        "detect": {"link": True, "probe": {"targets": [target], "interval": "10ms", "misses": 3, "rises": 2}},
        "announce": {"count": 2, "interval": "50ms", "verify_rounds": 3},
        "failback": {"mode": "auto", "delay": "200ms"},
        "conflict_check": {"enabled": False},
    }


def forged_arp_replies(lab: Lab) -> list[bytes]:
    """"192.0.2.100 is-at FORGED_MAC", to eth0's MAC, but for another IP than the one eth0 asked as."""
    mac0 = lab.mac_of("eth0")
    return [build_arp(op=ARPOP_REPLY, eth_src=FORGED_MAC, eth_dst=mac0, sender_mac=FORGED_MAC,
                      sender_ip=IPv4Address(TARGET), target_mac=mac0, target_ip=IPv4Address(tip))
            for tip in (TARGET, "192.0.2.99", "192.0.2.255")]  # gratuitous form; someone else's; broadcast


def forged_nas(lab: Lab) -> list[bytes]:
    """"2001:db8::100 is-at FORGED_MAC", to eth0's MAC: unsolicited, or solicited by somebody else."""
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
    from scapy.layers.l2 import Ether

    mac0 = lab.mac_of("eth0")
    out = []
    for dst, solicited in (("ff02::1", 0), ("2001:db8::10", 0), ("2001:db8::99", 1)):
        na = (Ether(src=FORGED_MAC, dst=mac0) / IPv6(src=TARGET6, dst=dst, hlim=255)
              / ICMPv6ND_NA(tgt=TARGET6, R=0, S=solicited, O=1) / ICMPv6NDOptDstLLAddr(lladdr=FORGED_MAC))
        out.append(bytes(na))
    return out


def run_spoof(lab: Lab, d: DaemonHandle, addr: str, frames: list[bytes]) -> None:
    d.wait_for(lambda s: s["nics"]["eth0"]["path"] == "up" and s["nics"]["eth1"]["path"] == "up", timeout=3.0,
               what="both paths confirmed")
    lab.detach_nic("eth0")
    t0 = time.monotonic()
    forger = lab.popen(lab.switch, sys.executable, "-c", FORGER, lab.peer_of("eth0"), str(FORGE_SECONDS),
                       *(f.hex() for f in frames))
    try:
        d.wait_for(lambda s: on(s, addr) == ["eth1"], timeout=2.0, what="the move despite forged answers")
        st = d.status()
        assert st["nics"]["eth0"]["path"] == "failed" and st["nics"]["eth0"]["link"]["carrier"] is True
        # while the forgery goes on (longer than rises x interval + the failback delay), eth0 stays failed
        while time.monotonic() - t0 < FORGE_SECONDS - 0.3:
            st = d.status()
            assert st["nics"]["eth0"]["path"] == "failed", st["nics"]["eth0"]
            assert on(st, addr) == ["eth1"]
            time.sleep(0.05)
        assert forger.poll() is None, "the forger stopped early: the test proved nothing"
    finally:
        forger.wait(10)
    assert forger.returncode == 0


def test_forged_arp_replies_do_not_keep_a_detached_nic_up(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, config((A10, "192.0.2.11/24"), TARGET))
    run_spoof(lab, d, A10, forged_arp_replies(lab))
    assert holders(lab, A10) == ["eth1"]


def test_forged_neighbour_advertisements_do_not_keep_a_detached_nic_up(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(ipv6=True)
    d = make_daemon(lab, config((A6, "2001:db8::11/64"), TARGET6))
    run_spoof(lab, d, A6, forged_nas(lab))
    assert holders(lab, A6) == ["eth1"]
