"""Verified moves: after a move, prove the network believes it.

Theory of operation: from the device that now holds the moved address, ask
the probe targets and the address's gateways for their MAC (ARP request;
IPv6: neighbour solicitation) **with the moved address as source**. An
answer addressed to us, for the moved address, from one of them shows that
the path works in both directions and that the neighbour learned the
address's new MAC (the request itself updates its cache). Until one answers,
the address is re-announced at the announcement interval, for at most
``rounds`` rounds; then the move is recorded as unconfirmed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence

from ipshift.model import IPAddress
from ipshift.wire.arp import ARPOP_REPLY, build_arp_request, parse_arp
from ipshift.wire.ndp import build_ns, parse_ndp
from ipshift.wire.sender import ETH_P_ARP, ETH_P_IPV6, FrameSocket, arp_filter, ndp_filter

log = logging.getLogger("ipshift.verify")


def _answers(frame: bytes, ip: IPAddress, mac: str, targets: Sequence[IPAddress]) -> IPAddress | None:
    """The target that ``frame`` shows answering us for ``ip``, or None (pure)."""
    if ip.version == 4:
        p = parse_arp(frame)
        if (p is not None and p.op == ARPOP_REPLY and p.sender_ip in targets and p.target_ip == ip
                and p.eth_dst == mac and p.vlan is None):
            return p.sender_ip
        return None
    n = parse_ndp(frame)
    if n is not None and n.type == 136 and n.target in targets and n.dst == ip and n.eth_dst == mac and n.valid:
        return n.target
    return None


async def verify_path(device: str, mac: str, ip: IPAddress, targets: Sequence[IPAddress], interval: float,
                      rounds: int, reannounce: Callable[[], None]) -> tuple[float | None, IPAddress | None]:
    """Ask ``targets`` from ``ip`` on ``device`` until one answers; (monotonic time, who) or (None, None)."""
    if not targets:
        return None, None
    if ip.version == 4:
        sock = FrameSocket.open(device, ETH_P_ARP, bpf=arp_filter())
        frames = [build_arp_request(mac, ip, t) for t in targets if isinstance(t, ipaddress.IPv4Address)
                  and isinstance(ip, ipaddress.IPv4Address)]
    else:
        sock = FrameSocket.open(device, ETH_P_IPV6, bpf=ndp_filter())
        frames = [build_ns(mac, ip, t) for t in targets if isinstance(t, ipaddress.IPv6Address)
                  and isinstance(ip, ipaddress.IPv6Address)]
    loop = asyncio.get_running_loop()
    try:
        start = loop.time()
        for k in range(rounds):
            if k > 0:
                reannounce()
            for f in frames:
                try:
                    sock.send(f)
                except OSError as exc:
                    log.debug("verification request on %s: %s", device, exc)
            until = start + (k + 1) * interval
            while (left := until - loop.time()) > 0:
                frame = await sock.arecv(left)
                if frame is None:
                    break
                who = _answers(frame, ip, mac, targets)
                if who is not None:
                    return time.monotonic(), who
        return None, None
    finally:
        sock.close_in_background()
