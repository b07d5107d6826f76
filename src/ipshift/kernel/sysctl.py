"""Writing the per-NIC sysctls that :func:`ipshift.policy.sysctl_policy` asks for (``sysctl: manage``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ipshift.config import Config
from ipshift.model import Snapshot
from ipshift.policy import SysctlWrite, sysctl_policy

log = logging.getLogger("ipshift.sysctl")


def write_sysctls(writes: Iterable[SysctlWrite], proc_sys: str = "/proc/sys") -> None:
    """Write each value; a file that cannot be written is logged, never fatal."""
    for w in writes:
        try:
            with open(f"{proc_sys}/{w.path}", "w") as f:
                f.write(str(w.value))
            log.info("sysctl net.ipv4.conf.%s.%s: %s -> %s", w.nic, w.key, w.current, w.value)
        except OSError as exc:
            log.warning("cannot set net.ipv4.conf.%s.%s: %s", w.nic, w.key, exc)


def apply_sysctl_policy(config: Config, snapshot: Snapshot) -> None:
    """``sysctl: manage``: write what falls short; ``sysctl: warn``: log what is wrong."""
    writes, warnings = sysctl_policy(config, snapshot)
    write_sysctls(writes)
    for w in warnings:
        log.warning("%s", w.message)


def promote_secondaries(ifname: str, proc_sys: str = "/proc/sys") -> None:
    """``promote_secondaries=1`` on ``ifname``: removing a primary IPv4 address then keeps the
    secondary addresses of its subnet (the kernel deletes them otherwise)."""
    path = f"{proc_sys}/net/ipv4/conf/{ifname}/promote_secondaries"
    try:
        with open(path) as f:
            current = f.read().strip()
        if current != "1":
            with open(path, "w") as f:
                f.write("1")
            log.info("set promote_secondaries=1 on %s so that removing a primary address keeps "
                     "the secondaries of its subnet", ifname)
    except OSError as exc:
        log.warning("cannot set promote_secondaries on %s: %s", ifname, exc)
