"""Failover cost, scale and memory of ``ipshift run`` in a namespace lab (a profile, not a test).

    .venv/bin/python tools/lab_profile.py elsewhere [--n 2000] [--trials 5]
        4 NICs: eth0 carries the service address 192.0.2.50/24, eth2 N addresses of 198.18.0.0/16
        (backups [eth3]); eth0 loses carrier; prints each failover record's total_ms and the
        first step's at_ms
    .venv/bin/python tools/lab_profile.py small [--trials 5]      the same with 2 NICs and nothing else
    .venv/bin/python tools/lab_profile.py scale --n 1000 [--trials 3]
        N addresses of 198.18.0.0/16 on eth0 plus one static route per 10 addresses (as bench (e));
        the time until the last address is announced (the record's last first_announce_ms) and total_ms
    .venv/bin/python tools/lab_profile.py memory --n 10000
        idle RSS, then RSS after one failover and one failback (scale layout, failback manual: the
        failback is an operator's ``ipshift failback``)

Extra environment for the daemon: --env K=V (e.g. PYTHONPATH=DIR with a sitecustomize.py that traces
allocations and dumps the top items on SIGUSR2 when IPSHIFT_TM_DUMP=PATH is set: memory mode sends
SIGUSR2 at each point it reports).
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "lab"))

from labtools import DaemonHandle  # noqa: E402

from ipshift.lab import Lab  # noqa: E402
from ipshift.labnames import unique_prefix  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scale_layout(n: int) -> tuple[dict[str, list[str]], list[str], dict[str, Any]]:
    base = int(ipaddress.IPv4Address("198.18.0.1"))
    addrs = [f"{ipaddress.IPv4Address(base + i)}/16" for i in range(n)]
    routes = [f"{ipaddress.IPv4Address(int(ipaddress.IPv4Address('198.19.0.1')) + i)}/32"
              for i in range(max(1, n // 10))]
    gw = {"eth0": ["192.0.2.10/24", *reversed(addrs)], "eth1": ["192.0.2.11/24", "198.18.255.254/16"]}
    cfg = {"interfaces": {"eth0": {"addresses": ["192.0.2.10/24", *addrs], "backups": ["eth1"],
                                   "routes": [{"to": r, "via": "192.0.2.1"} for r in routes]},
                          "eth1": {"addresses": ["192.0.2.11/24", "198.18.255.254/16"]}}}
    return gw, [f"route add {r} via 192.0.2.1 dev eth0" for r in routes], cfg


def common(cfg: dict[str, Any], failback: str = "auto") -> dict[str, Any]:
    return {**cfg, "detect": {"link": True}, "announce": {"count": 3, "interval": "200ms"},
            "failback": {"mode": failback, "delay": "0s", "flap_count": 1000, "flap_window": "1s"},
            "conflict_check": {"enabled": False}}


def dump_memory(d: DaemonHandle, env: dict[str, str]) -> None:
    """With IPSHIFT_TM_DUMP in the daemon's environment (a sitecustomize hook outside the repo on its
    PYTHONPATH traces allocations), ask for a dump of the top items (SIGUSR2)."""
    if env.get("IPSHIFT_TM_DUMP") and d.proc is not None:
        d.proc.send_signal(signal.SIGUSR2)
        time.sleep(3)
        print(f"  (RSS after the signal {rss_mib(d.proc.pid):.1f} MiB)")


def last_record(d: DaemonHandle) -> dict[str, Any] | None:
    try:
        answer = d.ask({"cmd": "status", "records": 1}, timeout=60.0)
    except (OSError, ValueError):
        return None
    recs: list[dict[str, Any]] = answer["status"].get("failovers", [])
    return recs[-1] if recs else None


def wait_record(d: DaemonHandle, after: int, timeout: float) -> dict[str, Any]:
    """The newest record with an id above ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = last_record(d)
        if rec is not None and rec["id"] > after:
            return rec
        time.sleep(0.05)
    raise SystemExit(f"no record after {after} within {timeout} s\n{d.log()[-3000:]}")


def phases(rec: dict[str, Any]) -> str:
    """Per step kind: when the first began and the last ended (ms from t0), and the time in it."""
    by: dict[str, list[float]] = {}
    for s in [st for m in rec["moves"] for st in m["steps"]] + rec.get("nic_steps", []):
        b = by.setdefault(s["op"], [1e18, 0.0, 0.0])
        b[0] = min(b[0], s["at_ms"])
        b[1] = max(b[1], s["at_ms"] + s["ms"])
    return "; ".join(f"{op} {a:.1f}-{b:.1f}" for op, (a, b, _) in sorted(by.items(), key=lambda kv: kv[1][0]))


