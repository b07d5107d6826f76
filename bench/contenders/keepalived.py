"""keepalived VRRP between the lab gateway and a second lab gateway.

The lab gets a fourth namespace, the peer gateway ``{prefix}g2``, whose single
NIC is a port of the same switch. keepalived runs in both gateways: the lab
gateway is MASTER (priority 150) on ``eth0``, the peer BACKUP (priority 100).
The virtual address is the service address the other contenders move
(192.0.2.50/24). Carrier loss on the gateway's ``eth0`` puts its instance in
FAULT; the peer takes over after the master-down interval (3 adverts + skew)
and announces with gratuitous ARP. When ``eth0`` returns the gateway preempts.

Two variants: keepalived's defaults (VRRPv2, ``advert_int 1``) and its fastest
(VRRPv3, ``advert_int 0.01``: 10 ms adverts). Both keepalived processes are
started with ``-n`` in their own process group and ended by its id.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchlab import PEER_MAC, BenchLab, LabSpec, wait_until
from contenders import HOME_BASE, PEER_BASE, SURVIVOR_BASE, MoveSpec, Timeline
from contenders.base import ProcessGroup

CONF = """\
global_defs {{
    router_id {router_id}
    vrrp_version {version}
    script_user root
    enable_script_security
}}
vrrp_instance VI_BENCH {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int {advert}
    virtual_ipaddress {{
{vips}
    }}
}}
"""


class KeepalivedContender:
    name = "keepalived"
    label = "keepalived VRRPv2 defaults (advert_int 1 s)"
    version = 2
    advert = "1"
    failover_timeout = 8.0
    failback_timeout = 10.0
    path_detection: str | None = None  # VRRP adverts stop reaching the peer: it takes over

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.group = ProcessGroup()
        self.lab: BenchLab | None = None
        self.spec: MoveSpec | None = None

    def unavailable(self) -> str | None:
        if shutil.which("keepalived") is None:
            return "keepalived not installed (Debian package keepalived)"
        return None

    def lab_spec(self, spec: MoveSpec) -> LabSpec:
        if spec.routes:
            raise ValueError("the keepalived contender moves addresses only (no virtual_routes)")
        return LabSpec(
            gw_addrs={spec.home: [HOME_BASE], spec.survivor: [SURVIVOR_BASE]},
            peer_gateway_addrs=[PEER_BASE],
        )

    def survivor_mac(self, lab: BenchLab) -> str:
        return PEER_MAC

    def home_mac(self, lab: BenchLab) -> str:
        return lab.lab.mac_of(self.spec.home if self.spec else "eth0")

    def _conf(self, router_id: str, state: str, priority: int) -> str:
        assert self.spec is not None
        vips = "\n".join(f"        {a} dev eth0" for a in self.spec.addresses)
        return CONF.format(router_id=router_id, version=self.version, state=state, priority=priority,
                           advert=self.advert, vips=vips)

    def setup(self, lab: BenchLab, spec: MoveSpec) -> None:
        if spec.home != "eth0":
            raise ValueError("the keepalived contender expects the home NIC to be eth0")
        self.lab, self.spec = lab, spec
        (self.workdir / "gw.conf").write_text(self._conf("ipsb_gw", "MASTER", 150))
        (self.workdir / "peer.conf").write_text(self._conf("ipsb_peer", "BACKUP", 100))

    def start(self) -> None:
        assert self.lab is not None and self.lab.peer is not None
        for who, ns in (("gw", self.lab.gateway), ("peer", self.lab.peer)):
            d = self.workdir
            self.group.start(
                self.lab, ns, "keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(d / f"{who}.conf"),
                "-p", str(d / f"{who}.pid"), "-r", str(d / f"{who}-vrrp.pid"), "-c", str(d / f"{who}-chk.pid"),
                "-b", str(d / f"{who}-bfd.pid"), "-i", f"ipsb_{who}",
                log=d / f"{who}.log",
            )

    def _vip_at(self, ns: str, dev: str) -> bool:
        assert self.lab is not None and self.spec is not None
        return all(a in self.lab.addrs_on(ns, dev) for a in self.spec.addresses)

    def home_ok(self) -> bool:
        assert self.lab is not None and self.lab.peer is not None
        return self._vip_at(self.lab.gateway, "eth0") and not self._vip_at(self.lab.peer, "eth0")

    def ready(self, timeout: float = 10.0) -> bool:
        return wait_until(lambda: self.group.alive() and self.home_ok(), timeout, poll=0.05)

    def stop(self) -> None:
        self.group.stop()

    def steps(self, since: float) -> Timeline:
        return Timeline(source="keepalived reports no step timings")

    def pids(self) -> list[int]:
        """The lab gateway's keepalived only: the cost on one box, like the other contenders."""
        return self.group.pids(first_only=True)


class KeepalivedFastContender(KeepalivedContender):
    name = "keepalived-fast"
    label = "keepalived VRRPv3 10 ms adverts"
    version = 3
    advert = "0.01"
    failover_timeout = 3.0
    failback_timeout = 3.0
