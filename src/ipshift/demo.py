"""`ipshift demo`: a failover and a failback on a namespace lab, as a client sees them.

Builds the lab (switch, gateway with eth0/eth1, client; namespaces with a
unique prefix, deleted at the end whatever happens, Ctrl-C included), starts
``ipshift run`` in the gateway, starts a fixed-schedule prober in the client
(one ICMP echo to the gateway's address every millisecond, never slowing
down while replies are missing), fails eth0 by taking its switch port down,
and prints where each address went, each step's duration and the outage the
client saw; then brings eth0 back and shows the failback the same way.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from ipshift.lab import Lab, unique_prefix

ADDRESS = "192.0.2.10"
CONFIG: dict[str, Any] = {
    "interfaces": {
        "eth0": {"addresses": [f"{ADDRESS}/24"], "routes": [{"to": "198.51.100.0/24", "via": "192.0.2.1"}]},
        "eth1": {"addresses": ["192.0.2.11/24"]},
    },
    "announce": {"count": 3, "interval": "100ms"},
    "failback": {"mode": "auto", "delay": "1s"},
    "conflict_check": {"enabled": True, "timeout": "20ms"},
}


def _request(sock: str, req: dict[str, Any]) -> dict[str, Any]:
    from ipshift.control import request

    return request(sock, req, timeout=5)


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def _gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """Longest gap between replies (and the window's edges) in [start, end], and where it began."""
    pts = [start] + [t for t in times if start < t < end] + [end]
    best, at = 0.0, start
    for a, b in zip(pts, pts[1:]):
        if b - a > best:
            best, at = b - a, a
    return best, at


def _print_record(rec: dict[str, Any]) -> None:
    from ipshift.report import record_text

    for line in record_text(rec).splitlines():
        print("  " + line)


def run_demo() -> int:
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    lab = Lab(unique_prefix("ipsdemo"), nics=2)
    work = Path(tempfile.mkdtemp(prefix="ipshift-demo-"))
    daemon: subprocess.Popen[bytes] | None = None
    prober: subprocess.Popen[str] | None = None
    try:
        print(f"building the lab: namespaces {', '.join(lab.namespaces)}")
        lab.create()
        cfg = dict(CONFIG, state_dir=str(work / "state"))
        (work / "ipshift.yaml").write_text(yaml.safe_dump(cfg))
        sock = str(work / "ipshift.sock")
        log = open(work / "ipshift.log", "wb")
        daemon = subprocess.Popen([sys.executable, "-m", "ipshift.cli", "run", "-c", str(work / "ipshift.yaml"),
                                   "--netns", lab.gateway, "--socket", sock], stdout=log, stderr=log)
        log.close()
        _wait(lambda: _request(sock, {"cmd": "status"})["ok"], 10, "the daemon")
        print(f"ipshift run is up in {lab.gateway} (log: {work / 'ipshift.log'})")
        print(f"  eth0 {ADDRESS}/24 (MAC {lab.mac_of('eth0')}), eth1 192.0.2.11/24 (MAC {lab.mac_of('eth1')}); "
              "arp_ignore=1, arp_announce=2; conflict probe 20 ms; failback after 1 s")

        duration = 6.0
        prober = subprocess.Popen(
            ["ip", "netns", "exec", lab.client, sys.executable, "-m", "ipshift.prober", "--target", ADDRESS,
             "--interval", "0.001", "--duration", str(duration), "--raw"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        print(f"\nthe client pings {ADDRESS} every 1 ms; failing eth0 (its switch port goes down)")
        t_fail = time.monotonic()
        lab.fail_nic("eth0")
        _wait(lambda: _request(sock, {"cmd": "status"})["status"]["addresses"][f"{ADDRESS}/24"]["on"] == ["eth1"],
              5, "the failover")
        time.sleep(1.5)
        print("bringing eth0 back")
        t_back = time.monotonic()
        lab.restore_nic("eth0")
        _wait(lambda: _request(sock, {"cmd": "status"})["status"]["addresses"][f"{ADDRESS}/24"]["on"] == ["eth0"],
              5, "the failback")
        out, err = prober.communicate(timeout=duration + 10)
        result = json.loads(out)
        times = [t for _, t in result.get("replies", [])]
        status = _request(sock, {"cmd": "status"})["status"]

        print("\nwhat ipshift did:")
        for rec in status["failovers"]:
            if rec["trigger"] == "placement":
                continue
            _print_record(rec)
        gap_fail, _ = _gap(times, t_fail, t_back)
        gap_back, _ = _gap(times, t_back, t_back + 2.0) if t_back + 2.0 < result["t_end"] else (0.0, 0.0)
        print("\nwhat the client saw (longest gap between echo replies, 1 ms probes):")
        print(f"  failover: {gap_fail * 1000:.1f} ms    failback: {gap_back * 1000:.1f} ms    "
              f"({result['received']} of {result['sent']} probes answered)")
        print("\nwhere the addresses are now:")
        for addr, a in status["addresses"].items():
            print(f"  {addr:<18} on {', '.join(a['on'])} (home {a['home']})")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        for proc in (prober, daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        lab.destroy()
        signal.signal(signal.SIGTERM, old)
        print(f"lab deleted ({', '.join(lab.namespaces)})")
