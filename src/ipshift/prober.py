#!/usr/bin/env python3
"""A fixed-schedule reachability prober for the lab (run it in the client namespace).

It sends one probe to ``--target`` every ``--interval`` seconds on an absolute
schedule (probe k is due at ``t0 + k * interval``): it never waits for a
reply and never slows down when replies are missing, unlike ``ping -i``,
which falls back to one probe per 10 ms while replies are missing and so
over-reports outages. A probe that could not go out on time (the prober was
not scheduled) is sent as soon as possible; slots that are more than one
interval in the past are skipped and counted, never sent as a burst.

Probes are ICMP echo requests on a raw socket (IPv4 or IPv6, chosen from the
target address) or, with ``--udp PORT``, UDP datagrams answered by
``prober.py echo --port PORT`` running on the target.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC), comparable across the
processes of one boot, so the orchestrator can relate them to the instant it
injected a failure. A reply's time is the kernel's receive timestamp
(SO_TIMESTAMPNS, CLOCK_REALTIME) converted to CLOCK_MONOTONIC at the moment
of reading; the time at which the prober read it is the fallback.

The run ends after ``--duration`` seconds or ``--count`` probes, whichever
comes first (both are bounded; ``--duration`` is at most 600 s), or on
``stop`` / end of input with ``--control``. With ``--control`` the prober also
answers ``status`` lines on stdin with one JSON line on stdout (last reply
time, counts). At the end it prints one JSON object: counts, send lateness,
the longest gap between consecutive replies (the outage), the first reply
after each ``--after`` instant, every probe sent more than one interval late
(``late_events``: due time and lateness), and with ``--raw`` every reply's sequence
number and time.

Only standard library; Python 3.11. Usage::

    ip netns exec CLIENT python3 -m ipshift.prober --target 192.0.2.10 --duration 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

MAX_DURATION = 600.0
MAX_COUNT = 10_000_000
MAX_LATE_EVENTS = 2000
MAGIC = b"ipsbPRB1"
ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMP6_ECHO, ICMP6_ECHOREPLY = 128, 129
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


@dataclass
class Stats:
    """What one run observed (all times CLOCK_MONOTONIC seconds)."""

    t0: float
    sent: int = 0
    skipped: int = 0
    late_max: float = 0.0
    late_over_half: int = 0  # probes sent more than interval/2 after their slot
    lates: list[float] = field(default_factory=list)
    late_events: list[tuple[float, float]] = field(default_factory=list)  # (due, lateness) over one interval
    replies: list[tuple[int, float]] = field(default_factory=list)  # (seq, t)
    seen: set[int] = field(default_factory=set)
    duplicates: int = 0
    ts_fallbacks: int = 0


class Probe:
    """Builds probes and recognises their replies for one target and protocol."""

    def __init__(self, target: str, udp_port: int | None) -> None:
        info = socket.getaddrinfo(target, udp_port or 0, proto=socket.IPPROTO_UDP)[0]
        self.family = info[0]
        self.addr = info[4]
        self.udp = udp_port is not None
        self.ident = os.getpid() & 0xFFFF
        if self.udp:
            self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
            self.sock.connect(self.addr)
        elif self.family == socket.AF_INET:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        else:
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            # Only echo replies: ICMPv6 filter (struct icmp6_filter, 8 x u32, bit set = block).
            blocked = [0xFFFFFFFF] * 8
            blocked[ICMP6_ECHOREPLY >> 5] &= ~(1 << (ICMP6_ECHOREPLY & 31))
            self.sock.setsockopt(socket.IPPROTO_ICMPV6, 1, struct.pack("8I", *blocked))  # ICMP6_FILTER
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setblocking(False)

    def packet(self, seq: int) -> bytes:
        payload = MAGIC + struct.pack("!IH", seq, self.ident)
        if self.udp:
            return payload
        kind = ICMP_ECHO if self.family == socket.AF_INET else ICMP6_ECHO
        header = struct.pack("!BBHHH", kind, 0, 0, self.ident, seq & 0xFFFF)
        if self.family == socket.AF_INET6:  # the kernel fills in the ICMPv6 checksum
            return header + payload
        csum = _checksum(header + payload)
        return struct.pack("!BBHHH", kind, 0, csum, self.ident, seq & 0xFFFF) + payload

    def send(self, seq: int) -> None:
        data = self.packet(seq)
        try:
            if self.udp:
                self.sock.send(data)
            else:
                self.sock.sendto(data, self.addr)
        except OSError:
            pass  # no route / ARP failure while the address moves: the probe is lost, as on the wire

    def parse(self, data: bytes) -> int | None:
        """The sequence number of our reply in ``data``, or None."""
        if self.udp:
            body = data
        elif self.family == socket.AF_INET:
            if len(data) < 20:
                return None
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            if len(icmp) < 8 or icmp[0] != ICMP_ECHOREPLY:
                return None
            if struct.unpack("!H", icmp[4:6])[0] != self.ident:
                return None
            body = icmp[8:]
        else:
            if len(data) < 8 or data[0] != ICMP6_ECHOREPLY or struct.unpack("!H", data[4:6])[0] != self.ident:
                return None
            body = data[8:]
        if len(body) < 14 or body[:8] != MAGIC:
            return None
        seq, ident = struct.unpack("!IH", body[8:14])
        return seq if ident == self.ident else None


def _reply_time(ancdata: list[tuple[int, int, bytes]], stats: Stats) -> float:
    now_mono = time.monotonic()
    for level, kind, blob in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(blob) >= 16:
            sec, nsec = struct.unpack("qq", blob[:16])
            t: float = sec + nsec * 1e-9 - (time.time() - now_mono)
            if abs(t - now_mono) < 0.05:
                return t
    stats.ts_fallbacks += 1
    return now_mono


def _status(stats: Stats) -> dict[str, Any]:
    last = stats.replies[-1][1] if stats.replies else None
    return {"now": time.monotonic(), "sent": stats.sent, "received": len(stats.replies), "last_reply": last}


def run(args: argparse.Namespace) -> dict[str, Any]:
    interval: float = args.interval
    duration = min(args.duration, MAX_DURATION)
    count = min(args.count, MAX_COUNT)
    probe = Probe(args.target, args.udp)
    if args.rt:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.rt))
        except (OSError, AttributeError) as exc:
            print(f"prober: no real-time priority: {exc}", file=sys.stderr)
    gc.disable()  # no collector pauses in the send loop; the loop allocates little
    ctl = sys.stdin if args.control else None
    t0 = time.monotonic() + 0.001
    stats = Stats(t0=t0)
    end = t0 + duration
    k = 0
    stop = False
    recv = probe.sock.recvmsg
    half = interval / 2
    while not stop:
        now = time.monotonic()
        if now >= end:
            break
        due = t0 + k * interval
        if now >= due:
            if k >= count:
                break
            probe.send(k)
            late = now - due
            stats.sent += 1
            if late > stats.late_max:
                stats.late_max = late
            if late > half:
                stats.late_over_half += 1
            if late > interval and len(stats.late_events) < MAX_LATE_EVENTS:
                stats.late_events.append((due, late))
            stats.lates.append(late)
            k += 1
            behind = int((now - (t0 + k * interval)) / interval)
            if behind > 0:  # more than a whole slot late: skip, never burst
                stats.skipped += behind
                k += behind
            continue
        fds = [probe.sock] if ctl is None else [probe.sock, ctl]
        readable, _, _ = select.select(fds, [], [], min(due, end) - now)
        if probe.sock in readable:
            while True:
                try:
                    data, anc, _flags, _addr = recv(2048, 256)
                except BlockingIOError:
                    break
                seq = probe.parse(data)
                if seq is None:
                    continue
                t = _reply_time(anc, stats)
                if seq in stats.seen:
                    stats.duplicates += 1
                    continue
                stats.seen.add(seq)
                stats.replies.append((seq, t))
        if ctl is not None and ctl in readable:
            line = ctl.readline()
            cmd = line.strip()
            if not line or cmd == "stop":
                stop = True
            elif cmd == "status":
                print(json.dumps(_status(stats)), flush=True)
    return report(args, stats, time.monotonic())


def longest_gap(times: list[float], start: float | None = None, end: float | None = None) -> dict[str, float] | None:
    """The longest interval between consecutive reply times (optionally bounded by start/end)."""
    pts = sorted(times)
    if start is not None:
        pts = [start] + [t for t in pts if t > start]
    if end is not None:
        pts = [t for t in pts if t < end] + [end]
    best: dict[str, float] | None = None
    for a, b in zip(pts, pts[1:]):
        if best is None or b - a > best["gap"]:
            best = {"gap": b - a, "from": a, "to": b}
    return best


def report(args: argparse.Namespace, stats: Stats, t_end: float) -> dict[str, Any]:
    times = sorted(t for _, t in stats.replies)
    lates = sorted(stats.lates)
    p99 = lates[min(len(lates) - 1, int(len(lates) * 0.99))] if lates else 0.0
    out: dict[str, Any] = {
        "tool": "prober.py",
        "target": args.target,
        "proto": f"udp/{args.udp}" if args.udp else "icmp",
        "interval": args.interval,
        "t_start": stats.t0,
        "t_end": t_end,
        "sent": stats.sent,
        "received": len(stats.replies),
        "lost": stats.sent - len(stats.replies),
        "duplicates": stats.duplicates,
        "skipped_slots": stats.skipped,
        "send_late_max": stats.late_max,
        "send_late_p99": p99,
        "send_late_over_half_interval": stats.late_over_half,
        "ts_fallbacks": stats.ts_fallbacks,
        "late_events": [[round(d, 7), round(late, 7)] for d, late in stats.late_events],
        "max_gap": longest_gap(times),
        "first_reply_after": {str(a): next((t for t in times if t > a), None) for a in args.after},
    }
    if args.raw:
        out["replies"] = [[seq, round(t, 7)] for seq, t in stats.replies]
    return out


def echo_server(args: argparse.Namespace) -> None:
    """UDP echo responder for ``--udp`` probing; bounded by ``--duration``."""
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    end = time.monotonic() + min(args.duration, MAX_DURATION)
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            data, addr = sock.recvfrom(2048)
            if data.startswith(MAGIC):
                sock.sendto(data, addr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode")
    e = sub.add_parser("echo", help="UDP echo responder (for --udp)")
    e.add_argument("--port", type=int, default=7)
    e.add_argument("--bind", default="0.0.0.0")
    e.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--target", help="address to probe")
    p.add_argument("--interval", type=float, default=0.001, help="seconds between probes (default 0.001)")
    p.add_argument("--duration", type=float, default=10.0, help=f"seconds to run (at most {MAX_DURATION:g})")
    p.add_argument("--count", type=int, default=MAX_COUNT, help="at most this many probes")
    p.add_argument("--udp", type=int, metavar="PORT", help="UDP probes to PORT instead of ICMP echo")
    p.add_argument("--after", type=float, action="append", default=[], metavar="T",
                   help="report the first reply after monotonic instant T (repeatable)")
    p.add_argument("--raw", action="store_true", help="include every reply's sequence number and time")
    p.add_argument("--control", action="store_true", help="read status/stop commands on stdin")
    p.add_argument("--rt", type=int, default=0, metavar="PRIO", help="SCHED_FIFO priority (0: normal scheduling)")
    args = p.parse_args(argv)
    if args.mode is None:
        if not args.target:
            p.error("--target is required")
        if not 0.0001 <= args.interval <= 10:
            p.error("--interval must be between 0.0001 and 10 s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "echo":
        echo_server(args)
        return 0
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
