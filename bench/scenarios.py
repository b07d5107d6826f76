"""The benchmark scenarios: trial loops over one contender in one lab.

All times are CLOCK_MONOTONIC seconds (``time.monotonic()``), shared by the
orchestrator, the prober (client namespace) and the switch agent (switch
namespace). The trigger is always the switch side: ``down gwN`` (carrier
loss, the same operation as ``Lab.fail_nic``) or ``Lab.detach_nic`` (path
loss, carrier stays up).

* :func:`run_cycles` -- scenarios (a), (b), (d) and, with ``trigger="path"``,
  (c): each trial fails the home NIC with the prober running, waits for the
  client's traffic to come back, restores the NIC and waits for failback.
* :func:`run_scale` -- scenario (e) for one contender and one N.
* :func:`run_floor` -- the kernel floor of (e): ``ip -batch`` with the same deletes and adds.
* :func:`run_idle` -- scenario (f): CPU, RSS and wake-ups of an idle contender.
* :func:`run_rss_after_moves` -- (f): RSS after one failover and one failback of N addresses.

Scenario (h) is :func:`run_cycles` on a lab whose carrier changes are not urgent for the
kernel's linkwatch (``MoveSpec.batched_carrier``): the trigger then comes PRE_EVENT_S after
another link event in the gateway (the unused veth ``lw0``; see :meth:`Agent.down_after_linkwatch`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from benchlab import BenchLab, Prober, wait_until
from contenders import Contender, MoveSpec

LEAD_S = 0.15  # prober runs this long before the trigger (baseline gaps)
TAIL_S = 0.15  # ...and this long after traffic is back
PROBE_INTERVAL = 0.001
PRE_EVENT_S = 0.2  # (h): the trigger comes this long after the kernel delivered the other link event


class BudgetExceeded(Exception):
    pass


@dataclass
class CycleResult:
    """One failure + restore cycle; times relative to the trigger unless named t_*."""

    trial: int
    trigger: str
    t_fail: float
    t_restore: float | None = None
    outage: float | None = None  # (a)/(c): longest gap between client replies, failure window
    outage_censored: bool = False
    gap_from: float | None = None  # the longest gap's ends, relative to t_fail
    gap_to: float | None = None
    garp: float | None = None  # (b): first gratuitous ARP from the survivor seen on the switch
    failback_gap: float | None = None  # (d): longest gap, restore window
    failback_censored: bool = False
    failback_garp: float | None = None  # home's first gratuitous ARP after restore, from t_restore
    baseline_gap: float | None = None  # longest gap before the trigger: the prober's own health
    prober_late_in_gap: float = 0.0  # worst send lateness (> 1 interval) at the closing end of a measured gap
    prober_suspect: bool = False  # the prober itself was late where it matters: left out of the statistics
    sent: int = 0
    received: int = 0
    send_late_max: float = 0.0
    skipped_slots: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)  # contender's step log, relative
    pre_event: float | None = None  # (h): when the other link event was delivered, from the trigger (< 0)
    pre_event_wait: float | None = None  # (h): how long the kernel held that event (flip -> delivered)
    note: str = ""


def _gaps(times: list[float]) -> list[tuple[float, float]]:
    return [(a, b) for a, b in zip(times, times[1:])]


def _longest(gaps: list[tuple[float, float]]) -> tuple[float, float] | None:
    return max(gaps, key=lambda g: g[1] - g[0]) if gaps else None


def _restored(agent_first: float | None, prober: Prober) -> bool:
    if agent_first is None:
        return False
    last = prober.status().get("last_reply")
    return last is not None and float(last) > agent_first


def run_cycles(
    contender: Contender,
    lab: BenchLab,
    spec: MoveSpec,
    trials: int,
    *,
    trigger: str = "carrier",
    deadline: float,
    failback: bool = True,
    stop_if_first_censored: bool = False,
    log: Any = None,
) -> list[CycleResult]:
    """``trials`` failure/restore cycles (stops early at ``deadline``, monotonic)."""
    assert lab.agent is not None
    agent = lab.agent
    port = lab.lab.peer_of(spec.home)
    target = spec.target
    surv_mac = contender.survivor_mac(lab)
    home_mac = contender.home_mac(lab)
    out: list[CycleResult] = []
    for i in range(trials):
        if time.monotonic() > deadline:
            if log:
                log(f"  {contender.name}: time budget reached after {i} trials")
            break
        if not wait_until(lambda: contender.home_ok() and contender.idle(), contender.failback_timeout + 5, poll=0.05):
            raise RuntimeError(f"{contender.name}: addresses not back home (or still moving) before trial {i}")
        window = LEAD_S + contender.failover_timeout + contender.failback_timeout + 4 * TAIL_S + 5
        prober = lab.start_prober(target, interval=PROBE_INTERVAL, duration=window)
        try:
            if not wait_until(lambda: int(prober.status()["received"]) > 20, 3.0):
                lab.run(lab.lab.client, "ip", "neigh", "flush", "dev", lab.lab.client_nic, check=False)
                if not wait_until(lambda: int(prober.status()["received"]) > 20, 3.0):
                    raise RuntimeError(f"{contender.name}: client cannot reach {target} before trial {i}")
            time.sleep(LEAD_S)
            agent.arm()
            pre: dict[str, Any] | None = None
            if trigger == "carrier" and spec.batched_carrier:
                pre = agent.down_after_linkwatch(port, PRE_EVENT_S)
                t_fail = float(pre["t0"])
            elif trigger == "carrier":
                t_fail = agent.down(port)
            else:
                t_fail = time.monotonic()
                lab.lab.detach_nic(spec.home)
            res = CycleResult(trial=i, trigger=trigger, t_fail=t_fail)
            if pre is not None:
                res.pre_event = float(pre["t_lw"]) - t_fail
                res.pre_event_wait = float(pre["t_lw"]) - float(pre["t_pre"])
                if not pre["lw_ok"]:
                    res.note = "the other link event was not seen within 3 s"
            ok = wait_until(lambda: _restored(agent.first(target, surv_mac), prober), contender.failover_timeout)
            t_garp = agent.first(target, surv_mac)
            res.garp = None if t_garp is None else t_garp - t_fail
            res.outage_censored = not ok
            time.sleep(TAIL_S)
            res.steps = [
                {"name": s.name, "t": s.t - t_fail, "detail": s.detail} for s in contender.steps(t_fail).steps
            ]
            agent.arm()
            if trigger == "carrier":
                t_restore = agent.up(port)
            else:
                t_restore = time.monotonic()
                lab.lab.attach_nic(spec.home)
            res.t_restore = t_restore
            if failback and res.outage_censored and res.garp is None:
                # Nothing moved (no announcement from the survivor): there is nothing to fail back.
                wait_until(lambda: (lambda r: r is not None and float(r) > t_restore)(prober.status().get("last_reply")),
                           contender.failback_timeout)
                res.note = "no failover: failback not measured"
            elif failback:
                okb = wait_until(lambda: _restored(agent.first(target, home_mac), prober), contender.failback_timeout)
                res.failback_censored = not okb
                t_hg = agent.first(target, home_mac)
                res.failback_garp = None if t_hg is None else t_hg - t_restore
                if not okb:  # the client may keep a stale neighbour entry: do not let it spill into the next trial
                    res.note = "failback not complete within the window"
            time.sleep(TAIL_S)
            data = prober.finish()
        finally:
            prober.close()
        _fill(res, data, t_fail, t_restore, failback)
        out.append(res)
        if log:
            log(f"  {contender.name} {trigger} trial {i}: outage {_ms(res.outage)}{' (censored)' if res.outage_censored else ''}"
                f", garp {_ms(res.garp)}, failback gap {_ms(res.failback_gap)}")
        if res.failback_censored:
            lab.run(lab.lab.client, "ip", "neigh", "flush", "dev", lab.lab.client_nic, check=False)
        if stop_if_first_censored and i == 0 and res.outage_censored:
            break  # no failover at all: more trials would only say the same
    return out


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.1f} ms"


def _fill(res: CycleResult, data: dict[str, Any], t_fail: float, t_restore: float, failback: bool) -> None:
    times = sorted(float(t) for _, t in data.get("replies", []))
    res.sent = int(data["sent"])
    res.received = int(data["received"])
    res.send_late_max = float(data["send_late_max"])
    res.skipped_slots = int(data["skipped_slots"])
    before = [t for t in times if t <= t_fail]
    res.baseline_gap = (lambda g: None if g is None else g[1] - g[0])(_longest(_gaps(before)))
    # Failure window: gaps that end after the trigger and before the restore. When the traffic did not
    # come back before the restore, the window's end closes the last gap: a lower bound, flagged censored.
    win = [t for t in times if t < t_restore]
    fail_gaps = [g for g in _gaps(win) if g[1] > t_fail]
    if res.outage_censored or not [t for t in win if t > t_fail]:
        res.outage_censored = True
        last = win[-1] if win else t_fail
        fail_gaps.append((last, t_restore))
    g = _longest(fail_gaps)
    assert g is not None
    res.outage, res.gap_from = g[1] - g[0], g[0] - t_fail
    res.gap_to = None if res.outage_censored and g[1] == t_restore else g[1] - t_fail
    # The prober's own health where it matters: a probe sent late just before a gap closed would
    # lengthen the gap by its lateness. Late sends elsewhere (e.g. mid-outage) do not matter.
    late = [(float(d), float(x)) for d, x in data.get("late_events", [])]

    def late_near(end: float | None) -> float:
        if end is None:
            return 0.0
        return max((x for d, x in late if end - 0.005 <= d + x <= end + 0.0005), default=0.0)

    ends = [t_fail + res.gap_to] if res.gap_to is not None else []
    if failback:
        back = [t for t in times if t >= t_restore]
        # After a failover that never restored the traffic, the gap is measured from the restore.
        last_before = [t_restore] if res.outage_censored else [t for t in times if t < t_restore][-1:]
        if not back:
            res.failback_censored = True
            res.failback_gap = float(data["t_end"]) - (last_before[0] if last_before else t_restore)
        else:
            g = _longest(_gaps(last_before + back))
            res.failback_gap = None if g is None else g[1] - g[0]
            if g is not None:
                ends.append(g[1])
    res.prober_late_in_gap = max((late_near(e) for e in ends), default=0.0)
    res.prober_suspect = res.prober_late_in_gap > 0.002


# --------------------------------------------------------------------------- (e) scale


@dataclass
class ScaleResult:
    n: int
    trial: int
    latency: float | None  # trigger -> max(last first-announcement seen on the switch, contender's "done")
    announced: int
    on_survivor: int
    routes_on_survivor: int
    done_step: float | None = None  # the contender's own "done" step, from the trigger
    last_announce: float | None = None  # the last address's first announcement, from the trigger
    note: str = ""


def count_on(lab: BenchLab, dev: str, spec: MoveSpec) -> int:
    """How many of ``spec``'s addresses are on ``dev``."""
    out = lab.run(lab.gateway, "ip", "-4", "-o", "addr", "show", "dev", dev).stdout
    wanted = set(spec.addresses)
    return sum(1 for line in out.splitlines() if len(f := line.split()) > 3 and f[3] in wanted)


