"""`ipshift run` in a lab: SIGHUP reloads the configuration; a bad one is refused and the old one runs on."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Callable

import pytest
import yaml
from failover_kit import base_config, holders, kernel_detail, log_lines, on, wait_until
from labtools import DaemonHandle

from ipshift.lab import Lab


def _hup(d: DaemonHandle) -> None:
    assert d.proc is not None and d.proc.poll() is None
    os.kill(d.proc.pid, signal.SIGHUP)


# (name, file text, the line the error is reported on)
BAD: list[tuple[str, str, int]] = [
    ("invalid-yaml", "interfaces:\n  eth0:\n    addresses: [192.0.2.10/24\n  eth1: {}\n", 4),
    ("bad-address", "interfaces:\n  eth0:\n    addresses:\n      - 192.0.2.10/24\n  eth1:\n    addresses:\n"
                    "      - 192.0.2.300/24\n", 7),
]


@pytest.mark.parametrize(("name", "text", "line"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_on_sighup_is_refused(name: str, text: str, line: int, make_lab: Callable[..., Lab],
                                         make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, base_config())
    before = d.status()
    d.config_path.write_text(text)
    _hup(d)
    path = str(d.config_path)
    wait_until(lambda: bool(log_lines(d, "reload refused")), 3.0, "the reload to be refused",
               lambda: d.log()[-3000:])
    time.sleep(0.3)  # any second complaint would be logged by now
    refused = log_lines(d, "reload refused")
    assert len(refused) == 1, refused
    # one line naming file:line
    m = re.search(re.escape(path) + r":(\d+): ", refused[0])
    assert m is not None, refused[0]
    assert int(m.group(1)) == line, refused[0]
    if name == "bad-address":
        assert "192.0.2.300/24" in refused[0], refused[0]
    assert "Traceback" not in d.log()

    # still running, status works, the old configuration is in force
    assert d.proc is not None and d.proc.poll() is None
    after = d.status()
    assert after["addresses"].keys() == before["addresses"].keys()
    assert d.cli("status").returncode == 0
    # ... and it still fails over
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=2.0, what="failover after a refused reload")


def test_good_config_on_sighup_adds_an_address(make_lab: Callable[..., Lab],
                                               make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, base_config())
    detail = kernel_detail(lab, d)
    assert holders(lab, "192.0.2.12/24") == []
    new = base_config(eth1=["192.0.2.11/24", "192.0.2.12/24"])
    new["state_dir"] = d.config["state_dir"]
    d.config_path.write_text(yaml.safe_dump(new))
    _hup(d)
    wait_until(lambda: holders(lab, "192.0.2.12/24") == ["eth1"], 3.0, "192.0.2.12 on eth1", detail)
    st = d.wait_for(lambda s: on(s, "192.0.2.12/24") == ["eth1"], timeout=2.0, what="status: 192.0.2.12 on eth1")
    assert st["addresses"]["192.0.2.12/24"]["home"] == "eth1"
    assert log_lines(d, "configuration reloaded from")
    assert not log_lines(d, "reload refused")
    assert holders(lab, "192.0.2.10/24") == ["eth0"] and holders(lab, "192.0.2.11/24") == ["eth1"]
    # the new address is managed like the others: eth1 fails, it moves to eth0
    lab.fail_nic("eth1")
    wait_until(lambda: holders(lab, "192.0.2.12/24") == ["eth0"] and holders(lab, "192.0.2.11/24") == ["eth0"],
               2.0, "eth1's addresses on eth0", detail)
