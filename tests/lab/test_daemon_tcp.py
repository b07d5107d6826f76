"""`ipshift run` in a lab: a TCP stream to the gateway survives a failover byte for byte."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from failover_kit import Capture, base_config, holders, kernel_detail, on, wait_until
from labtools import DaemonHandle

from ipshift.lab import Lab

PORT = 5201
TOTAL = 4 * 1024 * 1024  # bytes the client streams
DURATION = 3.0  # seconds the client paces them over
DEADLINE = 20.0  # every socket operation and both processes are bounded by this

# The byte at offset i of the stream is i % 251 (a prime, so no chunk boundary lines up with it).
_PATTERN = "PERIOD = 251\nBLOCK = bytes(i % PERIOD for i in range(PERIOD)) * 600\n"

SERVER = _PATTERN + r"""
import json, socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + deadline
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(1)
srv.settimeout(deadline)
print("listening", flush=True)
res = {"received": 0, "bad_offset": None, "error": None, "eof": False}
try:
    conn, _ = srv.accept()
    conn.settimeout(deadline)
    got = 0
    while time.monotonic() < end:
        chunk = conn.recv(65536)
        if not chunk:
            res["eof"] = True
            break
        o = got % PERIOD
        if chunk != BLOCK[o:o + len(chunk)]:
            want = BLOCK[o:o + len(chunk)]
            res["bad_offset"] = got + next(i for i in range(len(chunk)) if chunk[i] != want[i])
            break
        got += len(chunk)
    res["received"] = got
    if res["eof"] and res["bad_offset"] is None:
        conn.sendall(b"OK %d\n" % got)
    conn.close()
except OSError as exc:
    res["error"] = repr(exc)
print(json.dumps(res), flush=True)
"""

CLIENT = _PATTERN + r"""
import json, socket, sys, time
host, port, total, duration, deadline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
res = {"sent": 0, "reply": "", "error": None}
try:
    s = socket.create_connection((host, port), timeout=deadline)
    print("connected", flush=True)
    chunk = 32768
    n = total // chunk
    start = time.monotonic()
    for i in range(n):
        wait = start + i * duration / n - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        o = res["sent"] % PERIOD
        s.sendall(BLOCK[o:o + chunk])
        res["sent"] += chunk
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while not reply.endswith(b"\n"):
        part = s.recv(100)
        if not part:
            break
        reply += part
    res["reply"] = reply.decode(errors="replace").strip()
    s.close()
except OSError as exc:
    res["error"] = repr(exc)
print(json.dumps(res), flush=True)
"""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def _result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no result (exit {proc.returncode}): {out!r} {err!r}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_tcp_stream_survives_failover(make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle],
                                      tmp_path: Path) -> None:
    lab = make_lab()
    d = make_daemon(lab, base_config(failback={"mode": "manual", "delay": "300ms"}, route=False))
    detail = kernel_detail(lab, d)
    # every TCP reset on the wire, seen from the client's switch port
    rst = Capture(lab, lab.client_peer, tmp_path / "rst.pcap", "tcp[tcpflags] & tcp-rst != 0")

    server = lab.popen(lab.gateway, "timeout", str(DEADLINE + 5), sys.executable, "-c", SERVER,
                       "192.0.2.10", str(PORT), str(DEADLINE),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _read_line(server, 5.0) == "listening", server.poll()
    client = lab.popen(lab.client, "timeout", str(DEADLINE + 5), sys.executable, "-c", CLIENT,
                       "192.0.2.10", str(PORT), str(TOTAL), str(DURATION), str(DEADLINE),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _read_line(client, 5.0) == "connected", client.poll()

    time.sleep(DURATION / 3)  # mid-stream
    assert client.poll() is None and server.poll() is None, "the stream ended before the failure"
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=2.0, what="192.0.2.10 on eth1")
    wait_until(lambda: holders(lab, "192.0.2.10/24") == ["eth1"], 2.0, "192.0.2.10 on eth1", detail)
    assert client.poll() is None, "the client finished before the failover: not mid-stream"

    # both processes end by themselves
    c = _result(client, DEADLINE + 10)
    s = _result(server, DEADLINE + 10)
    assert c["error"] is None, c  # no ECONNRESET, no timeout
    assert s["error"] is None, s
    assert c["sent"] == TOTAL, c
    assert s["bad_offset"] is None and s["eof"], s
    assert s["received"] == TOTAL, s  # every byte, in order
    assert c["reply"] == f"OK {TOTAL}", c
    assert client.returncode == 0 and server.returncode == 0
    resets = rst.frames()
    assert resets == [], [f.summary() for f in resets]
    assert holders(lab, "192.0.2.10/24") == ["eth1"]  # manual failback: it did not move back mid-test
