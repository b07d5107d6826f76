"""`ipshift run` in a lab: an address another host already uses is not moved onto the network."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Callable

import pytest
from failover_kit import base_config, holders, kernel_detail, log_lines, on, wait_until
from labtools import DaemonHandle

from ipshift.lab import Lab

OTHER_MAC = "02:1b:00:00:02:00"
TAKEN = "192.0.2.50/24"


class OtherHost:
    """One more namespace ``{prefix}x`` on the lab's switch: a host the gateway does not control."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ns = f"{lab.prefix}x"
        self.made = False
        self.port = "px"

    def create(self) -> None:
        r = subprocess.run(["ip", "netns", "add", self.ns], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        self.made = True
        sw = self.lab.switch
        self.lab.run(sw, "ip", "link", "add", "name", self.port, "type", "veth", "peer", "name", "eth0",
                     "address", OTHER_MAC, "netns", self.ns)
        self.lab.run(sw, "ip", "link", "set", self.port, "master", self.lab.bridge, "up")
        self.lab.run(self.ns, "ip", "link", "set", "lo", "up")
        self.lab.run(self.ns, "ip", "link", "set", "eth0", "up")

    def destroy(self) -> None:
        if self.made:
            self.made = False
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def other_host() -> Iterator[Callable[[Lab], OtherHost]]:
    made: list[OtherHost] = []

    def make(lab: Lab) -> OtherHost:
        h = OtherHost(lab)
        made.append(h)
        h.create()
        return h

    try:
        yield make
    finally:
        for h in made:
            h.destroy()


def test_address_in_use_elsewhere_is_not_moved(make_lab: Callable[..., Lab],
                                               make_daemon: Callable[..., DaemonHandle],
                                               other_host: Callable[[Lab], OtherHost]) -> None:
    lab = make_lab()
    other = other_host(lab)
    cfg = base_config(failback={"mode": "manual", "delay": "300ms"}, route=False,
                      eth0=["192.0.2.10/24", TAKEN])
    cfg["conflict_check"]["background"] = None  # the probe at failure (test_daemon_scout: the one before)
    d = make_daemon(lab, cfg)
    detail = kernel_detail(lab, d)
    # the daemon's first placement put 192.0.2.50 on eth0 (nobody else had it then)
    d.wait_for(lambda s: on(s, TAKEN) == ["eth0"], timeout=2.0, what=f"{TAKEN} placed on eth0")
    assert holders(lab, TAKEN) == ["eth0"], detail()

    # now another host takes the address (arp_ignore=0 there: it answers probes for it)
    lab.run(other.ns, "ip", "addr", "add", TAKEN, "dev", "eth0")
    assert lab.run(other.ns, "sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore").stdout.strip() == "0"
    r = lab.run(lab.client, "arping", "-c", "1", "-w", "2", "-I", "eth0", "192.0.2.50", check=False)
    assert OTHER_MAC in r.stdout.lower(), r.stdout  # the other host does answer on the switch

    lab.fail_nic("eth0")
    st = d.wait_for(lambda s: any(m["address"] == TAKEN for rec in s["failovers"] if rec["kind"] == "failover"
                                  for m in rec["moves"]),
                    timeout=2.0, what=f"a failover record with a move of {TAKEN}")
    # the other address of eth0 moved as usual
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=2.0, what="192.0.2.10 on eth1")

    moves = [m for rec in st["failovers"] if rec["kind"] == "failover" for m in rec["moves"]
             if m["address"] == TAKEN]
    assert moves and all(not m["ok"] for m in moves), json.dumps(moves, indent=1)
    err = moves[0]["error"]
    assert OTHER_MAC in err.lower() and "in use" in err, err
    assert moves[0]["steps"][0]["op"] == "CheckConflict" and not moves[0]["steps"][0]["ok"]
    assert [s["op"] for s in moves[0]["steps"]] == ["CheckConflict"], moves  # nothing else ran
    # the daemon log says so
    said = [line for line in log_lines(d, "192.0.2.50") if OTHER_MAC in line.lower()]
    assert said, d.log()[-3000:]

    # the kernel: not on eth1, still on (failed) eth0, and it stays that way
    wait_until(lambda: holders(lab, "192.0.2.10/24") == ["eth1"], 2.0, "192.0.2.10 on eth1", detail)
    assert holders(lab, TAKEN) == ["eth0"], detail()
    st = d.status()
    assert on(st, TAKEN) == ["eth0"]
    assert d.proc is not None and d.proc.poll() is None
