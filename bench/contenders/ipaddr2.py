"""Pacemaker's IPaddr2 resource agent, driven by the shell baseline's watcher.

On carrier loss the watcher runs ``IPaddr2 stop`` (nic = the failed NIC) and
``IPaddr2 start`` (nic = the survivor) for each address, with the OCF
environment a cluster manager would set. IPaddr2 announces with its own
``send_arp`` (5 ARPs, 200 ms apart, in the background: the agent's defaults).
Its state files go to a bench directory (HA_RSCTMP), its log to a file.
"""

from __future__ import annotations

import os

from contenders.shell import WatcherContender

OCF_ROOT = "/usr/lib/ocf"
IPADDR2 = f"{OCF_ROOT}/resource.d/heartbeat/IPaddr2"


class IPaddr2Contender(WatcherContender):
    name = "ipaddr2"
    label = "Pacemaker IPaddr2 (resource-agents)"
    mode = "ipaddr2"
    failover_timeout = 5.0
    failback_timeout = 5.0

    def unavailable(self) -> str | None:
        if not os.access(IPADDR2, os.X_OK):
            return f"{IPADDR2} missing (Debian package resource-agents)"
        return super().unavailable()

    def env(self) -> dict[str, str]:
        rsctmp = self.workdir / "rsctmp"
        rsctmp.mkdir(exist_ok=True)
        return {
            "RA": IPADDR2,
            "OCF_ROOT": OCF_ROOT,
            "OCF_RA_VERSION_MAJOR": "1",
            "OCF_RA_VERSION_MINOR": "0",
            "OCF_RESOURCE_TYPE": "IPaddr2",
            "OCF_RESOURCE_PROVIDER": "heartbeat",
            "HA_RSCTMP": str(rsctmp),
            "HA_LOGFACILITY": "none",
            "HA_LOGFILE": str(self.workdir / "ipaddr2.log"),
            "HA_DEBUG": "0",
        }
