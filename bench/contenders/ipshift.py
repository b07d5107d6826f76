"""ipshift itself: ``ipshift run -c <generated yaml> --netns <gateway>``.

What it uses from ipshift (see bench/README.md, "The ipshift contender"):

* ``ipshift run -c FILE --netns NS --socket SOCK`` runs in the foreground until
  SIGTERM; the bench points ``state_dir`` and the control socket into its own
  temporary directory, so nothing is written to /run or /var/lib;
* ``ipshift status --netns NS --socket SOCK --json`` exits 0 once the daemon
  listens (that is ``ready()``); its ``failovers`` list carries the records of
  the moves, which the bench turns into the timeline: ``t0`` (CLOCK_MONOTONIC,
  when the trigger reached the daemon: "detect"), per move the ``steps``
  (``op``, ``at_ms`` and ``ms`` from ``t0``) and ``first_announce_ms``, and
  ``total_ms``.

Until ``ipshift run --help`` and ``ipshift status --help`` both succeed and
take ``--socket``, the contender reports itself unavailable ("not available"
with the reason in the table) and the rest of the run goes on. Scenario (c)
adds ``detect.probe`` (10 ms x 3); without a probe detector there is no
failover and the table says "not yet".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchlab import REPO, BenchLab, wait_until
from contenders import (BUSY_HOME, BUSY_SURVIVOR, HOME_BASE, PROBE_TARGET, SCALE_SURVIVOR_BASE, SURVIVOR_BASE,
                        SURVIVOR_BASE6, MoveSpec, Step, Timeline, busy_addresses)
from contenders.base import SingleGatewayMover

IPSHIFT = REPO / ".venv" / "bin" / "ipshift"
POLLER = REPO / "bench" / "status_poller.py"
# Scenario (i): what the daemon keeps at most (records.History: 50,000 moves) and a poller's bounds.
SEED_RECORDS, SEED_MOVES = 20, 2500
POLL_SECONDS, POLL_MAX = 600, 100_000
WARM_S = 30.0  # how long a trial waits for the daemon's first background conflict sweep


def seed_history(path: Path, records: int = SEED_RECORDS, moves: int = SEED_MOVES) -> None:
    """A history file as an earlier run of the daemon leaves it: ``records`` failovers of ``moves``
    addresses each (198.18.0.0/15, with their steps). The fields are those every version of ipshift
    since the first history file reads, so that one bench compares versions."""
    def move(k: int) -> dict[str, Any]:
        a = f"198.18.{k // 250}.{k % 250 + 1}/15"
        steps = [{"op": op, "text": f"{op} {a}", "at_ms": 1.0, "ms": 0.5, "ok": True, "error": ""}
                 for op in ("DelAddress", "AddAddress", "Announce", "DelNeighbours", "FlushNeighbours",
                            "FlushRouteCache")]
        return {"address": a, "source": "eth0", "target": "eth1", "device": "eth1", "ok": True, "error": "",
                "first_announce_ms": 1.5, "steps": steps, "verified": "", "confirmed_ms": None}

    hist = [{"id": i + 1, "kind": "failover", "nic": "eth0", "trigger": "carrier lost", "started": 0.0, "t0": 0.0,
             "total_ms": 100.0, "refused": [], "nic_steps": [], "moves": [move(k) for k in range(moves)]}
            for i in range(records)]
    path.write_text(json.dumps({"version": 1, "history": hist}))


# ipshift-nocheck, like for like: the shell baseline and IPaddr2 do no RFC 5227 conflict probe
# before a move. The `ipshift` contender leaves conflict_check out: ipshift's default (enabled).
NO_CONFLICT_CHECK: dict[str, Any] = {"enabled": False}
# What ipshift-nocheck has always set explicitly (today the same as ipshift's defaults).
BENCH_ANNOUNCE: dict[str, Any] = {"count": 3, "interval": "200ms"}


def default_conflict_check() -> str:
    """ipshift's own defaults for conflict_check, read from the code under test (ipshift.config)."""
    try:
        from ipshift.config import ConflictConfig

        fields = ConflictConfig().model_dump()
    except Exception as exc:  # an ipshift whose config cannot be imported: say so instead
        return f"conflict_check defaults unknown ({exc})"

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v * 1e3:g} ms" if v < 1 else f"{v:g} s"
        return str(v)

    return "conflict_check defaults: " + ", ".join(f"{k}={fmt(v)}" for k, v in fields.items())


