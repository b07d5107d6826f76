"""Address-conflict probes: does another host use this IP? (RFC 5227, RFC 4862).

Theory of operation: :func:`probe_conflict_v4` sends an ARP probe and
:func:`probe_conflict_v6` a DAD neighbour solicitation from the NIC that is
about to take an address over, with a failover-sized timeout, and report the
first answer that names another MAC; :func:`probe_conflicts_many` does the
same for many addresses at once (one socket per family, every probe sent at
once, one timeout in all; over with the first answer when every address has
one). The frames are built and judged by the pure
modules :mod:`ipshift.wire.arp` and :mod:`ipshift.wire.ndp`; the sockets are
:class:`~ipshift.wire.sender.FrameSocket` with the filters of
:mod:`ipshift.wire.bpf`.

A probe opens its receive socket *before* sending, so that a fast answer
cannot be missed, and is bounded by ``timeout`` whatever arrives. For IPv6
the socket joins the address's solicited-node group, which this host has not
joined yet because it does not hold the address: another node's DAD NS goes
there. Frames from ``own_macs`` (this host's other NICs, which may still hold
the address during a planned move) are never a conflict. The sockets are
closed with :meth:`~ipshift.wire.sender.FrameSocket.close_in_background`, so
the answer does not wait for the kernel's grace period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from ipaddress import IPv4Address, IPv6Address

from ipshift.wire.arp import ETH_P_ARP, ETH_P_IPV6, build_arp_probe, conflict_from, parse_arp
from ipshift.wire.bpf import arp_filter, ndp_filter
from ipshift.wire.ndp import build_dad_ns, dad_conflict_from, multicast_mac, parse_ndp, solicited_node
from ipshift.wire.sender import FrameSocket

__all__ = ["Judge", "probe_conflict_v4", "probe_conflict_v6", "probe_conflicts_many"]

log = logging.getLogger(__name__)

Judge = Callable[[bytes], str | None]
MAX_GROUPS = 64  # solicited-node groups one probe socket joins; more: all multicast


async def _listen(sock: FrameSocket, judge: Judge, until: float) -> str | None:
    """The first conflict ``judge`` reports before monotonic time ``until``."""
    while (remaining := until - time.monotonic()) > 0:
        frame = await sock.arecv(remaining)
        if frame is None:
            return None
        reason = judge(frame)
        if reason is not None:
            return reason
    return None


async def _probe(
    sock: FrameSocket, probe: bytes, judge: Judge, timeout: float, probes: int
) -> str | None:
    """Send ``probes`` probes spread evenly over ``timeout``, listening all along."""
    if timeout < 0 or probes < 1:
        raise ValueError(f"need timeout >= 0 and probes >= 1, got {timeout} and {probes}")
    start = time.monotonic()
    for n in range(probes):
        sock.send(probe)
        window_end = start + timeout * (n + 1) / probes
        reason = await _listen(sock, judge, window_end)
        if reason is not None:
            return reason
    return None


async def probe_conflict_v4(
    ifname: str, mac: str, ip: IPv4Address, timeout: float, *, probes: int = 1,
    own_macs: Collection[str] = (),
) -> str | None:
    """RFC 5227 probe for ``ip`` from ``mac`` on ``ifname``: who else uses it?

    Returns a one-line reason naming the other MAC, or None when nothing
    conflicting arrived within ``timeout`` seconds. ``probes`` > 1 spreads
    the probes evenly over the timeout. Frames from ``own_macs`` (this host's
    other NICs, which may still hold the address during a planned move) are
    never a conflict.
    """
    own = frozenset({mac, *own_macs})

    def judge(frame: bytes) -> str | None:
        packet = parse_arp(frame)
        return None if packet is None else conflict_from(packet, ip=ip, own_mac=own)

    sock = FrameSocket.open(ifname, ETH_P_ARP, bpf=arp_filter())
    try:
        return await _probe(sock, build_arp_probe(mac, ip), judge, timeout, probes)
    finally:
        sock.close_in_background()


async def probe_conflict_v6(
    ifname: str, mac: str, ip: IPv6Address, timeout: float, *, probes: int = 1,
    own_macs: Collection[str] = (),
) -> str | None:
    """RFC 4862 duplicate address detection for ``ip`` from ``mac`` on ``ifname``.

    Returns a one-line reason naming the other MAC, or None when nothing
    conflicting arrived within ``timeout`` seconds. ``own_macs`` as for
    :func:`probe_conflict_v4`.
    """
    own = frozenset({mac, *own_macs})

    def judge(frame: bytes) -> str | None:
        packet = parse_ndp(frame)
        return None if packet is None else dad_conflict_from(packet, ip=ip, own_mac=own)

    sock = FrameSocket.open(ifname, ETH_P_IPV6, bpf=ndp_filter())
    try:
        group = multicast_mac(solicited_node(ip))
        try:
            sock.add_multicast(group)
        except OSError as e:  # defences go to all-nodes, so DAD still mostly works
            log.warning("cannot join %s on %s, DAD may miss a concurrent prober: %s", group, ifname, e)
        return await _probe(sock, build_dad_ns(mac, ip), judge, timeout, probes)
    finally:
        sock.close_in_background()


async def probe_conflicts_many(
    ifname: str, mac: str, ips: Sequence[IPv4Address | IPv6Address], timeout: float, *,
    own_macs: Collection[str] = (),
) -> dict[IPv4Address | IPv6Address, str]:
    """:func:`probe_conflict_v4` / :func:`probe_conflict_v6` for many addresses at once: one socket
    per family, every probe sent at once, one ``timeout`` in all. The conflicts found, by address."""
    own = frozenset({mac, *own_macs})
    found: dict[IPv4Address | IPv6Address, str] = {}
    v4 = [ip for ip in ips if isinstance(ip, IPv4Address)]
    v6 = [ip for ip in ips if isinstance(ip, IPv6Address)]
    socks: list[tuple[FrameSocket, Callable[[bytes], None]]] = []
    if v4:
        wanted4 = set(v4)

        def judge4(frame: bytes) -> None:
            p = parse_arp(frame)
            if p is None:
                return
            for ip in {p.sender_ip, p.target_ip} & wanted4:
                reason = conflict_from(p, ip=ip, own_mac=own)
                if reason is not None:
                    found.setdefault(ip, reason)

        sock4 = FrameSocket.open(ifname, ETH_P_ARP, bpf=arp_filter())
        socks.append((sock4, judge4))
        for ip4 in v4:
            sock4.send(build_arp_probe(mac, ip4))
    if v6:
        wanted6 = set(v6)

        def judge6(frame: bytes) -> None:
            p = parse_ndp(frame)
            if p is None or p.target not in wanted6:
                return
            assert isinstance(p.target, IPv6Address)
            reason = dad_conflict_from(p, ip=p.target, own_mac=own)
            if reason is not None:
                found.setdefault(p.target, reason)

        sock6 = FrameSocket.open(ifname, ETH_P_IPV6, bpf=ndp_filter())
        socks.append((sock6, judge6))
        groups = sorted({multicast_mac(solicited_node(ip6)) for ip6 in v6})
        try:
            if len(groups) <= MAX_GROUPS:
                for group in groups:
                    sock6.add_multicast(group)
            else:  # beyond what a NIC's multicast filter holds: every group
                sock6.set_allmulti()
        except OSError as e:  # defences go to all-nodes, so DAD still mostly works
            log.warning("cannot join the solicited-node groups on %s, DAD may miss a concurrent prober: %s",
                        ifname, e)
        for ip6 in v6:
            sock6.send(build_dad_ns(mac, ip6))
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    wanted = len(set(ips))

    async def listen(sock: FrameSocket, judge: Callable[[bytes], None]) -> None:
        # until the timeout, or until every address is known to be in use
        while (left := end - loop.time()) > 0 and len(found) < wanted:
            frame = await sock.arecv(left)
            if frame is not None:
                judge(frame)

    try:
        await asyncio.gather(*(listen(s, j) for s, j in socks))
    finally:
        for s, _ in socks:
            s.close_in_background()
    return found
