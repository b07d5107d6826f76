"""Helpers for lab tests that drive ``ipshift run`` (imported by tests/lab modules)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ipshift.lab import Lab


class DaemonHandle:
    """An ``ipshift run`` process in a lab gateway namespace."""

    def __init__(self, lab: Lab, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.lab = lab
        self.config = dict(config)
        self.config.setdefault("state_dir", str(workdir / "state"))
        self.workdir = workdir
        self.config_path = workdir / "ipshift.yaml"
        self.socket = str(workdir / "ipshift.sock")
        self.log_path = workdir / "ipshift.log"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(self.config)

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self, timeout: float = 10.0, env: dict[str, str] | None = None) -> DaemonHandle:
        cmd = [sys.executable, "-m", "ipshift.cli", "run", "-c", str(self.config_path), "--netns",
               self.lab.gateway, "--socket", self.socket, "-v"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, **self.env, **(env or {})})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ipshift run exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.status()
                return self
            except (OSError, ValueError):
                time.sleep(0.05)
        raise AssertionError(f"ipshift run did not answer within {timeout} s:\n{self.log()}")

    def ask(self, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        from ipshift.control import request

        return request(self.socket, req, timeout=timeout)

    def status(self) -> dict[str, Any]:
        answer = self.ask({"cmd": "status"}, timeout=5.0)
        status: dict[str, Any] = answer["status"]
        return status

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ipshift.cli", *args, "--socket", self.socket],
                              capture_output=True, text=True, timeout=60)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0,
                 what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                status = self.status()
                if predicate(status):
                    return status
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; last status: {json.dumps(status)[:2000]}\n"
                             f"log:\n{self.log()[-4000:]}")

    def addresses_on(self, nic: str) -> list[str]:
        out = self.lab.run(self.lab.gateway, "ip", "-j", "addr", "show", "dev", nic).stdout
        data = json.loads(out) if out.strip() else []
        return [f"{a['local']}/{a['prefixlen']}" for d in data for a in d.get("addr_info", [])
                if a.get("scope") == "global"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
