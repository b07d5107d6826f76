#!/usr/bin/env python3
"""ipshift benchmark: every scenario x every contender, in throwaway namespace labs.

    .venv/bin/python bench/run.py [--quick] [--only a,b,d,e] [--contenders shell,ipaddr2]

Scenarios (see bench/README.md): (a) carrier loss -> client traffic restored,
(b) carrier loss -> first gratuitous ARP on the switch, (c) path loss with
carrier up, (d) failback, (e) scale with the kernel floor, (f) idle cost,
(g) IPv6 carrier loss (the service address is 2001:db8::50/64).
(a), (b) and (d) come from the same trials: fail, measure, restore, measure;
(g) runs the same trials with the IPv6 address and reports beside (a) and (b).

Writes bench/results/<date>.json and PNG plots beside it, and prints a
Markdown table. Needs root. Every lab is deleted at the end, also on error,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import scenarios  # noqa: E402
from benchlab import BenchLab, sysctls_set  # noqa: E402
from contenders import Contender, MoveSpec, all_contenders, ipv6_spec, scale_spec  # noqa: E402
from ipshift.lab import unique_prefix  # noqa: E402
from stats import fmt_seconds, ratio, summarize  # noqa: E402

ALL_SCENARIOS = "abcdefgh"
SCALE_NS = (1, 100, 1000, 10_000)
QUICK_SCALE_MAX = 1000  # --quick skips N=10,000 (the lab alone takes seconds to build)
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """How much of everything to run (``--quick`` or full)."""

    quick: bool
    scenarios: str
    contenders: tuple[str, ...]
    trials: int  # (a)-(d)
    cycle_budget_s: float  # per contender, for (a)/(b)/(d) together
    path_budget_s: float  # per contender, (c)
    scale_trials: dict[int, int] = field(default_factory=dict)
    scale_budget_s: dict[str, float] = field(default_factory=dict)  # per contender, all N together
    idle_s: float = 60.0  # (f) for ipshift
    idle_other_s: float = 30.0  # (f) for the reference contenders

    @staticmethod
    def make(quick: bool, scen: str, names: tuple[str, ...]) -> Plan:
        if quick:
            return Plan(quick, scen, names, trials=5, cycle_budget_s=18, path_budget_s=5,
                        scale_trials={1: 5, 100: 3, 1000: 1},
                        scale_budget_s={"shell": 8, "ipaddr2": 5, "ipshift": 30}, idle_s=3, idle_other_s=2)
        return Plan(quick, scen, names, trials=30, cycle_budget_s=240, path_budget_s=90,
                    scale_trials={1: 30, 100: 10, 1000: 5, 10_000: 3},
                    scale_budget_s={"shell": 200, "ipaddr2": 120, "ipshift": 200}, idle_s=60, idle_other_s=20)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- safety


def signal_handler(main_pid: int) -> Callable[[int, Any], None]:
    """SIGTERM/SIGHUP -> KeyboardInterrupt in the bench process, so every ``finally`` cleans up.

    A forked child (pyroute2 forks one to enter a namespace) inherits the handler; it must
    die as it would by default instead of running the bench's code.
    """

    def handler(signum: int, _frame: Any) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    return handler


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Cleanup must not be cut short by a second Ctrl-C."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Runner:
    """Owns the run's labs; :meth:`sweep` deletes anything left with one of its prefixes."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.prefixes: list[str] = []
        self.contenders: dict[str, Contender] = {}
        self.unavailable: dict[str, str] = {}
        for name, cls in all_contenders().items():
            if name not in plan.contenders:
                continue
            c: Contender = cls(workdir)
            self.contenders[name] = c
            why = c.unavailable()
            if why:
                self.unavailable[name] = why

    def with_lab(self, contender: Contender | None, spec: MoveSpec, fn: Callable[[BenchLab], T]) -> T:
        """Build a lab for ``contender`` (None: no contender), start it, run ``fn``, tear all down."""
        from contenders.base import single_gateway_spec

        prefix = unique_prefix("ipsb")
        self.prefixes.append(prefix)
        lab = BenchLab(prefix, contender.lab_spec(spec) if contender else single_gateway_spec(spec),
                       workdir=self.workdir)
        try:
            lab.create()
            if contender is not None:
                contender.setup(lab, spec)
                contender.start()
                ready_s = 15.0 + len(spec.addresses) / 100  # a daemon may read 10,000 addresses at start
                if not contender.ready(ready_s):
                    raise RuntimeError(f"{contender.name} not ready within {ready_s:.0f} s")
            return fn(lab)
        finally:
            with signals_blocked():
                if contender is not None:
                    contender.stop()
                lab.destroy()

    def sweep(self) -> list[str]:
        """Delete any namespace left over with one of this run's prefixes; returns what it deleted."""
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        left = [line.split()[0] for line in out.splitlines() if line.split()]
        gone = [ns for ns in left if any(ns.startswith(p) for p in self.prefixes)]
        for ns in gone:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        return gone

    # ----------------------------------------------------------------- scenarios
    def cycles(self, trigger: str, scen_keys: str, spec: MoveSpec | None = None,
               only: tuple[str, ...] | None = None, why_not: str = "") -> dict[str, Any]:
        """(a)/(b)/(d) for trigger 'carrier', (c) for 'path', (g) for 'carrier' with ``ipv6_spec()``,
        (h) for 'carrier' with ``MoveSpec(status_poll=True)`` and ipshift ``only``."""
        plan = self.plan
        out: dict[str, Any] = {"contenders": {}, "trials": {}}
        spec = spec or MoveSpec(probe=trigger == "path")
        for name, c in self.contenders.items():
            if only is not None and name not in only:
                out["contenders"][name] = {"status": why_not}
                continue
            if name in self.unavailable:
                out["contenders"][name] = {"status": f"not available: {self.unavailable[name]}"}
                continue
            if trigger == "path" and c.path_detection is not None:
                out["contenders"][name] = {"status": c.path_detection}
                continue
            budget = plan.cycle_budget_s if trigger == "carrier" else plan.path_budget_s
            log(f"[{scen_keys}] {name}: up to {plan.trials} trials, budget {budget:.0f} s")
            t0 = time.monotonic()
            try:
                res = self.with_lab(c, spec, lambda lab: scenarios.run_cycles(
                    c, lab, spec, plan.trials, trigger=trigger, deadline=time.monotonic() + budget,
                    failback=True, stop_if_first_censored=trigger == "path", log=log))
            except Exception as exc:  # one contender failing must not sink the run
                log(f"  {name}: error: {exc}")
                out["contenders"][name] = {"status": f"error: {exc}"}
                continue
            out["trials"][name] = scenarios.as_dicts(res)
            status = "ok"
            if res and all(r.outage_censored for r in res):
                note = getattr(c, "no_path_detection_note", None) if trigger == "path" else None
                status = str(note or f"no failover within {c.failover_timeout:g} s")
            out["contenders"][name] = {"status": status, "elapsed_s": time.monotonic() - t0}
            log(f"  {name}: {status}, {time.monotonic() - t0:.1f} s")
        return out

    def scale(self) -> dict[str, Any]:
        plan = self.plan
        out: dict[str, Any] = {"floor": {}, "contenders": {}, "trials": {}}
        log("[e] kernel floor")
        for n in SCALE_NS:
            if n not in plan.scale_trials:
                out["floor"][str(n)] = {"status": "skipped: --quick"}
                continue
            spec = scale_spec(n)
            k = plan.scale_trials[n]
            try:
                vals = self.with_lab(None, spec, lambda lab: scenarios.run_floor(lab, spec, k, log=log))
                out["floor"][str(n)] = {"status": "ok", "stats": summarize(vals), "samples": vals}
            except Exception as exc:
                log(f"  floor N={n}: error: {exc}")
                out["floor"][str(n)] = {"status": f"error: {exc}"}
        for name, c in self.contenders.items():
            per_n: dict[str, Any] = {}
            out["contenders"][name] = per_n
            if name in self.unavailable:
                for n in SCALE_NS:
                    per_n[str(n)] = {"status": f"not available: {self.unavailable[name]}"}
                continue
            if name not in plan.scale_budget_s:
                for n in SCALE_NS:
                    per_n[str(n)] = {"status": "not run: (e) compares the single-gateway movers"}
                continue
            budget_end = time.monotonic() + plan.scale_budget_s[name]
            last: tuple[int, float] | None = None  # (N, median s) of the largest N measured
            for n in SCALE_NS:
                if n not in plan.scale_trials:
                    per_n[str(n)] = {"status": "skipped: --quick"}
                    continue
                est = None if last is None else last[1] * n / last[0]
                left = budget_end - time.monotonic()
                if est is not None and est > left:
                    per_n[str(n)] = {"status": "skipped: over time budget", "extrapolated_s": est,
                                     "budget_s": plan.scale_budget_s[name]}
                    log(f"[e] {name} N={n}: skipped, over time budget (extrapolated {est:.1f} s per trial)")
                    continue
                trials = plan.scale_trials[n]
                if est is not None:
                    trials = max(1, min(trials, int(left // (est + 0.5))))
                spec = scale_spec(n)
                log(f"[e] {name} N={n}: {trials} trials")
                timeout = max(5.0, min(left, (est or 5.0) * 3 + 5))
                try:
                    res = self.with_lab(c, spec, lambda lab: scenarios.run_scale(
                        c, lab, spec, trials, timeout=timeout, deadline=budget_end, log=log))
                except Exception as exc:
                    log(f"  {name} N={n}: error: {exc}")
                    per_n[str(n)] = {"status": f"error: {exc}"}
                    break
                vals = [r.latency for r in res if r.latency is not None]
                notes = sorted({r.note.strip() for r in res if r.note.strip()})
                per_n[str(n)] = {"status": "ok" if vals else "no complete trial",
                                 "stats": summarize(vals, censored=len(res) - len(vals)), "samples": vals,
                                 "notes": notes}
                out["trials"].setdefault(name, {})[str(n)] = scenarios.as_dicts(res)
                if not vals:
                    for bigger in SCALE_NS[SCALE_NS.index(n) + 1:]:
                        per_n[str(bigger)] = {"status": f"skipped: no complete trial at N={n}"}
                    break
                last = (n, sorted(vals)[len(vals) // 2])
        return out

    def idle(self) -> dict[str, Any]:
        out: dict[str, Any] = {"contenders": {}}
        spec = MoveSpec(addresses=scale_spec(100).addresses, routes=(), failback=True)
        for name, c in self.contenders.items():
            if name in self.unavailable:
                out["contenders"][name] = {"status": f"not available: {self.unavailable[name]}"}
                continue
            secs = self.plan.idle_s if name == "ipshift" else self.plan.idle_other_s
            log(f"[f] {name}: idle {secs:.0f} s with 2 NICs, 100 addresses")
            try:
                out["contenders"][name] = self.with_lab(c, spec, lambda lab: scenarios.run_idle(c, secs))
            except Exception as exc:
                log(f"  {name}: error: {exc}")
                out["contenders"][name] = {"status": f"error: {exc}"}
        return out


# --------------------------------------------------------------------------- results


def machine_info() -> dict[str, Any]:
    def first_line(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        text = (r.stdout or r.stderr).strip()
        return text.splitlines()[0] if text else ""

    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "uname_r": platform.release(),
        "nproc": int(first_line(["nproc"]) or os.cpu_count() or 0),
        "cpu_model": model,
        "python": platform.python_version(),
        "iproute2": first_line(["ip", "-V"]),
        "keepalived": first_line(["keepalived", "--version"]),
        "resource_agents": first_line(["dpkg-query", "-W", "-f", "${Version}", "resource-agents"]),
        "arping": first_line(["arping", "-V"]),
        "loadavg_at_start": first_line(["cat", "/proc/loadavg"]),
        "clocksource": first_line(["cat", "/sys/devices/system/clocksource/clocksource0/current_clocksource"]),
    }


def summarize_cycles(results: dict[str, Any], key: str, scen: str, field_name: str, censor_field: str) -> None:
    """Fill results['scenarios'][scen] from the raw trials of a cycles run."""
    src = results["raw"][key]
    entry: dict[str, Any] = {"contenders": {}}
    for name, status in src["contenders"].items():
        trials = src["trials"].get(name)
        if not trials:
            entry["contenders"][name] = {"status": status["status"]}
            continue
        ok = [t for t in trials if not t.get("prober_suspect")]
        vals = [t[field_name] for t in ok if t[field_name] is not None and not t[censor_field]]
        cens = sum(1 for t in ok if t[field_name] is None or t[censor_field])
        st = summarize(vals, censored=cens)
        st["prober_late_excluded"] = len(trials) - len(ok)
        entry["contenders"][name] = {"status": status["status"] if not vals else "ok", "stats": st, "samples": vals}
    results["scenarios"][scen] = entry


def timelines(raw_cycles: dict[str, Any]) -> dict[str, Any]:
    """Each contender's median-outage trial of (a), as events relative to the trigger."""
    out: dict[str, Any] = {}
    for name, trials in raw_cycles.get("trials", {}).items():
        good = [t for t in trials if t["outage"] is not None and not t["outage_censored"]]
        if not good:
            continue
        good.sort(key=lambda t: t["outage"])
        t = good[len(good) // 2]
        events = [{"name": s["name"], "t": s["t"]} for s in t["steps"] if s["name"] in
                  ("detect", "del", "add", "routes", "announce") or s["name"][:1].isupper()]
        if t["garp"] is not None:
            events.append({"name": "garp seen", "t": t["garp"]})
        if t["gap_to"] is not None:
            events.append({"name": "client reply", "t": t["gap_to"]})
        events.sort(key=lambda e: e["t"])
        out[name] = {"trial": t["trial"], "outage": t["outage"], "events": events,
                     "step_source": "contender step log" if t["steps"] else "none (switch capture and prober only)"}
    return out


def side_by_side(results: dict[str, Any]) -> list[str]:
    """IPv4 (a)/(b) beside IPv6 (g): the median of each, per contender."""
    sc = results["scenarios"]
    if "g" not in sc or "a" not in sc:
        return []

    def med(scen: str, name: str) -> str:
        e = sc.get(scen, {}).get("contenders", {}).get(name, {})
        st = e.get("stats") or {}
        return fmt_seconds(st["median"]) if st.get("n") else str(e.get("status", "-"))

    lines = ["### carrier loss, IPv4 beside IPv6 (medians)", "",
             "| contender | outage IPv4 (a) | outage IPv6 (g) | first announcement IPv4 (b) | first announcement IPv6 (g) |",
             "|---|---|---|---|---|"]
    for name in sc["g"]["contenders"]:
        lines.append(f"| {results['contenders'][name]['label']} | {med('a', name)} | {med('g', name)} | "
                     f"{med('b', name)} | {med('g_announce', name)} |")
    return lines + [""]


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"## ipshift bench {results['date']} ({'quick' if results['quick'] else 'full'})", "",
             f"{m['cpu_model']}, {m['nproc']} CPUs, Linux {m['uname_r']}; probes every 1 ms; "
             f"times from the trigger (switch port down).", ""]
    ipshift_med: dict[str, float | None] = {}
    titles = {
        "a": "(a) carrier loss -> client traffic restored (longest gap between replies)",
        "b": "(b) carrier loss -> first gratuitous ARP seen on the switch",
        "c": "(c) path loss, carrier up (peer detached from the bridge) -> client traffic restored",
        "d": "(d) failback: home NIC returns -> longest client gap",
        "g": "(g) IPv6 carrier loss -> client ping6 restored (longest gap between replies; compare (a))",
        "g_announce": "(g) IPv6 carrier loss -> first unsolicited neighbour advertisement seen on the switch "
                      "(compare (b))",
        "h": "(h) carrier loss while `ipshift status` is polled in a loop, 50,000 moves kept -> client traffic "
             "restored (compare (a))",
        "h_announce": "(h) the same -> first gratuitous ARP seen on the switch (compare (b))",
    }
    for scen in ("a", "b", "c", "d", "g", "g_announce", "h", "h_announce"):
        entry = results["scenarios"].get(scen)
        if not entry:
            continue
        ip = entry["contenders"].get("ipshift", {})
        ipm = ip.get("stats", {}).get("median") if ip.get("stats", {}).get("n") else None
        ipshift_med[scen] = ipm
        lines += [f"### {titles[scen]}", "", "| contender | n | min | median | p95 | max | ipshift / this |",
                  "|---|---|---|---|---|---|---|"]
        for name, e in entry["contenders"].items():
            label = results["contenders"][name]["label"]
            st = e.get("stats")
            if not st or not st.get("n"):
                lines.append(f"| {label} | - | {e['status']} | | | | |")
                continue
            cens = f" (+{st['censored']} not restored)" if st.get("censored") else ""
            if st.get("prober_late_excluded"):
                cens += f" (+{st['prober_late_excluded']} left out: prober late)"
            r = "-" if name == "ipshift" else (ratio(ipm, st["median"]) if ipm else "n/a (no ipshift figure)")
            lines.append(f"| {label} | {st['n']}{cens} | {fmt_seconds(st['min'])} | {fmt_seconds(st['median'])} | "
                         f"{fmt_seconds(st['p95'])} | {fmt_seconds(st['max'])} | {r} |")
        lines.append("")
    lines += side_by_side(results)
    e = results["scenarios"].get("e")
    if e:
        ns = [str(n) for n in SCALE_NS]
        lines += ["### (e) scale: carrier loss -> last address on the survivor and announced (median, n trials)", "",
                  "| contender | " + " | ".join(f"N={int(n):,}" for n in ns) + " |", "|---|" + "---|" * len(ns)]

        def cell(v: dict[str, Any]) -> str:
            st = v.get("stats")
            if st and st.get("n"):
                return f"{fmt_seconds(st['median'])} (n={st['n']})"
            if v.get("extrapolated_s"):
                return f"skipped: over time budget (~{fmt_seconds(v['extrapolated_s'])} per trial, linear extrapolation)"
            if st is not None and v.get("notes"):
                return f"{v.get('status')} ({st.get('censored', 0)} trials: {v['notes'][0][:80]})"
            return str(v.get("status", "-"))

        lines.append("| kernel floor: `ip -batch` (same deletes/adds, no detection or announce) | "
                     + " | ".join(cell(e["floor"].get(n, {})) for n in ns) + " |")
        for name, per_n in e["contenders"].items():
            lines.append(f"| {results['contenders'][name]['label']} | " + " | ".join(cell(per_n.get(n, {})) for n in ns) + " |")
        lines.append("")
    f = results["scenarios"].get("f")
    if f:
        lines += ["### (f) idle cost, 2 NICs and 100 addresses (the gateway's processes)", "",
                  "| contender | seconds | CPU % | RSS MiB | wake-ups/s |", "|---|---|---|---|---|"]
        for name, v in f["contenders"].items():
            label = results["contenders"][name]["label"]
            if v.get("status") != "ok":
                lines.append(f"| {label} | {v.get('status')} | | | |")
            else:
                lines.append(f"| {label} | {v['duration_s']:.0f} | {v['cpu_percent']:.2f} | {v['rss_mib']:.1f} | "
                             f"{v['wakeups_per_s']:.1f} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = list(all_contenders())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 trials per scenario, short budgets (< 2 min)")
    p.add_argument("--only", default=ALL_SCENARIOS, help="scenarios to run, e.g. a,b,d,e,g (default all)")
    p.add_argument("--contenders", default=",".join(names), help=f"comma-separated subset of {','.join(names)}")
    p.add_argument("--no-install", action="store_true", help="do not run bench/install-debs.sh")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="output directory")
    args = p.parse_args(argv)
    args.only = "".join(sorted(set(args.only.replace(",", "").strip())))
    if not args.only or set(args.only) - set(ALL_SCENARIOS):
        p.error(f"--only takes letters from {ALL_SCENARIOS}")
    chosen = tuple(n.strip() for n in args.contenders.split(",") if n.strip())
    bad = set(chosen) - set(names)
    if bad or not chosen:
        p.error(f"unknown contenders {sorted(bad)}; known: {', '.join(names)}")
    args.contenders = chosen
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py needs root (network namespaces)", file=sys.stderr)
        return 2
    handler = signal_handler(os.getpid())
    signal.signal(signal.SIGINT, handler)  # also when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGTERM, handler)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # respect nohup
        signal.signal(signal.SIGHUP, handler)
    if not args.no_install:
        subprocess.run(["bash", str(BENCH_DIR / "install-debs.sh")], check=True)
    plan = Plan.make(args.quick, args.only, args.contenders)
    started = time.monotonic()
    date = dt.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    results: dict[str, Any] = {
        "schema": 1, "date": date, "quick": plan.quick, "scenarios_run": plan.scenarios,
        "machine": machine_info(), "sysctls": sysctls_set(("eth0", "eth1")),
        "prober": {"tool": "ipshift.prober", "interval_s": scenarios.PROBE_INTERVAL, "sched": "SCHED_FIFO 10",
                   "probe": "ICMP echo, raw socket, absolute schedule"},
        "trigger": "switch agent: SIOCSIFFLAGS down on the gateway NIC's bridge port (= Lab.fail_nic)",
        "plan": {"trials": plan.trials, "scale_trials": plan.scale_trials, "scale_budget_s": plan.scale_budget_s,
                 "cycle_budget_s": plan.cycle_budget_s, "path_budget_s": plan.path_budget_s,
                 "idle_s": plan.idle_s, "idle_other_s": plan.idle_other_s},
        "contenders": {}, "scenarios": {}, "raw": {},
    }
    with tempfile.TemporaryDirectory(prefix="ipsb-bench-") as tmp:
        runner = Runner(plan, Path(tmp))
        for name, c in runner.contenders.items():
            results["contenders"][name] = {"label": c.label, "available": name not in runner.unavailable,
                                           "reason": runner.unavailable.get(name)}
            if name in runner.unavailable:
                log(f"{name}: not available: {runner.unavailable[name]}")
        interrupted = False
        try:
            if set("abd") & set(plan.scenarios):
                results["raw"]["carrier"] = runner.cycles("carrier", "abd")
                for scen, fld, cens in (("a", "outage", "outage_censored"), ("b", "garp", "outage_censored"),
                                        ("d", "failback_gap", "failback_censored")):
                    if scen in plan.scenarios:
                        summarize_cycles(results, "carrier", scen, fld, cens)
                results["timelines"] = timelines(results["raw"]["carrier"])
            log(f"-- {time.monotonic() - started:.0f} s")
            if "g" in plan.scenarios:
                results["raw"]["carrier6"] = runner.cycles("carrier", "g", ipv6_spec())
                summarize_cycles(results, "carrier6", "g", "outage", "outage_censored")
                summarize_cycles(results, "carrier6", "g_announce", "garp", "outage_censored")
                results["timelines_ipv6"] = timelines(results["raw"]["carrier6"])
            log(f"-- {time.monotonic() - started:.0f} s")
            if "h" in plan.scenarios:
                results["raw"]["polled"] = runner.cycles("carrier", "h", MoveSpec(status_poll=True), only=("ipshift",),
                                                         why_not="not run: (h) polls ipshift's own status")
                summarize_cycles(results, "polled", "h", "outage", "outage_censored")
                summarize_cycles(results, "polled", "h_announce", "garp", "outage_censored")
            log(f"-- {time.monotonic() - started:.0f} s")
            if "c" in plan.scenarios:
                results["raw"]["path"] = runner.cycles("path", "c")
                summarize_cycles(results, "path", "c", "outage", "outage_censored")
            log(f"-- {time.monotonic() - started:.0f} s")
            if "e" in plan.scenarios:
                e = runner.scale()
                results["raw"]["scale"] = e.pop("trials")
                results["scenarios"]["e"] = e
            log(f"-- {time.monotonic() - started:.0f} s")
            if "f" in plan.scenarios:
                results["scenarios"]["f"] = runner.idle()
            log(f"-- {time.monotonic() - started:.0f} s")
        except KeyboardInterrupt as exc:
            interrupted = True
            log(f"interrupted ({exc or 'Ctrl-C'}): cleaning up, writing partial results")
        finally:
            with signals_blocked():
                left = runner.sweep()
                if left:
                    log(f"deleted leftover namespaces: {' '.join(left)}")
    results["elapsed_s"] = time.monotonic() - started
    results["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().strip()
    results["interrupted"] = interrupted
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{date}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    print(f"results: {out.relative_to(BENCH_DIR.parent) if out.is_relative_to(BENCH_DIR.parent) else out}")
    if not args.no_plots:
        try:
            import plots

            for kind, fn in (("outage", plots.outage_plot), ("timeline", plots.timeline_plot),
                             ("scale", plots.scale_plot)):
                p = fn(results, args.results / f"{date}-{kind}.png")
                if p:
                    print(f"plot: {p.relative_to(BENCH_DIR.parent) if p.is_relative_to(BENCH_DIR.parent) else p}")
        except ImportError as exc:
            log(f"no plots: {exc} (install the bench extra: pip install -e '.[bench]')")
    print(f"elapsed: {results['elapsed_s']:.0f} s")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
