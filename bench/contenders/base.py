"""Shared pieces of the contenders: process groups, step logs, the single-gateway lab."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from benchlab import BenchLab, LabSpec, end_process
from contenders import (BUSY_HOME, BUSY_SURVIVOR, CLIENT_ADDRS6, HOME_BASE, HOME_BASE6, SCALE_SURVIVOR_BASE,
                        SURVIVOR_BASE, SURVIVOR_BASE6, MoveSpec, Step, Timeline, busy_addresses)


class ProcessGroup:
    """Processes a contender started, each the leader of its own process group."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, lab: BenchLab, ns: str, *cmd: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
        out = open(log, "ab")
        try:
            proc: subprocess.Popen[Any] = subprocess.Popen(
                ["ip", "netns", "exec", ns, *cmd], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, **(env or {})},
            )
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def start_plain(self, *cmd: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
        """Like :meth:`start` for a command that enters its namespace itself."""
        out = open(log, "ab")
        try:
            proc: subprocess.Popen[Any] = subprocess.Popen(
                list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, **(env or {})},
            )
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            end_process(proc, group=True)

    def pids(self, first_only: bool = False) -> list[int]:
        """Every live process in the groups we lead (read from /proc); ``first_only``: the first group."""
        procs = self.procs[:1] if first_only else self.procs
        groups = {p.pid for p in procs if p.poll() is None}
        found: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) in groups:  # pgrp
                found.append(int(entry))
        return found


def single_gateway_spec(spec: MoveSpec) -> LabSpec:
    """The gateway keeps its base addresses; the moved ones start on the home NIC."""
    survivor = [SURVIVOR_BASE] + ([SCALE_SURVIVOR_BASE] if any(a.startswith("198.18.") for a in spec.addresses) else [])
    home = [HOME_BASE]
    if spec.ipv6:  # each NIC keeps a base address on the IPv6 subnet too, like on the IPv4 one
        home.append(HOME_BASE6)
        survivor.append(SURVIVOR_BASE6)
    spec_kw = {"client_addrs": list(CLIENT_ADDRS6)} if spec.ipv6 else {}
    # Added in reverse, so the first address the movers take is a secondary and the subnet's
    # primary goes last: moving the primary first would make the kernel promote a secondary
    # (and rewrite the routes of all the others) at every delete.
    gw_addrs = {spec.home: [*home, *reversed(spec.addresses)], spec.survivor: survivor}
    if spec.busy:  # (a''): a second NIC pair carrying addresses that the failure does not touch
        gw_addrs[BUSY_HOME] = list(reversed(busy_addresses(spec.busy)))
        gw_addrs[BUSY_SURVIVOR] = [SCALE_SURVIVOR_BASE]
    return LabSpec(
        gw_addrs=gw_addrs,
        routes=[f"{r} dev {spec.home}" for r in spec.routes],
        nics=4 if spec.busy else 2,
        urgent_carrier=not spec.batched_carrier,
        linkwatch_veth=spec.batched_carrier,
        **spec_kw,
    )


def read_step_log(path: Path, since: float) -> Timeline:
    """Parse "EPOCHREALTIME event detail" lines into monotonic steps at or after ``since``."""
    offset = time.time() - time.monotonic()
    steps: list[Step] = []
    try:
        text = path.read_text()
    except OSError:
        return Timeline(source=str(path))
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) < 2:
            continue
        try:
            t = float(parts[0].replace(",", ".")) - offset
        except ValueError:
            continue
        if t >= since - 0.001:
            steps.append(Step(name=parts[1], t=t, detail=parts[2] if len(parts) > 2 else ""))
    return Timeline(steps=steps, source=str(path))


class OwnProcesses:
    """What every contender keeps: a work directory of its own, the processes it started, and the
    lab and spec of the run (set by ``setup``). Idle unless a subclass knows better."""

    name: str

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.group = ProcessGroup()
        self.lab: BenchLab | None = None
        self.spec: MoveSpec | None = None

    def idle(self) -> bool:
        return True

    def stop(self) -> None:
        self.group.stop()


class SingleGatewayMover(OwnProcesses):
    """What every mover on the one lab gateway shares (the shell watcher, IPaddr2, ipshift)."""

    def lab_spec(self, spec: MoveSpec) -> LabSpec:
        return single_gateway_spec(spec)

    def survivor_mac(self, lab: BenchLab) -> str:
        return lab.lab.mac_of(self.spec.survivor if self.spec else "eth1")

    def home_mac(self, lab: BenchLab) -> str:
        return lab.lab.mac_of(self.spec.home if self.spec else "eth0")

    def home_ok(self) -> bool:
        assert self.lab is not None and self.spec is not None
        home = self.lab.addrs_on(self.lab.gateway, self.spec.home)
        away = self.lab.addrs_on(self.lab.gateway, self.spec.survivor)
        return all(a in home and a not in away for a in self.spec.addresses)
