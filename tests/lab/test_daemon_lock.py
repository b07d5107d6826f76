"""One daemon per gateway: a second `ipshift run` on the same state_dir refuses to start."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from failover_kit import base_config, on
from labtools import DaemonHandle

from ipshift.lab import Lab


def test_a_second_daemon_on_the_same_state_dir_stops_before_touching_the_kernel(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle], tmp_path: Path) -> None:
    lab = make_lab()
    d = make_daemon(lab, base_config())
    d.wait_for(lambda s: s["ready"], timeout=5.0, what="ready")
    cfg = dict(d.config, sysctl="manage")  # the second one would write sysctls first thing
    lab.run(lab.gateway, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_announce=0")
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "ipshift.cli", "run", "-c", str(second), "--netns", lab.gateway,
                        "--socket", str(tmp_path / "other.sock")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert f"pid {d.proc.pid}" in line and "already runs" in line  # type: ignore[union-attr]
    assert not (tmp_path / "other.sock").exists()
    assert lab.run(lab.gateway, "sysctl", "-n", "net.ipv4.conf.eth0.arp_announce").stdout.strip() == "0"
    lab.fail_nic("eth0")  # the first one still does its job
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=3.0, what="failover")
