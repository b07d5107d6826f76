"""Helpers for the randomized fault test (tests/lab/test_chaos.py): the seeded schedule, the
daemon's configuration, and bounded readers of the lab's kernel and of the client's reach.

Theory of operation
-------------------
The whole schedule is drawn up front from one ``random.Random(seed)`` by :func:`plan_schedule`,
against a *model* of what the harness did (which NICs it failed or detached, whether the daemon
runs), never against what the daemon did: the same seed and budget give the same events, in the
same order, with the same gaps, on every machine. The schedule is a list of :class:`Event` and
:class:`Quiet` items; a quiet point comes after every burst of events. The budget is virtual
time (the planned gaps and quiet waits plus an estimate of what each restart and check costs),
so the event count does not depend on the machine either; the wall clock is bounded separately
by the test.

Everything here reads the lab's namespaces (never the root one); the only packets sent are the
client's bounded pings (``ping -c 1 -W 1``, one per address, each process waited for and killed
by its pid if it overstays).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ipshift.config import parse_duration
from ipshift.lab import Lab

NICS = ("eth0", "eth1", "eth2")
CLIENT = "192.0.2.100"
# each NIC's own (unmanaged) address, the one its path probes are sent from: the lab's default
BASE = {"eth0": ["192.0.2.10/24"], "eth1": ["192.0.2.11/24"], "eth2": ["192.0.2.12/24"]}
# the configured addresses: two per NIC, and one with ``mac: move`` (home eth0)
ADDRESSES: dict[str, list[Any]] = {
    "eth0": ["192.0.2.20/24", "192.0.2.21/24", {"address": "192.0.2.50/24", "mac": "move"}],
    "eth1": ["192.0.2.30/24", "192.0.2.31/24"],
    "eth2": ["192.0.2.40/24", "192.0.2.41/24"],
}
ANNOUNCE_VARIANTS = (3, 2)  # announce.count; a SIGHUP switches to the other one (same addresses)


@dataclass(frozen=True)
class Configured:
    address: str  # "192.0.2.20/24"
    home: str
    mac_move: bool

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


def configured() -> list[Configured]:
    out = []
    for nic, addrs in ADDRESSES.items():
        for a in addrs:
            if isinstance(a, str):
                out.append(Configured(a, nic, False))
            else:
                out.append(Configured(a["address"], nic, a.get("mac") == "move"))
    return out


def daemon_config(variant: int = 0) -> dict[str, Any]:
    return {
        "interfaces": {nic: {"addresses": list(addrs)} for nic, addrs in ADDRESSES.items()},
        "detect": {"link": True, "probe": {"targets": [CLIENT], "interval": "30ms", "misses": 3, "rises": 2}},
        "announce": {"count": ANNOUNCE_VARIANTS[variant], "interval": "50ms", "verify_rounds": 5},
        "failback": {"mode": "auto", "delay": "300ms", "flap_count": 4, "flap_window": "1s"},
        "conflict_check": {"enabled": True, "timeout": "30ms"},
    }


def quiet_seconds(cfg: Mapping[str, Any], margin: float = 1.0) -> float:
    """How long after the last event everything must have settled, from the configuration.

    A path verdict changes at most ``(max(misses, rises) + 1) x interval + timeout`` after the
    event that caused it; a NIC that came back waits ``failback.delay``, and one held down for
    flapping first waits a whole ``flap_window`` since its last change; each move of a failover
    and of the failback after it may wait ``conflict_check.timeout`` per candidate NIC. Plus
    ``margin`` for the plans themselves and a loaded 2-core machine."""
    probe = cfg["detect"]["probe"]
    interval = parse_duration(probe["interval"])
    timeout = parse_duration(probe["timeout"]) if "timeout" in probe else interval / 2
    path = (max(int(probe["misses"]), int(probe["rises"])) + 1) * interval + timeout
    fb = cfg["failback"]
    cc = cfg["conflict_check"]
    conflict = parse_duration(cc["timeout"]) * len(cfg["interfaces"]) * 2 if cc.get("enabled", True) else 0.0
    return path + parse_duration(fb["flap_window"]) + parse_duration(fb["delay"]) + conflict + margin


def write_config_atomically(path: Path, cfg: Mapping[str, Any]) -> None:
    """A reload never reads a half-written file: temp file, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(dict(cfg)))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Event:
    gap: float  # seconds to wait after the previous item before this one
    kind: str  # fail restore detach attach kill restart hup
    nic: str | None = None
    kill_after: float | None = None  # a NIC event followed by SIGKILL this many seconds later
    variant: int | None = None  # hup: the announce variant written before the signal
    at: float = 0.0  # planned virtual time (informational)

    def describe(self) -> str:
        if self.kind in ("kill", "restart"):
            return f"{self.kind} daemon"
        if self.kind == "hup":
            return f"SIGHUP (announce.count={ANNOUNCE_VARIANTS[self.variant or 0]})"
        text = f"{self.kind} {self.nic}"
        if self.kill_after is not None:
            text += f" + SIGKILL after {self.kill_after * 1000:.0f} ms"
        return text


