#!/usr/bin/env python3
"""The switch agent: runs in the lab's switch namespace for the whole run.

It does two things, both timestamped in CLOCK_MONOTONIC (``time.monotonic()``):

* **Trigger.** ``down IF`` / ``up IF`` set a switch port administratively down
  or up with the SIOCSIFFLAGS ioctl -- the same operation as
  ``Lab.fail_nic`` / ``Lab.restore_nic`` (``ip link set gwN down|up``), done
  in-process so that the instant of the trigger is known to a few
  microseconds instead of the 2-3 ms an ``ip`` process takes to start. Taking
  the peer of a veth down drops the carrier of the gateway's NIC.
* **Capture.** An AF_PACKET socket with a BPF filter for ARP and ICMPv6
  neighbour advertisements only (``--ifname``, default the client's port
  ``cl0``: what leaves the switch towards the client) records every
  announcement -- a gratuitous ARP (sender IP == target IP, request or reply)
  or an unsolicited neighbour advertisement (solicited flag clear, override
  flag set; the IPv6 counterpart) -- with the kernel's receive timestamp (SO_TIMESTAMPNS, converted from CLOCK_REALTIME
  at the moment of reading). For each (IP, sender MAC) the first sighting
  since the last ``arm`` is kept.

Commands, one per line on stdin; each gets one JSON line on stdout:

``arm``                  forget the announcements seen so far    -> {"t": now}
``down IF`` / ``up IF``  trigger                                 -> {"t0": .., "t1": ..}
``count [MAC]``          distinct IPs announced since arm (by MAC) -> {"n": ..}
``first IP [MAC]``       first announcement of IP since arm      -> {"t": .. or null, "mac": ..}
``garps [MAC]``          every first announcement since arm      -> {"garps": {ip: [t, mac]}}
``lwdown PEER GWIF DELAY IF``  scenario (h), needs ``--gw-netns``: flip PEER (a switch-side veth
                         on no bridge) up or down, wait until its gateway end GWIF shows the change
                         in IFF_RUNNING (set by the kernel's linkwatch run, not by the flip itself),
                         then DELAY s later ``down IF``  -> {"t_pre", "t_lw", "t0", "t1", "lw_ok"}
``quit``                 exit

``--gw-netns NAME`` opens one AF_INET socket in the gateway namespace (setns there and back, at
start) so that GWIF's flags can be read without starting a process or leaving the switch.

The agent sends nothing on the wire. It exits on ``quit``, at end of input,
or after ``--duration`` seconds (at most 4 hours). Only standard library.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import select
import socket
import struct
import sys
import time
from typing import Any

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
# Classic BPF, (code, jt, jf, k) with jumps relative to the next instruction:
#   ldh [12]; jeq ARP -> accept; jeq IPv6 ?: drop; ldb [20] (next header); jeq ICMPv6 ?: drop;
#   ldb [54] (ICMPv6 type); jeq NA ?: drop; accept; drop.
# Neighbour advertisements carry no extension headers, so the fixed offsets hold. The socket is
# ETH_P_ALL because a protocol-specific packet socket sees only incoming frames, and on the
# client's port the announcements are outgoing.
ANNOUNCE_BPF = [
    (0x28, 0, 0, 12),
    (0x15, 6, 0, ETH_P_ARP),
    (0x15, 0, 6, ETH_P_IPV6),
    (0x30, 0, 0, 20),
    (0x15, 0, 4, IPPROTO_ICMPV6),
    (0x30, 0, 0, 54),
    (0x15, 0, 2, ND_NEIGHBOR_ADVERT),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
]
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_RUNNING = 0x40
CLONE_NEWNET = 0x40000000
LW_WAIT_S = 3.0  # linkwatch delays a non-urgent change by at most ~1 s
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
MAX_DURATION = 4 * 3600.0


def set_admin(ctl: socket.socket, ifname: str, up: bool) -> tuple[float, float]:
    """Set ``ifname`` up or down; returns monotonic (before, after) the ioctl."""
    name = ifname.encode()[:15]
    req = struct.pack("16sh22x", name, 0)
    flags = struct.unpack("16sh22x", fcntl.ioctl(ctl, SIOCGIFFLAGS, req))[1]
    flags = (flags | IFF_UP) if up else (flags & ~IFF_UP)
    new = struct.pack("16sh22x", name, flags)
    t0 = time.monotonic()
    fcntl.ioctl(ctl, SIOCSIFFLAGS, new)
    t1 = time.monotonic()
    return t0, t1


def get_flags(ctl: socket.socket, ifname: str) -> int:
    req = struct.pack("16sh22x", ifname.encode()[:15], 0)
    return int(struct.unpack("16sh22x", fcntl.ioctl(ctl, SIOCGIFFLAGS, req))[1])


def socket_in_netns(name: str) -> socket.socket:
    """An AF_INET datagram socket of network namespace ``name`` (/run/netns/NAME); this thread
    enters it for the socket() call only and returns to its own namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    other = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(other, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(other)


def parse_announcement(frame: bytes) -> tuple[str, str] | None:
    """(announced IP, announcing MAC) of a gratuitous ARP or an unsolicited NA, else None."""
    if frame[12:14] == b"\x86\xdd":
        return parse_unsolicited_na(frame)
    return parse_garp(frame)


def parse_unsolicited_na(frame: bytes) -> tuple[str, str] | None:
    """(target, MAC) of an unsolicited neighbour advertisement: ICMPv6 type 136, hop limit 255,
    solicited flag clear, override flag set. The MAC is the target link-layer address option's,
    else the frame's source."""
    if len(frame) < 78 or frame[12:14] != b"\x86\xdd" or frame[20] != IPPROTO_ICMPV6 or frame[21] != 255:
        return None
    icmp = frame[54:]
    if icmp[0] != ND_NEIGHBOR_ADVERT or icmp[1] != 0:
        return None
    flags = icmp[4]
    if flags & 0x40 or not flags & 0x20:  # S set (an answer to a solicitation) or O clear
        return None
    mac = frame[6:12]
    opts = icmp[24:]
    while len(opts) >= 8 and opts[1]:
        if opts[0] == 2 and len(opts) >= 8:  # target link-layer address
            mac = opts[2:8]
            break
        opts = opts[opts[1] * 8:]
    return socket.inet_ntop(socket.AF_INET6, icmp[8:24]), ":".join(f"{b:02x}" for b in mac)


def parse_garp(frame: bytes) -> tuple[str, str] | None:
    """(sender IP, sender MAC) of a gratuitous ARP frame, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    arp = frame[14:42]
    htype, ptype, hlen, plen, _op = struct.unpack("!HHBBH", arp[:8])
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        return None
    sha, spa, tpa = arp[8:14], arp[14:18], arp[24:28]
    if spa != tpa or spa == b"\0\0\0\0":
        return None
    return socket.inet_ntoa(spa), ":".join(f"{b:02x}" for b in sha)


class Agent:
    def __init__(self, ifname: str, gw_netns: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._bpf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in ANNOUNCE_BPF))
        prog = struct.pack("HL", len(ANNOUNCE_BPF), ctypes.addressof(self._bpf))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:  # SO_RCVBUFFORCE: past net.core.rmem_max, so a burst of 10,000 announcements fits
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.setblocking(False)
        self.ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.gwctl = socket_in_netns(gw_netns) if gw_netns else None
        self.first: dict[tuple[str, str], float] = {}
        self.frames = 0

    def drain(self) -> None:
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(256, 64)
            except BlockingIOError:
                return
            now = time.monotonic()
            t = now
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(blob) >= 16:
                    sec, nsec = struct.unpack("qq", blob[:16])
                    tk = sec + nsec * 1e-9 - (time.time() - now)
                    if abs(tk - now) < 1.0:
                        t = tk
            self.frames += 1
            garp = parse_announcement(data)
            if garp is not None and (garp not in self.first or t < self.first[garp]):
                self.first[garp] = t

    def command(self, line: str) -> dict[str, Any] | None:
        parts = line.split()
        if not parts:
            return {"error": "empty command"}
        cmd, args = parts[0], parts[1:]
        self.drain()
        if cmd == "quit":
            return None
        if cmd == "arm":
            self.first.clear()
            return {"t": time.monotonic()}
        if cmd in ("down", "up") and len(args) == 1:
            t0, t1 = set_admin(self.ctl, args[0], cmd == "up")
            return {"t0": t0, "t1": t1}
        if cmd == "lwdown" and len(args) == 4 and self.gwctl is not None:
            return self.lwdown(args[0], args[1], float(args[2]), args[3])
        mac = None
        if cmd == "count":
            mac = args[0].lower() if args else None
            return {"n": len({ip for ip, m in self.first if mac is None or m == mac})}
        if cmd == "first" and args:
            ip = args[0]
            mac = args[1].lower() if len(args) > 1 else None
            hits = [(t, m) for (i, m), t in self.first.items() if i == ip and (mac is None or m == mac)]
            t, m = min(hits) if hits else (None, None)
            return {"t": t, "mac": m}
        if cmd == "garps":
            mac = args[0].lower() if args else None
            best: dict[str, list[Any]] = {}
            for (ip, m), t in self.first.items():
                if (mac is None or m == mac) and (ip not in best or t < best[ip][0]):
                    best[ip] = [t, m]
            return {"garps": best, "frames": self.frames}
        return {"error": f"unknown command {line.strip()!r}"}


    def lwdown(self, peer: str, gwif: str, delay: float, port: str) -> dict[str, Any]:
        """Scenario (h): a link event in the gateway, then ``delay`` s after the kernel delivered it,
        carrier loss of ``port``'s gateway NIC. Polls every 0.2 ms (bounded: LW_WAIT_S)."""
        assert self.gwctl is not None
        up = not get_flags(self.ctl, peer) & IFF_UP  # toggle: the previous trial left it either way
        t_pre, _ = set_admin(self.ctl, peer, up)
        lw_ok = False
        while time.monotonic() - t_pre < LW_WAIT_S:
            if bool(get_flags(self.gwctl, gwif) & IFF_RUNNING) == up:
                lw_ok = True
                break
            time.sleep(0.0002)
        t_lw = time.monotonic()
        while (left := t_lw + delay - time.monotonic()) > 0:
            time.sleep(left if left > 0.002 else 0.0001)
        t0, t1 = set_admin(self.ctl, port, False)
        return {"t_pre": t_pre, "t_lw": t_lw, "t0": t0, "t1": t1, "lw_ok": lw_ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="switch agent: trigger + announcement capture (gratuitous ARP, unsolicited NA)")
    p.add_argument("--ifname", default="cl0", help="switch port to capture on (default cl0)")
    p.add_argument("--duration", type=float, default=3600.0, help="exit after this many seconds")
    p.add_argument("--rt", type=int, default=0, metavar="PRIO", help="SCHED_FIFO priority (0: normal)")
    p.add_argument("--gw-netns", default=None, metavar="NAME", help="gateway namespace, for lwdown")
    args = p.parse_args(argv)
    if args.rt:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.rt))
        except OSError as exc:
            print(f"swagent: no real-time priority: {exc}", file=sys.stderr)
    agent = Agent(args.ifname, args.gw_netns)
    end = time.monotonic() + min(args.duration, MAX_DURATION)
    stdin = sys.stdin.fileno()
    buf = b""
    print(json.dumps({"ready": True, "t": time.monotonic()}), flush=True)
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([agent.sock, stdin], [], [], min(left, 1.0))
        if agent.sock in readable:
            agent.drain()
        if stdin in readable:
            chunk = os.read(stdin, 65536)
            if not chunk:
                return 0
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                reply = agent.command(raw.decode())
                if reply is None:
                    return 0
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
