#!/usr/bin/env python3
"""ipshift benchmark: every scenario x every contender, in throwaway namespace labs.

    .venv/bin/python bench/run.py [--quick] [--only a,b,d,e] [--contenders shell,ipaddr2]

Scenarios (see bench/README.md): (a) carrier loss -> client traffic restored,
(b) carrier loss -> first gratuitous ARP on the switch, (c) path loss with
carrier up, (d) failback, (e) scale with the kernel floor, (f) idle cost,
(g) IPv6 carrier loss (the service address is 2001:db8::50/64), (h) carrier loss
batched by the kernel's linkwatch (as on a physical NIC), (i) carrier loss while
`ipshift status` is polled, (a2) = (a'') carrier loss on a gateway with 2,000 more
addresses on another NIC pair; (c) includes (c'), probe intervals 5 ms and 2 ms.
(a), (b) and (d) come from the same trials: fail, measure, restore, measure;
(g) runs the same trials with the IPv6 address and reports beside (a) and (b).
Two ipshift contenders: ``ipshift`` (its defaults, conflict check on) and
``ipshift-nocheck`` (conflict_check.enabled=false, like for like with the shell).

Writes bench/results/<date>.json and PNG plots beside it, and prints a
Markdown table. Needs root. Every lab is deleted at the end, also on error,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from report import SCALE_NS, markdown  # noqa: E402
from stats import summarize  # noqa: E402

ALL_SCENARIOS = "abcdefghi"
MULTI_TOKENS = ("a2",)  # (a''): `--only a2`
IPSHIFTS = ("ipshift", "ipshift-nocheck")
PATH_INTERVALS = ("10ms", "5ms", "2ms")  # (c) and (c'); scenario keys c, c_5ms, c_2ms
PROBE_IDLE = ("10ms", "5ms", "2ms")  # (f): idle ipshift probing at each interval
CARRIER_POLL = "10ms"  # (h) and (f)
BUSY_N = 2000  # (a'')
QUICK_SCALE_MAX = 1000  # --quick skips N=10,000 (the lab alone takes seconds to build)
T = TypeVar("T")


@dataclass(frozen=True)
class Series:
    """One row of a table: a contender with a scenario's spec (a variant has its own key and label)."""

    key: str
    contender: str
    spec: MoveSpec
    label: str
    status: str | None = None  # set: not run, this says why


