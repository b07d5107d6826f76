"""Probing what the running kernel can do: 802.1Q VLANs, macvlan, IPv6.

Theory of operation: a link kind is available when the kernel knows its
rtnetlink ops. Asking for ``RTM_NEWLINK`` of that kind *without* the lower
link (``IFLA_LINK``) tells the two cases apart with nothing created:

* ``EOPNOTSUPP`` (95, "Unknown device type"): the kind is not available;
* ``EINVAL`` (22): the kind exists and rejected the request for lacking
  the lower link.

An unknown kind makes the kernel try ``request_module("rtnl-link-KIND")``
first, as ``ip link add`` would, so a loadable module may get loaded. Should a
device be created all the same (a kernel that accepts the request), it is
deleted at once and the kind counts as available. Any other answer (EPERM,
EEXIST for a taken probe name, ...) leaves the feature unknown (``None``).
``/proc/net/vlan`` exists once the 8021q module is loaded, a positive answer
that needs no netlink request. Nothing is cached: every call probes afresh.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from ipshift.kernel.netns import call_in_netns
from ipshift.model import KernelFeatures

__all__ = ["PROBE_IFNAME", "link_kind_supported", "probe_features", "read_proc_features"]

PROBE_IFNAME = "ipshift-probe"[:15]


def link_kind_supported(ipr: Any, kind: str, ifname: str = PROBE_IFNAME) -> bool | None:
    """Whether the kernel behind ``ipr`` can create links of ``kind`` (None: could not tell)."""
    try:
        ipr.link("add", ifname=ifname, kind=kind)
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            return False
        if exc.code == errno.EINVAL:
            return True
        return None
    # Created after all: we made it (NLM_F_EXCL), so it is ours to remove.
    try:
        ipr.link("del", ifname=ifname)
    except NetlinkError:
        pass
    return True


def read_proc_features() -> tuple[bool, bool]:
    """``(/proc/net/vlan exists, /proc/sys/net/ipv6 exists)`` for the calling thread's namespace."""
    # thread-self, not self: /proc/self/net follows the main thread's namespace,
    # which differs from this thread's inside call_in_netns().
    return os.path.exists("/proc/thread-self/net/vlan"), os.path.isdir("/proc/sys/net/ipv6")


def probe_features(ipr: Any, netns: str | None = None) -> KernelFeatures:
    """Probe the namespace ``ipr`` talks to.

    ``netns`` names that namespace when it is not the caller's own (for the
    ``/proc`` checks, made from a helper thread that enters it).
    """
    vlan_proc, ipv6 = call_in_netns(netns, read_proc_features)
    vlan = True if vlan_proc else link_kind_supported(ipr, "vlan")
    macvlan = link_kind_supported(ipr, "macvlan")
    return KernelFeatures(vlan_8021q=vlan, macvlan=macvlan, ipv6=ipv6)
