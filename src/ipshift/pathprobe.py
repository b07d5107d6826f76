"""Path probing: does anything answer on this NIC? (what carrier cannot show).

Theory of operation
-------------------
Every ``interval`` one *round* starts: from each probed NIC, one ARP request
(IPv6 target: a neighbour solicitation) to each configured target. A reply
counts for a NIC only when it arrives **on that NIC**, comes **from a
target**, answers **our** request (addressed to that NIC's MAC) -- the lesson
of the bonding driver's ``arp_validate``: replies seen on another NIC, or
from hosts that are not targets, prove nothing about this NIC's path.

A round is judged ``timeout`` after its requests left (default half the
interval, at most the interval): answered (``any``: at least one target
replied in that window; ``all``: every target did) or not. A reply that comes
later does not count. With the default window a path that dies is declared
failed, on average, ``misses x interval`` after it died: the round under way
then may still have been answered, the next ``misses`` are not, and the last
of them is judged half an interval after it was sent. The pure
machine :func:`judge` turns the run of rounds into a verdict:

* ``unverified``: no target has ever answered since start. Not a failure: a
  missing or slow target must not take the whole gateway down at boot;
* ``up``: ``rises`` answered rounds in a row (or the first answer at all);
* ``failed``: ``misses`` unanswered rounds in a row after having been up.

The requests carry the NIC's own address as sender when it holds one in the
target's subnet, else 0.0.0.0 (an RFC 5227 probe, which hosts answer too):
a NIC whose addresses moved away must not re-point a router's ARP cache at
itself by probing with an address it gave up.

The I/O half (:class:`PathProber`) owns one AF_PACKET socket per NIC (with
an ARP or NDP filter), sends on an absolute schedule driven by
``loop.call_at`` (no drift, no sleeps), and hands verdict changes to a
callback. It never blocks the event loop. It follows each NIC's device
(:meth:`PathProber.follow`): a NIC whose MAC changed gets sockets that
expect answers to its new MAC, and keeps its verdict; a NIC deleted and made
again (a new ifindex: the old sockets hear nothing any more) gets new
sockets and starts ``unverified``; a NIC that is gone, or was renamed away,
is no longer probed (:meth:`PathProber.remove`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ipshift.model import IPAddress
from ipshift.wire.arp import ARPOP_REPLY, build_arp_request, parse_arp
from ipshift.wire.ndp import build_ns, parse_ndp
from ipshift.wire.sender import ETH_P_ARP, ETH_P_IPV6, FrameSocket, arp_filter, ndp_filter

log = logging.getLogger("ipshift.probe")

Verdict = Literal["unverified", "up", "failed"]


# --------------------------------------------------------------------------- the pure machine


@dataclass(frozen=True, slots=True)
class PathState:
    verdict: Verdict = "unverified"
    answered_in_a_row: int = 0
    missed_in_a_row: int = 0
    ever_answered: bool = False


def judge(state: PathState, answered: bool, *, misses: int, rises: int) -> PathState:
    """One finished round in, the new state out (pure)."""
    if answered:
        s = replace(state, answered_in_a_row=state.answered_in_a_row + 1, missed_in_a_row=0, ever_answered=True)
        if s.verdict == "unverified" or (s.verdict == "failed" and s.answered_in_a_row >= rises):
            s = replace(s, verdict="up")
        return s
    s = replace(state, answered_in_a_row=0, missed_in_a_row=state.missed_in_a_row + 1)
    if s.verdict == "up" and s.missed_in_a_row >= misses:
        s = replace(s, verdict="failed")
    return s


def round_answered(replied: set[IPAddress], targets: Sequence[IPAddress], mode: str) -> bool:
    if mode == "all":
        return all(t in replied for t in targets)
    return bool(replied)


# --------------------------------------------------------------------------- the I/O half


@dataclass
class _Nic:
    name: str
    index: int
    mac: str
    sockets: dict[int, FrameSocket] = field(default_factory=dict)  # ip version -> socket
    state: PathState = field(default_factory=PathState)
    replied: set[IPAddress] = field(default_factory=set)
    last_reply: float = 0.0


VerdictCallback = Callable[[str, Verdict, str, float], None]
SourceFor = Callable[[str, IPAddress], IPAddress | None]


class PathProber:
    """Probe ``targets`` from each NIC every ``interval``; call ``on_verdict(nic, verdict, why, at)``."""

    def __init__(self, targets: Sequence[IPAddress], interval: float, misses: int, rises: int, mode: str,
                 on_verdict: VerdictCallback, source_for: SourceFor, *, timeout: float | None = None) -> None:
        self.targets = list(targets)
        self.interval = interval
        self.timeout = min(interval, timeout if timeout is not None else interval / 2)
        self.misses = misses
        self.rises = rises
        self.mode = mode
        self.on_verdict = on_verdict
        self.source_for = source_for
        self.nics: dict[str, _Nic] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closer: asyncio.TimerHandle | None = None  # judges the round under way
        self._next = 0.0
        self._rounds = 0

    # -- membership

    def follow(self, nic: str, index: int, mac: str) -> None:
        """Probe from ``nic``, device ``index`` with ``mac``: open its sockets, or open them again
        when the device is not the one they were opened on (see the module docstring)."""
        entry = self.nics.get(nic)
        if entry is not None and entry.index == index and entry.mac == mac:
            return
        if not mac:
            self.remove(nic)
            return
        state = entry.state if entry is not None and entry.index == index else PathState()
        self.add(nic, index, mac, state)
        if entry is not None and entry.state.verdict != state.verdict:
            self.on_verdict(nic, state.verdict, f"{nic} is a new device: its path is not verified yet",
                            time.monotonic())

    def add(self, nic: str, index: int, mac: str, state: PathState | None = None) -> None:
        if nic in self.nics:
            self.remove(nic)
        entry = _Nic(nic, index, mac, state=state or PathState())
        loop = asyncio.get_running_loop()
        versions = {t.version for t in self.targets}
        try:
            if 4 in versions:
                entry.sockets[4] = FrameSocket.open(nic, ETH_P_ARP, bpf=arp_filter())
            if 6 in versions:
                entry.sockets[6] = FrameSocket.open(nic, ETH_P_IPV6, bpf=ndp_filter())
        except OSError as exc:
            log.warning("cannot probe from %s: %s", nic, exc)
            for s in entry.sockets.values():
                s.close_in_background()
            return
        for version, sock in entry.sockets.items():
            loop.add_reader(sock.fileno(), self._readable, entry, version)
        self.nics[nic] = entry

    def remove(self, nic: str) -> None:
        entry = self.nics.pop(nic, None)
        if entry is None:
            return
        loop = asyncio.get_running_loop()
        for sock in entry.sockets.values():
            loop.remove_reader(sock.fileno())
            sock.close_in_background()

    def verdict(self, nic: str) -> Verdict:
        entry = self.nics.get(nic)
        return entry.state.verdict if entry is not None else "unverified"

    # -- schedule

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._next = loop.time()
        self._round()

    def stop(self) -> None:
        for handle in (self._timer, self._closer):
            if handle is not None:
                handle.cancel()
        self._timer = self._closer = None
        for nic in list(self.nics):
            self.remove(nic)

    def _round(self) -> None:
        loop = asyncio.get_running_loop()
        if self._closer is not None:  # the last round's window is still open (timeout == interval)
            self._closer.cancel()
            self._close_round()
        self._rounds += 1
        for entry in self.nics.values():
            entry.replied = set()
            self._send(entry)
        self._closer = loop.call_at(loop.time() + self.timeout, self._close_round)
        self._next += self.interval
        if self._next < loop.time():  # we were not scheduled for a while: skip, never burst
            self._next = loop.time() + self.interval
        self._timer = loop.call_at(self._next, self._round)

    def _close_round(self) -> None:
        self._closer = None
        now = time.monotonic()
        for entry in self.nics.values():
            self._finish(entry, now)

    def _finish(self, entry: _Nic, now: float) -> None:
        answered = round_answered(entry.replied, self.targets, self.mode)
        before = entry.state.verdict
        entry.state = judge(entry.state, answered, misses=self.misses, rises=self.rises)
        after = entry.state.verdict
        if after != before:
            if after == "failed":
                why = f"path lost: {self.misses} probe rounds unanswered by {', '.join(map(str, self.targets))}"
            elif after == "up":
                why = "path confirmed: probe targets answer"
            else:
                why = ""
            self.on_verdict(entry.name, after, why, now)

    def _send(self, entry: _Nic) -> None:
        for target in self.targets:
            sock = entry.sockets.get(target.version)
            if sock is None:
                continue
            src = self.source_for(entry.name, target)
            try:
                if isinstance(target, ipaddress.IPv4Address):
                    sip = src if isinstance(src, ipaddress.IPv4Address) else ipaddress.IPv4Address(0)
                    frame = build_arp_request(entry.mac, sip, target)
                else:
                    if not isinstance(src, ipaddress.IPv6Address):
                        continue  # no IPv6 source on this NIC (yet): nothing sensible to send
                    frame = build_ns(entry.mac, src, target)
                sock.send(frame)
            except OSError as exc:
                log.debug("probe from %s to %s: %s", entry.name, target, exc)

    def _readable(self, entry: _Nic, version: int) -> None:
        sock = entry.sockets.get(version)
        if sock is None:
            return
        for _ in range(64):  # bounded per wake-up
            frame = sock.recv_nowait()
            if frame is None:
                return
            if version == 4:
                p = parse_arp(frame)
                if (p is not None and p.op == ARPOP_REPLY and p.sender_ip in self.targets
                        and p.eth_dst == entry.mac and p.target_mac == entry.mac and p.vlan is None):
                    entry.replied.add(p.sender_ip)
                    entry.last_reply = time.monotonic()
            else:
                n = parse_ndp(frame)
                if (n is not None and n.type == 136 and n.target in self.targets and n.eth_dst == entry.mac
                        and n.valid):
                    entry.replied.add(n.target)
                    entry.last_reply = time.monotonic()