@dataclass(frozen=True)
class Plan:
    """How much of everything to run (``--quick`` or full)."""

    quick: bool
    scenarios: tuple[str, ...]  # tokens: a .. i, a2
    contenders: tuple[str, ...]
    trials: int  # (a)-(d)
    cycle_budget_s: float  # per contender, for (a)/(b)/(d) together
    path_budget_s: float  # per contender and probe interval, (c) and (c')
    batched_budget_s: float = 50.0  # (h), per row
    busy_budget_s: float = 60.0  # (a''), per row
    slow_ipv6_budget_s: float = 120.0  # (g) for keepalived with default timers (~7 s per trial)
    scale_trials: dict[int, int] = field(default_factory=dict)
    scale_budget_s: dict[str, float] = field(default_factory=dict)  # per contender, all N together
    idle_s: float = 60.0  # (f) for ipshift
    idle_other_s: float = 30.0  # (f) for the reference contenders and ipshift-nocheck
    idle_variant_s: float = 20.0  # (f) ipshift with path probes / carrier polling
    rss_n: int = 10_000  # (f) RSS after one failover and one failback of this many addresses

    @staticmethod
    def make(quick: bool, scen: tuple[str, ...], names: tuple[str, ...]) -> Plan:
        if quick:
            return Plan(quick, scen, names, trials=5, cycle_budget_s=18, path_budget_s=5, batched_budget_s=16,
                        busy_budget_s=8, slow_ipv6_budget_s=18,
                        scale_trials={1: 5, 100: 3, 1000: 1},
                        scale_budget_s={"shell": 8, "ipaddr2": 5, "ipshift": 30, "ipshift-nocheck": 30},
                        idle_s=3, idle_other_s=2, idle_variant_s=3, rss_n=1000)
        return Plan(quick, scen, names, trials=30, cycle_budget_s=240, path_budget_s=60, batched_budget_s=50,
                    busy_budget_s=60, slow_ipv6_budget_s=120,
                    scale_trials={1: 30, 100: 10, 1000: 5, 10_000: 3},
                    scale_budget_s={"shell": 200, "ipaddr2": 120, "ipshift": 200, "ipshift-nocheck": 150},
                    idle_s=60, idle_other_s=20, idle_variant_s=20, rss_n=10_000)


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
    def note(self, name: str, spec: MoveSpec) -> str | None:
        """The configuration a contender runs with in ``spec`` (ipshift contenders say it exactly)."""
        fn = getattr(self.contenders[name], "config_note", None)
        return str(fn(spec)) if fn is not None else None

    def series(self, spec: MoveSpec, *, trigger: str = "carrier", only: tuple[str, ...] | None = None,
               why_not: str = "") -> list[Series]:
        """One row per chosen contender, with the reason when it does not run."""
        out = []
        for name, c in self.contenders.items():
            status = None
            if name in self.unavailable:
                status = f"not available: {self.unavailable[name]}"
            elif only is not None and name not in only:
                status = why_not
            elif trigger == "path" and c.path_detection is not None:
                status = c.path_detection
            out.append(Series(name, name, spec, c.label, status))
        return out

    def cycles(self, trigger: str, scen_keys: str, series: list[Series], budget: float | dict[str, float]) -> dict[str, Any]:
        """Runs every row of ``series`` (fresh lab each): (a)/(b)/(d) for trigger 'carrier', (c)/(c')
        for 'path', (g) with ``ipv6_spec()``, (h) with ``MoveSpec(batched_carrier=True)``, (i) with
        ``MoveSpec(status_poll=True)``, (a'') with ``MoveSpec(busy=...)``."""
        plan = self.plan
        out: dict[str, Any] = {"contenders": {}, "trials": {}}
        for row in series:
            entry: dict[str, Any] = {"label": row.label, "contender": row.contender}
            note = self.note(row.contender, row.spec)
            if note:
                entry["config"] = note
            out["contenders"][row.key] = entry
            if row.status is not None:
                entry["status"] = row.status
                continue
            c = self.contenders[row.contender]
            spec = row.spec
            b = budget if isinstance(budget, float | int) else budget.get(row.key, budget["*"])
            log(f"[{scen_keys}] {row.key}: up to {plan.trials} trials, budget {b:.0f} s")
            t0 = time.monotonic()
            try:
                res = self.with_lab(c, spec, lambda lab: scenarios.run_cycles(
                    c, lab, spec, plan.trials, trigger=trigger, deadline=time.monotonic() + b,
                    failback=True, stop_if_first_censored=trigger == "path", log=log))
            except Exception as exc:  # one contender failing must not sink the run
                log(f"  {row.key}: error: {exc}")
                text = str(exc)
                entry["status"] = text if text.startswith("not yet") else f"error: {text}"
                continue
            out["trials"][row.key] = scenarios.as_dicts(res)
            status = "ok"
            if res and all(r.outage_censored for r in res):
                why = getattr(c, "no_path_detection_note", None) if trigger == "path" else None
                status = str(why or f"no failover within {c.failover_timeout:g} s")
            entry.update(status=status, elapsed_s=time.monotonic() - t0)
            log(f"  {row.key}: {status}, {time.monotonic() - t0:.1f} s")
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
            measured: list[tuple[int, float]] = []  # (N, median s) of every N measured, ascending
            for n in SCALE_NS:
                if n not in plan.scale_trials:
                    per_n[str(n)] = {"status": "skipped: --quick"}
                    continue
                est = extrapolate(measured, n, floor_medians(out["floor"]))
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
                measured.append((n, sorted(vals)[len(vals) // 2]))
        return out

    def idle(self) -> dict[str, Any]:
        """(f): every contender idle with 2 NICs and 100 addresses; then ipshift (defaults) with path
        probes at each interval and with carrier polling; then ipshift's RSS after moves."""
        out: dict[str, Any] = {"contenders": {}, "memory": {}}
        base = MoveSpec(addresses=scale_spec(100).addresses, routes=(), failback=True)
        rows = [(name, name, base, self.plan.idle_s if name == "ipshift" else self.plan.idle_other_s)
                for name in self.contenders]
        if "ipshift" in self.contenders:
            v = self.plan.idle_variant_s
            rows += [(f"ipshift+probe{iv}", "ipshift", dataclasses.replace(base, probe=True, probe_interval=iv), v)
                     for iv in PROBE_IDLE]
            rows.append((f"ipshift+carrier_poll{CARRIER_POLL}", "ipshift",
                         dataclasses.replace(base, carrier_poll=CARRIER_POLL), v))
        for key, name, spec, secs in rows:
            c = self.contenders[name]
            label = c.label if key == name else f"{c.label} + {key.split('+', 1)[1]}"
            entry: dict[str, Any] = {"label": label, "config": self.note(name, spec)}
            if name in self.unavailable:
                out["contenders"][key] = {**entry, "status": f"not available: {self.unavailable[name]}"}
                continue
            log(f"[f] {key}: idle {secs:.0f} s with 2 NICs, 100 addresses")
            try:
                entry.update(self.with_lab(c, spec, lambda lab: scenarios.run_idle(c, secs)))
            except Exception as exc:
                log(f"  {key}: error: {exc}")
                text = str(exc)
                entry["status"] = text if text.startswith("not yet") else f"error: {text}"
            out["contenders"][key] = entry
        if "ipshift" in self.contenders and "ipshift" not in self.unavailable:
            c = self.contenders["ipshift"]
            n = self.plan.rss_n
            spec = dataclasses.replace(scale_spec(n), failback=True)
            entry = {"label": c.label, "config": self.note("ipshift", spec), "addresses": n}
            log(f"[f] ipshift: RSS after one failover and one failback of {n:,} addresses")
            try:
                entry.update(self.with_lab(c, spec, lambda lab: scenarios.run_rss_after_moves(
                    c, lab, spec, timeout=30.0 + n / 200)))
            except Exception as exc:
                log(f"  ipshift RSS: error: {exc}")
                entry["status"] = f"error: {exc}"
            out["memory"]["ipshift"] = entry
        return out


def floor_medians(floor: dict[str, Any]) -> dict[int, float]:
    return {int(n): v["stats"]["median"] for n, v in floor.items() if v.get("stats", {}).get("n")}


def extrapolate(measured: list[tuple[int, float]], n: int, floor: dict[int, float]) -> float | None:
    """A trial's time at ``n`` from the sizes measured so far: the largest measured time plus the
    per-address cost times the addresses added. The per-address cost is the marginal one between
    the two largest sizes measured; with one size only (N=1: almost all fixed cost, conflict probe
    included), the kernel floor's per-address cost (a lower bound) stands in for it."""
    if not measured:
        return None
    n2, t2 = measured[-1]
    if len(measured) >= 2:
        n1, t1 = measured[-2]
        per = max(0.0, (t2 - t1) / (n2 - n1))
    elif n in floor and n2 in floor and n > n2:
        per = max(0.0, (floor[n] - floor[n2]) / (n - n2))
    else:
        per = 0.0
    return t2 + (n - n2) * per


# --------------------------------------------------------------------------- results


def batched_series(runner: Runner) -> list[Series]:
    """(h): ipshift without and with carrier polling, ipshift-nocheck with it, the shell baseline."""
    plain = MoveSpec(batched_carrier=True)
    polled = dataclasses.replace(plain, carrier_poll=CARRIER_POLL)
    out: list[Series] = []
    for row in runner.series(plain, only=("ipshift", "ipshift-nocheck", "shell"),
                             why_not="not run: (h) compares ipshift with and without carrier polling and the shell"):
        if row.contender == "ipshift-nocheck":
            out.append(dataclasses.replace(row, key=f"ipshift-nocheck+poll{CARRIER_POLL}", spec=polled,
                                           label=f"{row.label} + carrier_poll {CARRIER_POLL}"))
            continue
        out.append(row)
        if row.contender == "ipshift":
            out.append(dataclasses.replace(row, key=f"ipshift+poll{CARRIER_POLL}", spec=polled,
                                           label=f"{row.label} + carrier_poll {CARRIER_POLL}"))
    return out


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
        keep = {k: status[k] for k in ("label", "config", "contender") if k in status}
        if not trials:
            entry["contenders"][name] = {"status": status["status"], **keep}
            continue
        ok = [t for t in trials if not t.get("prober_suspect")]
        vals = [t[field_name] for t in ok if t[field_name] is not None and not t[censor_field]]
        cens = sum(1 for t in ok if t[field_name] is None or t[censor_field])
        st = summarize(vals, censored=cens)
        st["prober_late_excluded"] = len(trials) - len(ok)
        entry["contenders"][name] = {"status": status["status"] if not vals else "ok", "stats": st, "samples": vals,
                                     **keep}
        waits = [t["pre_event_wait"] for t in ok if t.get("pre_event_wait") is not None]
        if waits:  # (h): how long the kernel held the other link event
            entry["contenders"][name]["pre_event_wait"] = summarize(waits)
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


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = list(all_contenders())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 trials per scenario, short budgets (< 2 min)")
    p.add_argument("--only", default=",".join([*ALL_SCENARIOS, *MULTI_TOKENS]),
                   help="scenarios to run, e.g. a,b,d,e,g or a2 for (a'') (default all; c includes (c'))")
    p.add_argument("--contenders", default=",".join(names), help=f"comma-separated subset of {','.join(names)}")
    p.add_argument("--no-install", action="store_true", help="do not run bench/install-debs.sh")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="output directory")
    args = p.parse_args(argv)
    tokens: set[str] = set()
    for part in args.only.replace(" ", "").split(","):
        if part in MULTI_TOKENS:
            tokens.add(part)
        else:
            tokens.update(part)
    if not tokens or tokens - set(ALL_SCENARIOS) - set(MULTI_TOKENS):
        p.error(f"--only takes letters from {ALL_SCENARIOS} and {', '.join(MULTI_TOKENS)}")
    args.only = tuple(sorted(tokens))
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
        # schema 2: (h) is the linkwatch-batched carrier loss; schema 1's (h) (status polled) is (i).
        "schema": 2, "date": date, "quick": plan.quick, "scenarios_run": ",".join(plan.scenarios),
        "machine": machine_info(), "sysctls": sysctls_set(("eth0", "eth1")),
        "prober": {"tool": "ipshift.prober", "interval_s": scenarios.PROBE_INTERVAL, "sched": "SCHED_FIFO 10",
                   "probe": "ICMP echo, raw socket, absolute schedule"},
        "trigger": "switch agent: SIOCSIFFLAGS down on the gateway NIC's bridge port (= Lab.fail_nic)",
        "plan": {"trials": plan.trials, "scale_trials": plan.scale_trials, "scale_budget_s": plan.scale_budget_s,
                 "cycle_budget_s": plan.cycle_budget_s, "path_budget_s": plan.path_budget_s,
                 "idle_s": plan.idle_s, "idle_other_s": plan.idle_other_s, "idle_variant_s": plan.idle_variant_s,
                 "batched_budget_s": plan.batched_budget_s, "busy_budget_s": plan.busy_budget_s,
                 "slow_ipv6_budget_s": plan.slow_ipv6_budget_s, "rss_n": plan.rss_n,
                 "pre_event_s": scenarios.PRE_EVENT_S, "busy_addresses": BUSY_N},
        "contenders": {}, "scenarios": {}, "raw": {},
    }
    with tempfile.TemporaryDirectory(prefix="ipsb-bench-") as tmp:
        runner = Runner(plan, Path(tmp))
        for name, c in runner.contenders.items():
            results["contenders"][name] = {"label": c.label, "available": name not in runner.unavailable,
                                           "reason": runner.unavailable.get(name)}
            for k, spec in (("config", MoveSpec()), ("config_scale", scale_spec(1))):
                note = runner.note(name, spec)
                if note:
                    results["contenders"][name][k] = note
            if name in runner.unavailable:
                log(f"{name}: not available: {runner.unavailable[name]}")
        interrupted = False
        try:
            def lap() -> None:
                log(f"-- {time.monotonic() - started:.0f} s")

            if set("abd") & set(plan.scenarios):
                results["raw"]["carrier"] = runner.cycles("carrier", "abd", runner.series(MoveSpec()),
                                                          plan.cycle_budget_s)
                for scen, fld, cens in (("a", "outage", "outage_censored"), ("b", "garp", "outage_censored"),
                                        ("d", "failback_gap", "failback_censored")):
                    if scen in plan.scenarios:
                        summarize_cycles(results, "carrier", scen, fld, cens)
                results["timelines"] = timelines(results["raw"]["carrier"])
            lap()
            if "a2" in plan.scenarios:
                spec = MoveSpec(busy=BUSY_N)
                results["raw"]["busy"] = runner.cycles(
                    "carrier", "a''", runner.series(spec, only=IPSHIFTS, why_not="not run: (a'') measures ipshift's "
                                                    "planning cost; the others move only what they are told"),
                    plan.busy_budget_s)
                summarize_cycles(results, "busy", "a_busy", "outage", "outage_censored")
                summarize_cycles(results, "busy", "a_busy_announce", "garp", "outage_censored")
            lap()
            if "g" in plan.scenarios:
                results["raw"]["carrier6"] = runner.cycles("carrier", "g", runner.series(ipv6_spec()),
                                                           {"keepalived": plan.slow_ipv6_budget_s,
                                                            "*": plan.cycle_budget_s})
                summarize_cycles(results, "carrier6", "g", "outage", "outage_censored")
                summarize_cycles(results, "carrier6", "g_announce", "garp", "outage_censored")
                results["timelines_ipv6"] = timelines(results["raw"]["carrier6"])
            lap()
            if "h" in plan.scenarios:
                results["raw"]["batched"] = runner.cycles("carrier", "h", batched_series(runner), plan.batched_budget_s)
                summarize_cycles(results, "batched", "h", "outage", "outage_censored")
                summarize_cycles(results, "batched", "h_announce", "garp", "outage_censored")
            lap()
            if "i" in plan.scenarios:
                results["raw"]["polled"] = runner.cycles(
                    "carrier", "i", runner.series(MoveSpec(status_poll=True), only=("ipshift",),
                                                  why_not="not run: (i) polls ipshift's own status"),
                    plan.cycle_budget_s)
                summarize_cycles(results, "polled", "i", "outage", "outage_censored")
                summarize_cycles(results, "polled", "i_announce", "garp", "outage_censored")
            lap()
            if "c" in plan.scenarios:
                for iv in PATH_INTERVALS:
                    spec = MoveSpec(probe=True, probe_interval=iv)
                    rows = runner.series(spec, trigger="path")
                    if iv != "10ms":  # (c'): faster than any VRRP advert; the carrier-only movers are listed once, in (c)
                        rows = [r if r.contender in IPSHIFTS or r.status else dataclasses.replace(
                            r, status="not run: (c') is for intervals below VRRP's fastest advert (10 ms)")
                            for r in rows]
                    key = "c" if iv == "10ms" else f"c_{iv}"
                    results["raw"]["path" if iv == "10ms" else f"path_{iv}"] = runner.cycles(
                        "path", key, rows, plan.path_budget_s)
                    summarize_cycles(results, "path" if iv == "10ms" else f"path_{iv}", key, "outage",
                                     "outage_censored")
            lap()
            if "e" in plan.scenarios:
                e = runner.scale()
                results["raw"]["scale"] = e.pop("trials")
                results["scenarios"]["e"] = e
            lap()
            if "f" in plan.scenarios:
                results["scenarios"]["f"] = runner.idle()
            lap()
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