def count_routes(lab: BenchLab, dev: str, prefix: str) -> int:
    out = lab.run(lab.gateway, "ip", "-4", "route", "show", "dev", dev).stdout
    return sum(1 for line in out.splitlines() if line.startswith(prefix))


def _batch_force(lab: BenchLab, lines: list[str]) -> float:
    """``ip -force -batch``: time of the whole batch, continuing past errors."""
    import subprocess

    script = "".join(line + "\n" for line in lines)
    t0 = time.monotonic()
    subprocess.run(["ip", "-n", lab.gateway, "-force", "-batch", "-"], input=script, capture_output=True, text=True,
                   timeout=180)
    return time.monotonic() - t0


def run_scale(
    contender: Contender, lab: BenchLab, spec: MoveSpec, trials: int, *, timeout: float, deadline: float,
    log: Any = None,
) -> list[ScaleResult]:
    """Carrier loss with N addresses: time until the last one is on the survivor and announced.

    Each trial waits at most ``timeout`` and never past ``deadline`` (monotonic); a trial that
    runs out of time ends the series (the next would not do better)."""
    assert lab.agent is not None
    agent = lab.agent
    port = lab.lab.peer_of(spec.home)
    mac = contender.survivor_mac(lab)
    n = len(spec.addresses)
    out: list[ScaleResult] = []
    for i in range(trials):
        left = deadline - time.monotonic()
        if i > 0 and out[-1].latency is not None and left < out[-1].latency + 1.0:
            if log:
                log(f"  {contender.name} N={n}: time budget reached after {i} trials")
            break
        if count_on(lab, spec.home, spec) != n:
            reset_scale_force(lab, spec)
        agent.arm()
        t0 = agent.down(port)
        limit = max(2.0, min(timeout, deadline - time.monotonic()))
        ok = wait_until(lambda: agent.count(mac) >= n, limit, poll=0.05 if n < 1000 else 0.25)
        garps = agent.garps(mac)
        wanted = [garps[ip] for ip in spec.ips if ip in garps]
        res = ScaleResult(n=n, trial=i, latency=None, announced=len(wanted), on_survivor=0, routes_on_survivor=0)
        res.last_announce = (max(wanted) - t0) if wanted else None
        # The contender's own end of the job (the shell's routes go first, ipshift's last).
        done = [s for s in contender.steps(t0).steps if s.name == "done"]
        if not done:
            wait_until(lambda: any(s.name == "done" for s in contender.steps(t0).steps), 10.0, poll=0.1)
            done = [s for s in contender.steps(t0).steps if s.name == "done"]
        if done:
            res.done_step = done[0].t - t0
        res.on_survivor = count_on(lab, spec.survivor, spec)
        res.routes_on_survivor = count_routes(lab, spec.survivor, "198.19.")
        if not ok:
            res.note = f"only {len(wanted)} of {n} announced within {limit:.0f} s"
        complete = ok and res.on_survivor == n and res.routes_on_survivor == len(spec.routes)
        if complete and res.last_announce is not None:
            # Every address moved and announced, every route moved: the later of the two ends.
            res.latency = max(res.last_announce, res.done_step or 0.0)
        if res.on_survivor != n or res.routes_on_survivor != len(spec.routes):
            res.note += (f" state after: {res.on_survivor}/{n} addresses, "
                         f"{res.routes_on_survivor}/{len(spec.routes)} routes on {spec.survivor}")
        out.append(res)
        if log:
            log(f"  {contender.name} N={n} trial {i}: {_ms(res.latency)} ({res.announced} announced){' ' + res.note if res.note else ''}")
        if not ok:
            break  # out of time: the contender is still at work; the lab goes away with it
        # Every trial starts from scratch: the contender is restarted around the reset, so no
        # state it kept from the previous trial (e.g. "routes already moved") can skew the next.
        if i + 1 < trials:
            contender.stop()
            agent.up(port)
            time.sleep(0.1)
            reset_scale_force(lab, spec)
            contender.start()
            if not contender.ready(15.0 + n / 100):
                raise RuntimeError(f"{contender.name} not ready again after trial {i}")
            time.sleep(0.2)
    return out