@dataclass(frozen=True)
class Quiet:
    index: int
    all_down: bool  # the model says no NIC is healthy at this point
    at: float = 0.0


@dataclass
class Model:
    """What the harness has done so far (the schedule's state, never the daemon's)."""

    failed: set[str] = field(default_factory=set)
    detached: set[str] = field(default_factory=set)
    alive: bool = True
    variant: int = 0

    def healthy(self) -> list[str]:
        return [n for n in NICS if n not in self.failed and n not in self.detached]

    def apply(self, ev: Event) -> None:
        if ev.kind == "fail":
            self.failed.add(str(ev.nic))
        elif ev.kind == "restore":
            self.failed.discard(str(ev.nic))
        elif ev.kind == "detach":
            self.detached.add(str(ev.nic))
        elif ev.kind == "attach":
            self.detached.discard(str(ev.nic))
        elif ev.kind == "restart":
            self.alive = True
        elif ev.kind == "hup":
            self.variant = int(ev.variant or 0)
        if ev.kind == "kill" or ev.kill_after is not None:
            self.alive = False


# virtual seconds an item costs beyond its gap (used for the budget only)
COST = {"restart": 0.8, "kill": 0.05, "hup": 0.01, "quiet_check": 0.4, "all_down_window": 1.0}


def _gap(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.35:
        return rng.uniform(0.0, 0.05)  # lands inside the move the previous event started
    if r < 0.75:
        return rng.uniform(0.05, 0.5)
    return rng.uniform(0.5, 1.5)


def _nic_toggles(m: Model, *, only_repairs: bool = False) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    for nic in NICS:
        if nic in m.failed:
            out.append(("restore", nic, 3.0))
        elif not only_repairs:
            out.append(("fail", nic, 1.0))
        if nic in m.detached:
            out.append(("attach", nic, 3.0))
        elif not only_repairs:
            out.append(("detach", nic, 1.0))
    return out


def _choose(rng: random.Random, m: Model, gap: float) -> Event:
    all_down = not m.healthy()
    toggles = _nic_toggles(m, only_repairs=all_down)  # every NIC down: repair at once, not for long
    cands: list[tuple[str, str | None, float]] = [(k, n, w) for k, n, w in toggles]
    if m.alive:
        cands += [("kill", None, 0.3), ("fault_kill", None, 0.8), ("hup", None, 0.4)]
    else:
        cands += [("restart", None, 2.0)]
    kind, nic, _ = rng.choices(cands, weights=[w for _, _, w in cands])[0]
    if kind == "fault_kill":
        k, n, _ = rng.choices(toggles, weights=[w for _, _, w in toggles])[0]
        return Event(gap, k, n, kill_after=rng.uniform(0.0, 0.05))
    if kind == "hup":
        return Event(gap, "hup", variant=1 - m.variant)
    return Event(gap, kind, nic)


def plan_schedule(seed: int, budget: float, quiet: float, max_events: int) -> list[Event | Quiet]:
    """Bursts of random events, each followed by a quiet point, until ``budget`` virtual seconds
    or ``max_events`` events; then a last burst that repairs everything, and a last quiet point."""
    rng = random.Random(seed)
    m = Model()
    items: list[Event | Quiet] = []
    t = 0.0
    events = 0
    qp = 0

    def add(ev: Event) -> None:
        nonlocal t, events
        t += ev.gap + COST.get(ev.kind, 0.01) + (ev.kill_after or 0.0)
        items.append(Event(ev.gap, ev.kind, ev.nic, ev.kill_after, ev.variant, at=round(t, 3)))
        m.apply(ev)
        events += 1

    def add_quiet() -> None:
        nonlocal t, qp
        qp += 1
        all_down = not m.healthy()
        t += quiet + COST["quiet_check"] + (COST["all_down_window"] if all_down else 0.0)
        items.append(Quiet(qp, all_down, at=round(t, 3)))

    def repair_all() -> None:
        for nic in NICS:
            if nic in m.failed:
                add(Event(rng.uniform(0.0, 0.3), "restore", nic))
            if nic in m.detached:
                add(Event(rng.uniform(0.0, 0.3), "attach", nic))

    while t < budget and events < max_events:
        ending = rng.choices(["random", "heal", "all_down"], weights=[0.63, 0.25, 0.12])[0]
        for _ in range(rng.randint(1, 8)):
            if events >= max_events:
                break
            add(_choose(rng, m, _gap(rng)))
        restart_first = rng.random() < 0.5
        if not m.alive and restart_first:
            add(Event(_gap(rng), "restart"))
        if ending == "heal":
            repair_all()
        elif ending == "all_down":
            for nic in m.healthy():  # every NIC down at once: the rule is "stays put"
                add(Event(rng.uniform(0.0, 0.2), rng.choice(["fail", "detach"]), nic))
        elif not m.healthy():
            nic = rng.choice(NICS)
            if nic in m.failed:
                add(Event(_gap(rng), "restore", nic))
            if nic in m.detached:
                add(Event(_gap(rng), "attach", nic))
        if not m.alive:
            add(Event(_gap(rng), "restart"))
        add_quiet()
    before = events
    repair_all()
    if not m.alive:
        add(Event(_gap(rng), "restart"))
    if events > before:  # a last quiet point with every NIC healthy (unless the last one was)
        add_quiet()
    return items


# --------------------------------------------------------------------------- the kernel


@dataclass(frozen=True)
class Device:
    name: str
    kind: str | None  # linkinfo kind: veth, macvlan, vlan, ... (None: none given)
    parent: str | None  # the lower device's name, for stacked devices in the same namespace
    mac: str | None
    addresses: tuple[str, ...]  # global addresses, "ip/prefix"


def gateway_devices(lab: Lab) -> dict[str, Device]:
    """Every device of the gateway namespace with its global addresses (one ``ip`` call)."""
    out = lab.run(lab.gateway, "ip", "-j", "-d", "addr", "show", timeout=10).stdout
    data = json.loads(out) if out.strip() else []
    devs: dict[str, Device] = {}
    for d in data:
        info = d.get("linkinfo") or {}
        addrs = tuple(f"{a['local']}/{a['prefixlen']}" for a in d.get("addr_info", []) if a.get("scope") == "global")
        devs[d["ifname"]] = Device(d["ifname"], info.get("info_kind"), d.get("link"), d.get("address"), addrs)
    return devs


def nic_under(devs: Mapping[str, Device], name: str, nics: Sequence[str] = NICS) -> str | None:
    """The configured NIC ``name`` is, or is stacked on (macvlan/VLAN), else None."""
    seen = 0
    while name not in nics:
        dev = devs.get(name)
        if dev is None or dev.parent is None or seen > 4:
            return None
        name, seen = dev.parent, seen + 1
    return name


def ping_all(lab: Lab, ips: Sequence[str], wait: float = 1.0) -> dict[str, tuple[int, str]]:
    """One bounded ping from the client to each of ``ips``, in parallel: ip -> (exit status, output)."""
    procs = {ip: subprocess.Popen(["ip", "netns", "exec", lab.client, "ping", "-n", "-c", "1", "-W", f"{wait:g}", ip],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for ip in ips}
    out: dict[str, tuple[int, str]] = {}
    for ip, p in procs.items():
        try:
            text, _ = p.communicate(timeout=wait + 3)
            out[ip] = (p.returncode, text)
        except subprocess.TimeoutExpired:
            p.kill()  # our own child, by its pid
            text, _ = p.communicate(timeout=5)
            out[ip] = (-1, "ping overstayed and was killed: " + (text or ""))
    return out


def client_neighbours(lab: Lab) -> dict[str, str]:
    """The client's neighbour table (read only): ip -> 'lladdr state'."""
    out = lab.run(lab.client, "ip", "-j", "neigh", "show", timeout=10).stdout
    data = json.loads(out) if out.strip() else []
    return {e["dst"]: f"{e.get('lladdr', '-')} {','.join(e.get('state', []))}" for e in data}


def reply_route(lab: Lab, src: str, dst: str = CLIENT) -> str:
    """The device the gateway's replies from ``src`` to ``dst`` leave by (``ip route get``, read only)."""
    r = lab.run(lab.gateway, "ip", "-j", "route", "get", dst, "from", src, check=False, timeout=10)
    try:
        data = json.loads(r.stdout) if r.stdout.strip() else []
    except ValueError:
        data = []
    return str(data[0].get("dev")) if data else (r.stderr.strip() or "no route")