def summary(rec: dict[str, Any]) -> str:
    steps = [s for m in rec["moves"] for s in m["steps"]] + rec.get("nic_steps", [])
    first = min((s["at_ms"] for s in steps), default=float("nan"))
    ann = [m["first_announce_ms"] for m in rec["moves"] if m.get("first_announce_ms") is not None]
    return (f"{rec['kind']} of {rec['nic']}: moves {len(rec['moves'])}, total_ms {rec['total_ms']:.2f}, "
            f"first step at_ms {first:.2f}, last announce {max(ann, default=float('nan')):.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["elsewhere", "small", "scale", "memory"])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--env", action="append", default=[])
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    routes: list[str] = []
    if args.what in ("elsewhere", "small"):
        nics = 4 if args.what == "elsewhere" else 2
        net = ipaddress.ip_network("198.18.0.0/16")
        many = [f"{net[i + 10]}/16" for i in range(args.n)] if nics == 4 else []
        gw: dict[str, list[str]] = {"eth0": ["192.0.2.10/24", "192.0.2.50/24"], "eth1": ["192.0.2.11/24"]}
        ifaces: dict[str, Any] = {"eth0": {"addresses": ["192.0.2.50/24"], "backups": ["eth1"]},
                                  "eth1": {"addresses": ["192.0.2.11/24"], "backups": ["eth0"]}}
        if nics == 4:
            gw |= {"eth2": ["198.18.0.2/16", *many], "eth3": ["198.18.0.3/16"]}
            ifaces |= {"eth2": {"addresses": ["198.18.0.2/16", *many], "backups": ["eth3"]},
                       "eth3": {"addresses": ["198.18.0.3/16"], "backups": ["eth2"]}}
        cfg = common({"interfaces": ifaces})
    else:
        nics = 2
        gw, routes, base = scale_layout(args.n)
        cfg = common(base, failback="manual")
    with tempfile.TemporaryDirectory() as tmp, \
            Lab(unique_prefix("ipsp"), nics=nics, gw_addrs=gw, promote_secondaries=True,
                gw_sysctls={"net.ipv4.conf.all.ignore_routes_with_linkdown": "1"}) as lab:
        pass
        if routes:
            lab._batch(lab.gateway, routes)
        d = DaemonHandle(lab, cfg, Path(tmp), env)
        d.start(timeout=120)
        time.sleep(1.0 if args.n < 5000 else 5.0)
        print(f"idle RSS {rss_mib(d.proc.pid):.1f} MiB" if d.proc else "")
        dump_memory(d, env)
        totals: list[float] = []
        anns: list[float] = []
        first = last_record(d)
        count = first["id"] if first else 0
        trials = 1 if args.what == "memory" else args.trials
        try:
            for t in range(trials):
                lab.fail_nic("eth0")
                rec = wait_record(d, count, 120)
                count = rec["id"]
                print(summary(rec))
                if args.what == "scale":
                    print("   ", phases(rec))
                totals.append(rec["total_ms"])
                anns.append(max((m["first_announce_ms"] or 0) for m in rec["moves"]) if rec["moves"] else 0)
                if args.what == "memory":
                    time.sleep(2)
                    print(f"RSS after failover {rss_mib(d.proc.pid):.1f} MiB" if d.proc else "")
                    dump_memory(d, env)
                time.sleep(0.3)
                lab.restore_nic("eth0")
                if args.what in ("scale", "memory"):
                    time.sleep(0.5)
                    r = d.cli("failback", "eth0")
                    if r.returncode != 0:
                        print("failback:", r.stdout[-500:], r.stderr[-500:])
                rec = wait_record(d, count, 120)
                count = rec["id"]
                print(" ", summary(rec))
                if args.what == "memory":
                    time.sleep(3)
                    print(f"RSS after failback {rss_mib(d.proc.pid):.1f} MiB" if d.proc else "")
                    dump_memory(d, env)
                time.sleep(0.5)
            if totals:
                print(f"median total_ms {statistics.median(totals):.2f}; "
                      f"median last announce {statistics.median(anns):.2f} ms")
        finally:
            d.stop()
            log = d.log()
            Path("/tmp/lab_profile.log").write_text(log)


if __name__ == "__main__":
    main()