def reset_scale_force(lab: BenchLab, spec: MoveSpec) -> None:
    lines = [f"addr del {a} dev {spec.survivor}" for a in spec.addresses]
    lines += [f"route del {r} dev {spec.survivor}" for r in spec.routes]
    _batch_force(lab, lines)
    lines = [f"addr add {a} dev {spec.home}" for a in reversed(spec.addresses)]  # as the lab does: primary first
    lines += [f"route add {r} dev {spec.home}" for r in spec.routes]
    _batch_force(lab, lines)


def run_floor(lab: BenchLab, spec: MoveSpec, trials: int, *, log: Any = None) -> list[float]:
    """The kernel floor: one ``ip -batch`` with the same route and address deletes and adds, after carrier loss."""
    assert lab.agent is not None
    port = lab.lab.peer_of(spec.home)
    lines = []
    for r in spec.routes:
        lines += [f"route del {r} dev {spec.home}", f"route add {r} dev {spec.survivor}"]
    for a in spec.addresses:
        lines += [f"addr del {a} dev {spec.home}", f"addr add {a} dev {spec.survivor}"]
    out: list[float] = []
    for i in range(trials):
        lab.agent.down(port)
        dt = lab.batch(lab.gateway, lines)
        n_on = count_on(lab, spec.survivor, spec)
        if n_on != len(spec.addresses):
            raise RuntimeError(f"kernel floor: {n_on} of {len(spec.addresses)} addresses moved")
        out.append(dt)
        lab.agent.up(port)
        reset_scale_force(lab, spec)
        if log and i == 0:
            log(f"  floor N={len(spec.addresses)}: {_ms(dt)}")
    return out