def build_config(spec: MoveSpec, workdir: Path, *, conflict_check: dict[str, Any] | None = None,
                 announce: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ipshift configuration equivalent to what the other contenders do.

    ``conflict_check`` / ``announce``: None leaves the key out (ipshift's default). With routes,
    the home NIC's base address is listed too (ipshift requires a route's gateway to be on a
    configured subnet of its NIC), so ipshift moves one address more.
    """
    addrs = list(spec.addresses)
    if spec.routes:
        addrs.insert(0, HOME_BASE)
    home: dict[str, Any] = {"addresses": addrs, "backups": [spec.survivor]}
    survivor = [SURVIVOR_BASE] + ([SCALE_SURVIVOR_BASE] if any(a.startswith("198.18.") for a in spec.addresses) else [])
    if spec.ipv6:
        survivor.append(SURVIVOR_BASE6)
    if spec.routes:
        routes = []
        for r in spec.routes:
            dest, _, via = r.partition(" via ")
            routes.append({"to": dest, "via": via} if via else {"to": dest})
        home["routes"] = routes
    interfaces: dict[str, Any] = {spec.home: home, spec.survivor: {"addresses": survivor}}
    if spec.busy:  # (a''): the other pair's addresses, configured like the scale ones
        interfaces[BUSY_HOME] = {"addresses": list(busy_addresses(spec.busy)), "backups": [BUSY_SURVIVOR]}
        interfaces[BUSY_SURVIVOR] = {"addresses": [SCALE_SURVIVOR_BASE]}
    cfg: dict[str, Any] = {
        "interfaces": interfaces,
        "detect": {"link": True},
        # Trials fail and restore the NIC every half second; ipshift's flap damping (default 4 changes
        # in 10 s) would hold failback after the second trial. The shell baseline has no damping either.
        "failback": {"mode": "auto" if spec.failback else "manual", "delay": "0s", "flap_count": 1000,
                     "flap_window": "1s"},
        "state_dir": str(workdir / "state"),
        "socket": str(workdir / "ipshift.sock"),
    }
    if announce is not None:
        cfg["announce"] = dict(announce)
    if conflict_check is not None:
        cfg["conflict_check"] = dict(conflict_check)
    if spec.probe:
        cfg["detect"]["probe"] = {"targets": [PROBE_TARGET], "interval": spec.probe_interval, "misses": 3}
    if spec.carrier_poll:
        cfg["detect"]["carrier_poll"] = spec.carrier_poll
    return cfg


def spec_note(spec: MoveSpec) -> str:
    """The keys a scenario adds to a contender's configuration, in words."""
    extra = []
    if spec.probe:
        extra.append(f"detect.probe {{targets: [{PROBE_TARGET}], interval: {spec.probe_interval}, misses: 3}}")
    if spec.carrier_poll:
        extra.append(f"detect.carrier_poll: {spec.carrier_poll}")
    if spec.busy:
        extra.append(f"+ {BUSY_HOME} with {spec.busy:,} addresses (backups: [{BUSY_SURVIVOR}])")
    return "; ".join(extra)


class NotSupported(RuntimeError):
    """This ipshift does not know a configuration key the scenario needs (yet)."""


class IpshiftContender(SingleGatewayMover):
    """ipshift with its DEFAULT configuration for everything the bench does not need to set.

    The bench must set: the interfaces (addresses, routes, backups), ``detect.link``, failback
    without delay or flap damping (the trials flap the NIC every half second), ``state_dir`` and
    ``socket`` in its temporary directory; the scenario may add ``detect.probe``,
    ``detect.carrier_poll``. ``conflict_check`` and ``announce`` are left out: ipshift's defaults.
    """

    name = "ipshift"
    label = "ipshift (defaults: conflict check on)"
    conflict_check: dict[str, Any] | None = None
    announce: dict[str, Any] | None = None
    failover_timeout = 3.0
    failback_timeout = 5.0
    # Scenario (c) runs with `detect.probe` (10 ms x 3); an ipshift without a probe detector does not
    # fail over within the window, and the table says "not yet".
    path_detection: str | None = None
    no_path_detection_note = "no client traffic back within the window in the first trial (series stopped)"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.config = self.workdir / "ipshift.yaml"
        self.socket = self.workdir / "ipshift.sock"

    def unavailable(self) -> str | None:
        if not IPSHIFT.exists():
            return f"{IPSHIFT} missing (make venv)"
        for sub in ("run", "status"):
            r = subprocess.run([str(IPSHIFT), sub, "--help"], capture_output=True, text=True, timeout=30)
            if r.returncode != 0 or "--socket" not in r.stdout:
                lines = (r.stderr or r.stdout).strip().splitlines()
                why = lines[-1] if lines else f"exit {r.returncode}"
                return f"`ipshift {sub} --socket` does not exist yet ({why})"
        return None

    def setup(self, lab: BenchLab, spec: MoveSpec) -> None:
        self.lab, self.spec = lab, spec
        # A fresh journal for every lab: the state of an earlier lab (other namespaces, up to 20
        # records of 10,000 moves from the scale runs) is not this gateway's, and loading it
        # inflated the idle RSS of (f) from ~50 to ~92 MiB.
        shutil.rmtree(self.workdir / "state", ignore_errors=True)
        (self.workdir / "state").mkdir()
        if spec.status_poll:
            seed_history(self.workdir / "state" / "history.json")
        cfg = build_config(spec, self.workdir, conflict_check=self.conflict_check, announce=self.announce)
        self.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        # Validate the generated file with ipshift's own checker (exit 2 = bad configuration);
        # skipped for large scale runs, where `check` itself takes minutes.
        if len(spec.addresses) > 100:
            return
        r = subprocess.run([str(IPSHIFT), "check", "-c", str(self.config), "--netns", lab.gateway, "--brief"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 2:
            why = r.stderr.strip()
            if spec.carrier_poll and "carrier_poll" in why:
                raise NotSupported("not yet: this ipshift rejects detect.carrier_poll "
                                   f"({why.splitlines()[-1].split('.yaml:', 1)[-1][:120]})")
            raise RuntimeError(f"ipshift check rejects the generated config: {why}")

    def start(self) -> None:
        assert self.lab is not None
        # `ipshift run --netns` enters the namespace itself; started from the root namespace.
        self.group.start_plain(str(IPSHIFT), "run", "-c", str(self.config), "--netns", self.lab.gateway,
                               "--socket", str(self.socket), log=self.workdir / "ipshift.log")

    def _status(self, records: int | None = None) -> dict[str, Any] | None:
        assert self.lab is not None
        last = ["--records", str(records)] if records else []
        r = subprocess.run([str(IPSHIFT), "status", "--netns", self.lab.gateway, "--socket", str(self.socket),
                            "--json", *last], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return None
        try:
            data: dict[str, Any] = json.loads(r.stdout)
        except ValueError:
            return None
        return data

    def ready(self, timeout: float = 10.0) -> bool:
        def ok() -> bool:
            status = self._status(records=1) if self.group.alive() else None
            return status is not None and bool(status.get("ready", True))

        if not wait_until(ok, timeout if self.spec is None or not self.spec.status_poll else 60.0, poll=0.1):
            return False
        # A gateway fails long after its daemon started: with the background conflict check on (the
        # default), wait until its first sweep has a finding for every (address, survivor) pair, at
        # most WARM_S (10,000 addresses at the default 100 probes/s take ~100 s: those trials run cold)
        def warm() -> bool:
            cc = (self._status(records=1) or {}).get("conflict_check") or {}
            return not cc.get("background") or bool(cc.get("swept", True))

        if not wait_until(warm, WARM_S, poll=0.2):
            print(f"  {self.name}: the background conflict sweep is not done after {WARM_S:g} s: the trial runs "
                  f"without conflict knowledge (strict probe at failure)", file=sys.stderr, flush=True)
        if self.spec is not None and self.spec.status_poll and len(self.group.procs) == 1:
            self.group.start_plain(sys.executable, str(POLLER), str(self.socket), str(POLL_SECONDS),
                                   str(POLL_MAX), log=self.workdir / "poller.log")
        return True

    def steps(self, since: float) -> Timeline:
        """The daemon's record of the first failover/failback that started at or after ``since``."""
        status = self._status(records=4)
        records = [r for r in (status or {}).get("failovers", []) if float(r.get("t0", 0)) >= since - 0.05]
        if not records:
            return Timeline(source="ipshift status --json: no record after the trigger")
        rec = records[0]
        t0 = float(rec["t0"])
        steps: list[Step] = [Step("detect", t0, f"{rec.get('kind', '')} {rec.get('nic', '')} ({rec.get('trigger', '')})")]
        for s in rec.get("nic_steps", []):
            steps.append(Step(str(s.get("op", "step")), t0 + (float(s["at_ms"]) + float(s["ms"])) / 1e3, str(s.get("text", ""))))
        # "done": the end of the last step that changes something. A probe that defends a completed move
        # (conflict_check "known: ..." or "optimistic") only listens: it delays nothing, and the record
        # ends after its wait (conflict_check.timeout); an undo it causes is a step and counts.
        done = t0 + max([float(s["at_ms"]) + float(s["ms"]) for s in rec.get("nic_steps", [])] or [0.0]) / 1e3
        for m in rec.get("moves", []):
            defended = str(m.get("conflict_check", "")).startswith(("known", "optimistic"))
            for s in m.get("steps", []):
                end = t0 + (float(s["at_ms"]) + float(s["ms"])) / 1e3
                defence = defended and s.get("op") == "CheckConflict"
                steps.append(Step("defended" if defence else str(s.get("op", "step")), end, str(m.get("address", ""))))
                if not defence:
                    done = max(done, end)
            if m.get("first_announce_ms") is not None and not any(s.get("op") == "Announce" for s in m.get("steps", [])):
                steps.append(Step("announce", t0 + float(m["first_announce_ms"]) / 1e3, str(m.get("address", ""))))
        if not rec.get("moves") and not rec.get("nic_steps"):
            done = t0 + float(rec.get("total_ms", 0.0)) / 1e3
        steps.append(Step("done", done, str(rec.get("kind", ""))))
        steps.sort(key=lambda s: s.t)
        return Timeline(steps=steps, source="ipshift status --json")

    def pids(self) -> list[int]:
        return self.group.pids(first_only=self.spec is not None and self.spec.status_poll)

    def stop(self) -> None:
        super().stop()
        keep = os.environ.get("IPSHIFT_BENCH_KEEP_LOGS", "").strip()  # a directory: each daemon log kept there
        log = self.workdir / "ipshift.log"
        if keep and log.exists():
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, Path(keep) / f"{self.name}-{time.strftime('%H%M%S')}-{os.getpid()}-{id(self.spec)}.log")
        polled = self.workdir / "poller.log"
        if polled.exists():  # scenario (i): how much the poller asked (it prints that when it ends)
            print(f"  status poller: {polled.read_text().strip().splitlines()[-1:]}", file=sys.stderr, flush=True)
            polled.unlink()

    def config_note(self, spec: MoveSpec) -> str:
        """Which ipshift configuration a row used (printed under each table, kept in the JSON)."""
        base = f"defaults ({default_conflict_check()}; announce defaults)"
        extra = spec_note(spec)
        return base + (f"; {extra}" if extra else "")


class IpshiftNocheckContender(IpshiftContender):
    """ipshift like for like with the shell baseline: no RFC 5227 conflict probe before a move."""

    name = "ipshift-nocheck"
    label = "ipshift-nocheck (conflict check off)"
    conflict_check = NO_CONFLICT_CHECK
    announce = BENCH_ANNOUNCE

    def config_note(self, spec: MoveSpec) -> str:
        extra = spec_note(spec)
        return ("conflict_check: {enabled: false}; announce: {count: 3, interval: 200ms}"
                + (f"; {extra}" if extra else ""))
