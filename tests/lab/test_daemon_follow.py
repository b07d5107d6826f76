"""The daemon follows its NICs' devices: a MAC change, a device made again, a rename."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from failover_kit import Capture, on
from labtools import DaemonHandle

from ipshift.lab import Lab

A10 = "192.0.2.10/24"
CLIENT = "192.0.2.100"
NEW_MAC = "02:1b:00:00:00:99"


def config() -> dict[str, Any]:
    return {
        "interfaces": {"eth0": {"addresses": [A10]}, "eth1": {"addresses": ["192.0.2.11/24"]}},
        "detect": {"probe": {"targets": [CLIENT], "interval": "20ms", "misses": 3, "rises": 2}},
        "announce": {"count": 1, "interval": "50ms", "verify_rounds": 1},
        "failback": {"mode": "auto", "delay": "200ms"},
        "conflict_check": {"enabled": False},
    }


def paths_up(d: DaemonHandle) -> dict[str, Any]:
    return d.wait_for(lambda s: all(s["nics"][n]["path"] == "up" and s["nics"][n]["state"] == "up"
                                    for n in ("eth0", "eth1")), timeout=5.0, what="both NICs up, paths confirmed")


def test_probes_follow_a_mac_change(make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle],
                                    tmp_path: Path) -> None:
    from scapy.layers.l2 import ARP

    lab = make_lab()
    d = make_daemon(lab, config())
    paths_up(d)
    lab.run(lab.gateway, "ip", "link", "set", "eth1", "address", NEW_MAC)
    d.wait_for(lambda s: s["nics"]["eth1"]["link"]["mac"] == NEW_MAC, timeout=2.0, what="the new MAC in the view")
    cap = Capture(lab, lab.peer_of("eth1"), tmp_path / "probes.pcap", "arp and arp[6:2] == 1", count=20)
    d.wait_for(lambda s: True, timeout=0.3)
    requests = [f for f in cap.frames() if ARP in f and f[ARP].pdst == CLIENT and f[ARP].psrc == "192.0.2.11"]
    assert requests and {f[ARP].hwsrc for f in requests} == {NEW_MAC}, [f.summary() for f in requests]
    assert d.status()["nics"]["eth1"]["path"] == "up"


def test_a_nic_made_again_is_probed_again_and_takes_addresses(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, config())
    paths_up(d)
    lab.recreate_nic("eth1")  # a new ifindex: sockets on the old device hear nothing any more
    st = paths_up(d)
    assert st["nics"]["eth1"]["link"]["carrier"]
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, A10) == ["eth1"], timeout=3.0, what="the move onto the recreated eth1")


def test_a_renamed_nic_is_gone_until_its_name_comes_back(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, config())
    paths_up(d)
    for cmd in (("link", "set", "eth0", "down"), ("link", "set", "eth0", "name", "wan9"),
                ("link", "set", "wan9", "up")):
        lab.run(lab.gateway, "ip", *cmd)
    st = d.wait_for(lambda s: s["nics"]["eth0"]["link"] is None, timeout=3.0, what="eth0 gone from the view")
    assert st["nics"]["eth0"]["state"] == "down"
    assert on(st, A10) == ["eth1"]
    for cmd in (("link", "set", "wan9", "down"), ("link", "set", "wan9", "name", "eth0"),
                ("link", "set", "eth0", "up")):
        lab.run(lab.gateway, "ip", *cmd)
    paths_up(d)
    d.wait_for(lambda s: on(s, A10) == ["eth0"], timeout=3.0, what="home again under its name")


def test_nics_that_swap_names_are_probed_as_the_devices_they_now_name(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    """The classic boot-order rename: eth0 and eth1 swap names. The probes of "eth0" must go out the
    device now called eth0, so that cutting that device fails eth0."""
    lab = make_lab()
    d = make_daemon(lab, config())
    paths_up(d)
    for cmd in ("eth0 down", "eth1 down", "eth0 name swap0", "eth1 name eth0", "swap0 name eth1", "eth0 up",
                "eth1 up"):
        lab.run(lab.gateway, "ip", "link", "set", *cmd.split())
    st = paths_up(d)
    assert st["nics"]["eth0"]["link"]["mac"] == lab.mac_of("eth1")  # the device that was eth1
    d.wait_for(lambda s: on(s, A10) == ["eth0"], timeout=3.0, what="192.0.2.10 on the device now named eth0")
    lab.detach_nic("eth1")  # the switch port of the device that was eth1: now eth0
    d.wait_for(lambda s: s["nics"]["eth0"]["path"] == "failed", timeout=3.0, what="eth0's path failed")
    d.wait_for(lambda s: on(s, A10) == ["eth1"], timeout=3.0, what="the move away from the cut device")
