"""Device life cycle: a moved MAC is not sent from the NIC it left; a non-Ethernet NIC is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from failover_kit import Capture, base_config, holders, on, wait_until
from labtools import DaemonHandle

from ipshift.lab import Lab
from ipshift.steps import stand_in_mac


# opens tun0 (a layer-3 device: no MAC, not Ethernet) and holds it, so that it has carrier; bounded
TUN_HOLDER = """
import fcntl, os, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"tun0", 0x0001 | 0x1000))  # TUNSETIFF: IFF_TUN | IFF_NO_PI
print("ready", flush=True)
time.sleep(30)
"""


def mac_of(lab: Lab, dev: str) -> str:
    return str(json.loads(lab.run(lab.gateway, "ip", "-j", "link", "show", "dev", dev).stdout)[0]["address"])


def test_a_nic_whose_mac_moved_sends_nothing_from_it_until_failback(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle], tmp_path: Path) -> None:
    from scapy.layers.l2 import ARP, Ether

    lab = make_lab()
    own = lab.mac_of("eth0")
    cfg = base_config(route=False, eth0=[{"address": "192.0.2.10/24", "mac": "move"}],
                      failback={"mode": "auto", "delay": "2s"})
    d = make_daemon(lab, cfg)
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24")[0].startswith("ipsmv"), timeout=3.0, what="failover with its MAC")
    wait_until(lambda: mac_of(lab, "eth0") == stand_in_mac(own), 2.0, "eth0 on a stand-in MAC",
               lambda: mac_of(lab, "eth0"))
    lab.restore_nic("eth0")  # (tcpdump needs the port up) the failback waits 2 s: the capture sees them
    cap = Capture(lab, lab.peer_of("eth0"), tmp_path / "eth0.pcap", f"ether src {own}", count=50)
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth0"], timeout=5.0, what="failback")
    assert mac_of(lab, "eth0") == own and holders(lab, "192.0.2.10/24") == ["eth0"]
    wait_until(lambda: not any(l["ifname"].startswith("ipsmv") for l in
                               json.loads(lab.run(lab.gateway, "ip", "-j", "link", "show").stdout)), 2.0,
               "the macvlan gone", lambda: lab.run(lab.gateway, "ip", "link", "show").stdout)
    frames = cap.frames()
    assert frames, "eth0 announced its address with its own MAC at failback"
    first = frames[0]
    # the first frame from its own MAC on its port is the failback's announcement, nothing before it
    assert ARP in first and first[ARP].psrc == "192.0.2.10" and first[Ether].src == own, first.summary()


def test_a_non_ethernet_nic_is_refused_with_its_reason(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    import subprocess
    import sys

    lab = make_lab()
    holder = lab.popen(lab.gateway, sys.executable, "-c", TUN_HOLDER, stdout=subprocess.PIPE)  # carrier up: held
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
    lab.run(lab.gateway, "ip", "addr", "add", "192.0.2.30/24", "dev", "tun0")
    lab.run(lab.gateway, "ip", "link", "set", "tun0", "up")
    cfg = base_config(route=False)
    cfg["interfaces"] = {"eth0": {"addresses": ["192.0.2.10/24"], "backups": ["tun0"]},
                         "tun0": {"addresses": ["192.0.2.30/24"]}}
    d = make_daemon(lab, cfg)
    r = d.cli("status")
    assert r.returncode == 0
    lab.fail_nic("eth0")
    wait_until(lambda: "not an Ethernet NIC" in d.log(), 3.0, "the refusal, with its reason", lambda: d.log()[-2000:])
    assert holders(lab, "192.0.2.10/24") == ["eth0"] and d.proc is not None and d.proc.poll() is None
