"""Verified moves: after a move, prove the network believes it.

Theory of operation: from the device that now holds the moved addresses, ask
the probe targets and the addresses' gateways for their MAC (ARP request;
IPv6: neighbour solicitation) **with each moved address as source**. An
answer addressed to us, for a moved address, from one of them shows that the
path works in both directions and that the neighbour learned the address's
new MAC (the request itself updates its cache). Until one answers for an
address, that address is re-announced every round (the announcement
interval), for at most ``rounds`` rounds; then it is recorded as
unconfirmed.

One socket serves every address a plan moved onto one device (one family):
a plan of one move and a plan of 10,000 are verified the same way. The
requests of a round leave in bursts of ``BURST`` frames with the loop free
between them, and answers are read as they come, so thousands of addresses
neither flood the wire at once nor overrun the socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence

from ipshift.model import IPAddress
from ipshift.wire.arp import ARPOP_REPLY, build_arp_request, parse_arp
from ipshift.wire.bpf import arp_filter, ndp_filter
from ipshift.wire.ndp import build_ns, parse_ndp
from ipshift.wire.sender import ETH_P_ARP, ETH_P_IPV6, FrameSocket

log = logging.getLogger("ipshift.verify")

BURST = 64  # requests sent before the loop reads answers again


def answer_of(frame: bytes, mac: str, ips: set[IPAddress], targets: Sequence[IPAddress]
              ) -> tuple[IPAddress, IPAddress] | None:
    """(our address, the target) that ``frame`` shows answering us, or None (pure)."""
    p = parse_arp(frame)
    if p is not None:
        if (p.op == ARPOP_REPLY and p.sender_ip in targets and p.target_ip in ips and p.eth_dst == mac
                and p.vlan is None):
            return p.target_ip, p.sender_ip
        return None
    n = parse_ndp(frame)
    if n is not None and n.type == 136 and n.target in targets and n.dst in ips and n.eth_dst == mac and n.valid:
        return n.dst, n.target
    return None


def _request(mac: str, ip: IPAddress, target: IPAddress) -> bytes | None:
    if isinstance(ip, ipaddress.IPv4Address) and isinstance(target, ipaddress.IPv4Address):
        return build_arp_request(mac, ip, target)
    if isinstance(ip, ipaddress.IPv6Address) and isinstance(target, ipaddress.IPv6Address):
        return build_ns(mac, ip, target)
    return None


async def verify_paths(device: str, mac: str, ips: Sequence[IPAddress], targets: Sequence[IPAddress],
                       interval: float, rounds: int, reannounce: Callable[[Sequence[IPAddress]], None]
                       ) -> dict[IPAddress, tuple[float, IPAddress]]:
    """Ask ``targets`` from each of ``ips`` (one family) on ``device`` until each is answered; the
    answered ones as (monotonic time, who answered)."""
    confirmed: dict[IPAddress, tuple[float, IPAddress]] = {}
    if not targets or not ips:
        return confirmed
    v4 = ips[0].version == 4
    sock = FrameSocket.open(device, ETH_P_ARP if v4 else ETH_P_IPV6, bpf=arp_filter() if v4 else ndp_filter())
    loop = asyncio.get_running_loop()
    waiting = set(ips)
    wanted = [t for t in targets if t.version == ips[0].version]

    def drain() -> None:
        while (frame := sock.recv_nowait()) is not None:
            got = answer_of(frame, mac, waiting, wanted)
            if got is not None:
                waiting.discard(got[0])
                confirmed[got[0]] = (time.monotonic(), got[1])

    try:
        start = loop.time()
        for k in range(rounds):
            if not waiting:
                break
            if k > 0:
                reannounce(sorted(waiting, key=int))
            burst = 0
            for ip in sorted(waiting, key=int):
                for t in wanted:
                    frame = _request(mac, ip, t)
                    if frame is None:
                        continue
                    try:
                        sock.send(frame)
                    except OSError as exc:
                        log.debug("verification request on %s: %s", device, exc)
                    burst += 1
                    if burst % BURST == 0:
                        await asyncio.sleep(0)
                        drain()
            until = start + (k + 1) * interval
            while waiting and (left := until - loop.time()) > 0:
                frame = await sock.arecv(left)
                if frame is None:
                    break
                got = answer_of(frame, mac, waiting, wanted)
                if got is not None:
                    waiting.discard(got[0])
                    confirmed[got[0]] = (time.monotonic(), got[1])
                drain()
        return confirmed
    finally:
        sock.close_in_background()


class PathVerifier:
    """:func:`verify_paths` with the announcement interval and the configured number of rounds."""

    def __init__(self, interval: float, rounds: int) -> None:
        self.interval = interval
        self.rounds = max(rounds, 1)

    async def verify(self, device: str, mac: str, ips: Sequence[IPAddress], targets: Sequence[IPAddress],
                     reannounce: Callable[[Sequence[IPAddress]], None]
                     ) -> dict[IPAddress, tuple[float, IPAddress] | str]:
        out: dict[IPAddress, tuple[float, IPAddress] | str] = {}
        for version in (4, 6):
            group = [ip for ip in ips if ip.version == version]
            if not group:
                continue
            found = await verify_paths(device, mac, group, targets, self.interval, self.rounds, reannounce)
            for ip in group:
                out[ip] = found.get(ip) or (f"no answer from {', '.join(map(str, targets))} "
                                            f"after {self.rounds} rounds")
        return out
