"""Path probing: does anything answer on this NIC? (what carrier cannot show).

Theory of operation
-------------------
Every ``interval`` one *round* starts: from each probed NIC, one ARP request
(IPv6 target: a neighbour solicitation) to each configured target. A reply
counts for a NIC only when it arrives **on that NIC** and answers a request
**outstanding** there (sent in this round, from that NIC, to that target, and
not answered yet): it comes **from the target**, and is addressed to **our**
MAC and to the very address the request was sent from -- the lesson of the
bonding driver's ``arp_validate``: replies seen on another NIC, from hosts
that are not targets, or that answer nobody's question, prove nothing about
this NIC's path. The pure rule is :func:`answered_target`. So a host that
keeps sending unsolicited "target is-at" ARP replies or neighbour
advertisements to the NIC's MAC (gratuitous, or meant for another address)
cannot keep a dead path up: an ARP reply must carry our request's sender
address as its target IP (0.0.0.0 for an RFC 5227 probe, which may also be
answered by broadcast), an advertisement must be solicited (S flag) and sent
to our request's source address. (A forger on the NIC's own segment that
sends exactly such answers while a request is outstanding cannot be told
apart from the target: ARP and NDP carry no nonce.)

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

The I/O half (:class:`PathProber`) owns one AF_PACKET socket per NIC and
family, whose BPF program lets through only what can answer that NIC (ARP
replies to its MAC, neighbour advertisements sent to it: the rest of the
segment's ARP and ND traffic never wakes the daemon), and hands verdict
changes to a callback. It never blocks the event loop. Its clock is one
:class:`~ipshift.timerfd.PreciseTimer` (a timerfd: ``loop.call_at`` fires up
to 1 ms late, a quarter of a 2 ms interval), armed for whichever comes first,
the end of the open round's window or the next round. Round ``k`` is due at
``start + k x interval`` (no drift); a round sent late still gets its whole
window (unless the next round comes first), and slots the loop slept through
are skipped, never sent as a burst. The sockets are not watched: a reply's
arrival decides nothing before its window ends, so they are read when it
ends (what the kernel queued by then is what came in time, even if the loop
was busy when it came) and emptied before the next round's requests go out
(what came in between answers nobody). So a round costs two wake-ups of the
loop, whatever the number of NICs and targets (at 2 ms, the wake-ups are
about half of the CPU probing costs). A NIC's request frames are built once
and kept while its MAC and source address stay the same; a target answers
each round with the very same bytes (ARP and NDP carry no nonce), so a reply's
decoding is kept by its bytes (a few dozen at most; :func:`answered_target`
still judges it against each round's requests). It follows each
NIC's device (:meth:`PathProber.follow`): a NIC whose MAC changed gets sockets that
expect answers to its new MAC, and keeps its verdict; a NIC deleted and made
again (a new ifindex: the old sockets hear nothing any more) gets new
sockets and starts ``unverified``; a NIC that is gone, or was renamed away,
is no longer probed (:meth:`PathProber.remove`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ipshift.model import IPAddress
from ipshift.timerfd import PreciseTimer, next_due
from ipshift.wire.arp import ARPOP_REPLY, BROADCAST_MAC, UNSPECIFIED_V4, ArpPacket, build_arp_request, parse_arp
from ipshift.wire.ndp import NdpPacket, build_ns, parse_ndp
from ipshift.wire.bpf import arp_reply_filter, na_filter
from ipshift.wire.sender import ETH_P_ARP, ETH_P_IPV6, FrameSocket

log = logging.getLogger("ipshift.probe")

MAX_PARSED = 64  # decoded reply frames kept: a target answers every round with the same bytes

Verdict = Literal["unverified", "up", "failed"]


# --------------------------------------------------------------------------- the pure machine


@dataclass(frozen=True, slots=True)
class PathState:
    verdict: Verdict = "unverified"
    answered_in_a_row: int = 0
    missed_in_a_row: int = 0
    ever_answered: bool = False


def judge(state: PathState, answered: bool, *, misses: int, rises: int) -> PathState:
    """One finished round in, the new state out (pure). The runs are counted up to the threshold
    they are compared with (past it they decide nothing), so a steady path gives back the very
    state it was given: nothing is allocated per round."""
    if answered:
        run = min(state.answered_in_a_row + 1, rises)
        verdict = state.verdict
        if verdict == "unverified" or (verdict == "failed" and run >= rises):
            verdict = "up"
        if run == state.answered_in_a_row and not state.missed_in_a_row and verdict == state.verdict:
            return state  # (answered before: ever_answered is already set)
        return PathState(verdict, run, 0, True)
    run = min(state.missed_in_a_row + 1, misses)
    verdict = "failed" if state.verdict == "up" and run >= misses else state.verdict
    if run == state.missed_in_a_row and not state.answered_in_a_row and verdict == state.verdict:
        return state
    return PathState(verdict, 0, run, state.ever_answered)


def round_answered(replied: set[IPAddress], targets: Sequence[IPAddress], mode: str) -> bool:
    if mode == "all":
        return all(t in replied for t in targets)
    return bool(replied)


def answered_target(packet: ArpPacket | NdpPacket, mac: str,
                    outstanding: Mapping[IPAddress, IPAddress]) -> IPAddress | None:
    """The target whose outstanding request ``packet`` answers, else None (pure).

    ``mac`` is the NIC's MAC (lower case); ``outstanding`` maps each target asked in this round and not
    answered yet to the sender address its request carried (0.0.0.0: an RFC 5227 probe)."""
    if isinstance(packet, ArpPacket):
        asked_as = outstanding.get(packet.sender_ip)
        if (asked_as is None or packet.op != ARPOP_REPLY or packet.vlan is not None
                or packet.target_mac != mac or packet.target_ip != asked_as):
            return None
        # Linux answers a probe unicast, with target IP 0.0.0.0; RFC 5227 section 2.6 allows broadcast
        if packet.eth_dst == mac or (asked_as == UNSPECIFIED_V4 and packet.eth_dst == BROADCAST_MAC):
            return packet.sender_ip
        return None
    asked_as = outstanding.get(packet.target)
    if (asked_as is None or not packet.is_na or not packet.valid or not packet.solicited
            or packet.vlan is not None or packet.eth_dst != mac or packet.dst != asked_as):
        return None
    return packet.target


def probe_request(mac: str, src: IPAddress | None, target: IPAddress) -> tuple[IPAddress, bytes] | None:
    """The request a NIC with ``mac`` sends to ``target`` from ``src`` (its address in the target's
    subnet, None: it holds none), with the sender address it asks as; None when there is nothing
    sensible to send (IPv6 without a source address). Pure."""
    if isinstance(target, ipaddress.IPv4Address):
        sip = src if isinstance(src, ipaddress.IPv4Address) else UNSPECIFIED_V4
        return sip, build_arp_request(mac, sip, target)
    if isinstance(src, ipaddress.IPv6Address):
        return src, build_ns(mac, src, target)
    return None


# --------------------------------------------------------------------------- the I/O half


@dataclass
class _Nic:
    name: str
    index: int
    mac: str
    sockets: dict[int, FrameSocket] = field(default_factory=dict)  # ip version -> socket
    state: PathState = field(default_factory=PathState)
    replied: set[IPAddress] = field(default_factory=set)
    outstanding: dict[IPAddress, IPAddress] = field(default_factory=dict)  # target -> the sender address asked as
    last_reply: float = 0.0
    frames: dict[IPAddress, tuple[IPAddress, bytes]] = field(default_factory=dict)  # target -> (asked as, request)


VerdictCallback = Callable[[str, Verdict, str, float], None]
SourceFor = Callable[[str, IPAddress], IPAddress | None]


class PathProber:
    """Probe ``targets`` from each NIC every ``interval``; call ``on_verdict(nic, verdict, why, at)``."""

    def __init__(self, targets: Sequence[IPAddress], interval: float, misses: int, rises: int, mode: str,
                 on_verdict: VerdictCallback, source_for: SourceFor, *, timeout: float | None = None,
                 on_round_end: Callable[[], None] | None = None) -> None:
        self.targets = list(targets)
        self.interval = interval
        self.timeout = min(interval, timeout if timeout is not None else interval / 2)
        self.misses = misses
        self.rises = rises
        self.mode = mode
        self.on_verdict = on_verdict
        self.on_round_end = on_round_end  # after the verdicts of one round: they are one observation
        self.judging = False  # inside the loop that judges a round
        self.source_for = source_for
        self.nics: dict[str, _Nic] = {}
        self._timer: PreciseTimer | None = None
        self._closing: float | None = None  # when the open round's window ends (None: no round open)
        self._next = 0.0  # when the next round is due
        self._rounds = 0
        self._parsed: dict[bytes, ArpPacket | NdpPacket] = {}  # frame -> its decoding (see _read)

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
        versions = {t.version for t in self.targets}
        try:
            if 4 in versions:
                entry.sockets[4] = FrameSocket.open(nic, ETH_P_ARP, bpf=arp_reply_filter(mac))
            if 6 in versions:
                entry.sockets[6] = FrameSocket.open(nic, ETH_P_IPV6, bpf=na_filter(mac))
        except (OSError, ValueError) as exc:  # ValueError: not an Ethernet MAC
            log.warning("cannot probe from %s: %s", nic, exc)
            for s in entry.sockets.values():
                s.close_in_background()
            return
        self.nics[nic] = entry

    def remove(self, nic: str) -> None:
        entry = self.nics.pop(nic, None)
        if entry is None:
            return
        for sock in entry.sockets.values():
            sock.close_in_background()

    def verdict(self, nic: str) -> Verdict:
        entry = self.nics.get(nic)
        return entry.state.verdict if entry is not None else "unverified"

    # -- schedule

    def start(self) -> None:
        self._timer = PreciseTimer(self._tick)
        self._next = time.monotonic()
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = None
        self._closing = None
        for nic in list(self.nics):
            self.remove(nic)

    def _tick(self) -> None:
        """The timer fired: end the open round if its window is over, start the next if it is due."""
        now = time.monotonic()
        try:
            if self._closing is not None and now >= self._closing:
                self._close_round()
            if now >= self._next:
                self._round(now)
        finally:  # whatever went wrong in this round, the schedule goes on
            if self._next <= now:
                self._next = next_due(self._next, now, self.interval)
            if self._timer is not None:
                self._timer.at(self._next if self._closing is None else min(self._closing, self._next))

    def _round(self, now: float) -> None:
        if self._closing is not None:  # the last round's window is still open (timeout == interval)
            self._close_round()
        self._rounds += 1
        for entry in self.nics.values():
            entry.replied.clear()
            entry.outstanding.clear()
            for version in entry.sockets:  # what came since the last round answers nobody
                self._read(entry, version)
            self._send(entry)
        self._closing = now + self.timeout
        due, self._next = self._next, next_due(self._next, now, self.interval)
        if self._next > due + 1.5 * self.interval:
            log.debug("probe round %.3f ms late: the slots it missed are skipped", (now - due) * 1000)

    def _close_round(self) -> None:
        self._closing = None
        for entry in self.nics.values():  # the replies the kernel queued within the window
            for version in entry.sockets:
                self._read(entry, version)
        now = time.monotonic()
        self.judging = True
        try:
            for entry in self.nics.values():
                entry.outstanding.clear()  # a reply that comes later does not count
                self._finish(entry, now)
        finally:
            self.judging = False
        if self.on_round_end is not None:
            self.on_round_end()

    def reset(self, nic: str, why: str) -> None:
        """Judge ``nic``'s path afresh (its carrier went: what the probes said before no longer holds)."""
        entry = self.nics.get(nic)
        if entry is not None:  # answers to requests sent before the loss do not count either
            entry.replied = set()
            entry.outstanding = {}
        if entry is not None and entry.state != PathState():
            before = entry.state.verdict
            entry.state = PathState()
            if before != "unverified":
                self.on_verdict(nic, "unverified", why, time.monotonic())

    def reconfigure(self, targets: Sequence[IPAddress], interval: float, misses: int, rises: int, mode: str,
                    timeout: float | None) -> None:
        """New probe settings; every NIC keeps its verdict (its sockets are opened again when the
        families of the targets change)."""
        families = {t.version for t in self.targets}
        self.targets = list(targets)
        self.misses, self.rises, self.mode = misses, rises, mode
        self.timeout = min(interval, timeout if timeout is not None else interval / 2)
        if interval != self.interval:
            self.interval = interval
            if self._timer is not None:  # the next round on the new schedule
                self._next = time.monotonic() + interval
                self._timer.at(self._next if self._closing is None else min(self._closing, self._next))
        if {t.version for t in self.targets} != families:
            for nic, entry in list(self.nics.items()):
                self.add(nic, entry.index, entry.mac, entry.state)

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
            kept = entry.frames.get(target)
            if kept is None or kept[0] != (src or UNSPECIFIED_V4):
                request = probe_request(entry.mac, src, target)
                if request is None:
                    continue  # no IPv6 source on this NIC (yet): nothing sensible to send
                entry.frames[target] = kept = request
            try:
                sock.send(kept[1])
                entry.outstanding[target] = kept[0]
            except OSError as exc:
                log.debug("probe from %s to %s: %s", entry.name, target, exc)

    def _read(self, entry: _Nic, version: int) -> None:
        sock = entry.sockets.get(version)
        if sock is None:
            return
        for _ in range(64):  # bounded per round
            try:
                frame = sock.recv_nowait()
            except OSError as exc:  # ENETDOWN once after the NIC went down: the error is read with it
                log.debug("probe socket of %s: %s", entry.name, exc)
                return
            if frame is None:
                return
            if not entry.outstanding:  # nothing asked (any more): whatever comes answers nobody
                continue
            packet = self._parsed.get(frame)
            if packet is None:
                packet = parse_arp(frame) if version == 4 else parse_ndp(frame)
                if packet is None:
                    continue
                if len(self._parsed) >= MAX_PARSED:
                    self._parsed.clear()
                self._parsed[frame] = packet
            target = answered_target(packet, entry.mac, entry.outstanding)
            if target is not None:
                del entry.outstanding[target]
                entry.replied.add(target)
                entry.last_reply = time.monotonic()