# --------------------------------------------------------------------------- (f) idle cost


def _proc_sample(pids: list[int]) -> dict[str, float]:
    """CPU time (ns, from each thread's schedstat), RSS and context switches of ``pids``."""
    cpu_ns = 0
    rss_kb = 0
    hwm_kb = 0  # peak RSS
    switches = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss_kb += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm_kb += int(line.split()[1])
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    cpu_ns += int(f.read().split()[0])
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                            switches += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return {"cpu_ns": cpu_ns, "rss_kb": rss_kb, "hwm_kb": hwm_kb, "switches": switches, "t": time.monotonic()}


def run_idle(contender: Contender, duration: float) -> dict[str, Any]:
    """CPU %, RSS and wake-ups per second of the contender's processes over ``duration`` s of quiet."""
    time.sleep(1.0)  # let start-up settle
    pids = contender.pids()
    if not pids:
        return {"status": "no processes"}
    a = _proc_sample(pids)
    time.sleep(duration)
    b = _proc_sample(pids)
    dt = b["t"] - a["t"]
    return {
        "status": "ok",
        "duration_s": dt,
        "processes": len(pids),
        "cpu_percent": 100.0 * (b["cpu_ns"] - a["cpu_ns"]) / 1e9 / dt,
        "rss_mib": b["rss_kb"] / 1024,
        "wakeups_per_s": (b["switches"] - a["switches"]) / dt,  # context switches: each wake-up is one
    }


