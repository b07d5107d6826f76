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

from benchlab import PEER_MAC, BenchLab, LabSpec, wait_until
from contenders import (CLIENT_ADDRS6, HOME_BASE, HOME_BASE6, PEER_BASE, PEER_BASE6, SURVIVOR_BASE, SURVIVOR_BASE6,
                        MoveSpec, Timeline)
from contenders.base import OwnProcesses

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
    virtual_ipaddress_excluded {{
{evips}
    }}
}}
"""


class KeepalivedContender(OwnProcesses):
    name = "keepalived"
    label = "keepalived VRRPv2 defaults (advert_int 1 s)"
    version = 2
    advert = "1"
    failover_timeout = 8.0
    failback_timeout = 10.0
    path_detection: str | None = None  # VRRP adverts stop reaching the peer: it takes over

    def unavailable(self) -> str | None:
        if shutil.which("keepalived") is None:
            return "keepalived not installed (Debian package keepalived)"
        return None

    def lab_spec(self, spec: MoveSpec) -> LabSpec:
        if spec.routes:
            raise ValueError("the keepalived contender moves addresses only (no virtual_routes)")
        if spec.ipv6:
            return LabSpec(
                gw_addrs={spec.home: [HOME_BASE, HOME_BASE6], spec.survivor: [SURVIVOR_BASE, SURVIVOR_BASE6]},
                peer_gateway_addrs=[PEER_BASE, PEER_BASE6], client_addrs=list(CLIENT_ADDRS6),
            )
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
        # VRRPv3 runs over IPv6 when its addresses are IPv6 (adverts from the link-local address to
        # ff02::12). VRRPv2 is IPv4 only: there an IPv6 address is an "excluded" VIP of the instance
        # (keepalived moves it with the instance and announces it with unsolicited NAs).
        inline = [a for a in self.spec.addresses if self.version == 3 or ":" not in a]
        vips = "\n".join(f"        {a} dev eth0" for a in inline)
        evips = "\n".join(f"        {a} dev eth0" for a in self.spec.addresses if a not in inline)
        return CONF.format(router_id=router_id, version=self.version, state=state, priority=priority,
                           advert=self.advert, vips=vips, evips=evips)

    def setup(self, lab: BenchLab, spec: MoveSpec) -> None:
        if spec.home != "eth0":
            raise ValueError("the keepalived contender expects the home NIC to be eth0")
        self.lab, self.spec = lab, spec
        if spec.ipv6 and self.version == 3:
            # VRRPv3 over IPv6 sends from the link-local address, which the kernel cannot use while
            # it is tentative (the first second of a new link): sends fail with EINVAL until then.
            def settled() -> bool:
                return all("tentative" not in lab.run(ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0").stdout
                           for ns in (lab.gateway, lab.peer or ""))

            if not wait_until(settled, 5.0, poll=0.05):
                raise RuntimeError("link-local addresses still tentative after 5 s")
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