def run_rss_after_moves(contender: Contender, lab: BenchLab, spec: MoveSpec, *, timeout: float,
                        settle_s: float = 2.0, sample_s: float = 5.0) -> dict[str, Any]:
    """(f): one failover and one failback of every address of ``spec`` (failback auto), then RSS
    and an idle sample. Each direction waits until every address is where it should be."""
    assert lab.agent is not None
    agent = lab.agent
    port = lab.lab.peer_of(spec.home)
    n = len(spec.addresses)
    time.sleep(1.0)
    pids = contender.pids()
    if not pids:
        return {"status": "no processes"}
    before = _proc_sample(pids)
    agent.arm()
    t0 = agent.down(port)
    if not wait_until(lambda: count_on(lab, spec.survivor, spec) == n, timeout, poll=0.25):
        return {"status": f"failover incomplete after {timeout:.0f} s: {count_on(lab, spec.survivor, spec)}/{n}"}
    t_over = time.monotonic() - t0
    moved = _proc_sample(pids)
    agent.up(port)
    t1 = time.monotonic()
    if not wait_until(lambda: count_on(lab, spec.home, spec) == n and contender.home_ok(), timeout, poll=0.25):
        return {"status": f"failback incomplete after {timeout:.0f} s: {count_on(lab, spec.home, spec)}/{n} home"}
    t_back = time.monotonic() - t1
    time.sleep(settle_s)
    a = _proc_sample(pids)
    time.sleep(sample_s)
    b = _proc_sample(pids)
    dt = b["t"] - a["t"]
    return {
        "status": "ok", "addresses": n, "failover_s": t_over, "failback_s": t_back,
        "rss_mib_start": before["rss_kb"] / 1024, "rss_mib_after_failover": moved["rss_kb"] / 1024,
        "rss_mib": b["rss_kb"] / 1024, "rss_peak_mib": b["hwm_kb"] / 1024, "duration_s": dt, "processes": len(pids),
        "cpu_percent": 100.0 * (b["cpu_ns"] - a["cpu_ns"]) / 1e9 / dt,
        "wakeups_per_s": (b["switches"] - a["switches"]) / dt,
    }


def as_dicts(items: list[Any]) -> list[dict[str, Any]]:
    return [asdict(x) for x in items]
