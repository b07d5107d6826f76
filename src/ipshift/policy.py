"""Pure decisions the daemon makes outside a plan: sysctls, start-up routes, re-announcements.

Theory of operation
-------------------
Each function takes the configuration and a kernel snapshot (and what the
caller knows besides) and returns values -- steps to run, files to write,
warnings to log -- without performing I/O:

* :func:`sysctl_policy`: with ``sysctl: manage``, the per-NIC settings that
  failover needs (``arp_ignore=1``, ``arp_announce=2``,
  ``promote_secondaries=1``, ``ignore_routes_with_linkdown=1``) that the
  kernel's effective value does not already meet, as writes; with
  ``sysctl: warn``, :func:`sysctl_warnings`.
* :func:`startup_routes`: configured routes that are missing, on the device
  holding an address of their gateway's subnet.
* :func:`reannouncements`: the addresses of the move a previous run died in,
  announced again where they are now.
* :func:`confirmed_announcements`: the addresses placed on a NIC while its
  path was unverified, announced again once it answers.
* :func:`refresh_announcements`: every configured address, announced where it
  is (``announce.refresh``).
* :func:`verify_targets`: whom to ask, after a move, whether the network
  follows the moved address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ipshift.config import Config
from ipshift.model import IPAddress, IPNetwork, Snapshot
from ipshift.plan.checks import managed_devices, nic_of
from ipshift.steps import AddRoute, Announce

MANAGED_SYSCTLS: Mapping[str, int] = {
    "arp_ignore": 1,
    "arp_announce": 2,
    "promote_secondaries": 1,
    "ignore_routes_with_linkdown": 1,
}


@dataclass(frozen=True, slots=True)
class Warning:
    code: str
    nic: str
    message: str


@dataclass(frozen=True, slots=True)
class SysctlWrite:
    """Write ``value`` to ``/proc/sys/net/ipv4/conf/<nic>/<key>`` (it reads ``current``)."""

    nic: str
    key: str
    value: int
    current: int | None

    @property
    def path(self) -> str:
        return f"net/ipv4/conf/{self.nic}/{self.key}"


def sysctl_warnings(config: Config, snapshot: Snapshot) -> list[Warning]:
    """Kernel settings on the configured NICs that make failover lose addresses or traffic."""
    warnings: list[Warning] = []
    for nic in sorted(config.interfaces):
        s = snapshot.sysctl(nic)
        if snapshot.link(nic) is None:
            warnings.append(Warning("missing-nic", nic, f"{nic} is configured but does not exist in the kernel"))
            continue
        if s.promote_secondaries == 0:
            warnings.append(Warning("promote_secondaries", nic,
                                    f"{nic}: promote_secondaries=0: removing a primary address also removes "
                                    "the secondary addresses of its subnet"))
        if s.arp_ignore == 0:
            warnings.append(Warning("arp_ignore", nic,
                                    f"{nic}: arp_ignore=0: every NIC answers ARP for every local address, so "
                                    "clients may use the wrong NIC's MAC before any failure (set 1)"))
        if s.arp_announce == 0:
            warnings.append(Warning("arp_announce", nic,
                                    f"{nic}: arp_announce=0: ARP requests may carry another NIC's address as "
                                    "sender (set 2)"))
        if s.ignore_routes_with_linkdown == 0:
            warnings.append(Warning("ignore_routes_with_linkdown", nic,
                                    f"{nic}: ignore_routes_with_linkdown=0: the gateway's replies keep leaving "
                                    "through this NIC when it loses carrier (ipshift withdraws its routes "
                                    "while it is failed)"))
    return warnings


def sysctl_policy(config: Config, snapshot: Snapshot) -> tuple[list[SysctlWrite], list[Warning]]:
    """What ``config.sysctl`` asks for on this kernel: writes (manage) or warnings (warn)."""
    if config.sysctl != "manage":
        return [], sysctl_warnings(config, snapshot)
    writes: list[SysctlWrite] = []
    for nic in sorted(config.interfaces):
        if snapshot.link(nic) is None:
            continue
        s = snapshot.sysctl(nic)
        for key, want in MANAGED_SYSCTLS.items():
            have = getattr(s, key)
            # the effective value (max or or of 'all' and the NIC's own): only raise what falls short
            if have is None or have < want:
                writes.append(SysctlWrite(nic, key, want, have))
    return writes, []


def startup_routes(config: Config, snapshot: Snapshot) -> list[AddRoute]:
    """Configured routes that are missing, each on the device holding an address of its gateway's
    subnet (its own NIC when that holds one; else the first managed device that does)."""
    managed = managed_devices(config, snapshot)
    present = {(kr.dst, kr.gateway) for kr in snapshot.routes}
    out: list[AddRoute] = []
    for nic, iface in config.interfaces.items():
        for r in iface.routes:
            if r.via is None or (r.to, r.via) in present:
                continue
            holders = [a.ifname for a in snapshot.addresses if a.ip.version == r.via.version
                       and r.via in a.network and a.ifname in managed]
            if not holders:
                continue
            dev = nic if nic in holders else holders[0]
            out.append(AddRoute(r.to, dev, r.via, r.metric))
            present.add((r.to, r.via))
    return out


def reannouncements(config: Config, snapshot: Snapshot, interrupted: Iterable[IPAddress],
                    moved: Iterable[IPAddress], usable: Mapping[str, bool]) -> list[Announce]:
    """Announce the addresses of the move the previous run died in, where they are now.

    It may have died between adding an address and announcing it: the kernel then looks
    converged, but the network still sends to the old MAC. Addresses this run has moved
    (and announced) since, held twice, or on a NIC that is not usable are left alone.
    """
    out: list[Announce] = []
    done = set(moved)
    for ip in sorted(set(interrupted) - done, key=lambda a: (a.version, a)):
        found = snapshot.where_is(ip)
        if len(found) != 1:
            continue
        dev = found[0].ifname
        if usable.get(nic_of(snapshot, dev), False):
            out.append(Announce(dev, ip, config.announce.count, config.announce.interval))
    return out


def confirmed_announcements(config: Config, snapshot: Snapshot, confirmed: Mapping[str, Iterable[IPAddress]],
                            moved: Iterable[IPAddress]) -> list[Announce]:
    """Announce again, where they are, the addresses placed on a NIC while its path was unverified
    (``confirmed``: NIC -> addresses; its path answers now): the first announcement may have gone
    into a dead path, and a client keeps the old MAC until its own entry times out. Addresses that
    have left that NIC, or that this round moved (and announced) again, are left alone."""
    out: list[Announce] = []
    done = set(moved)
    for nic, ips in sorted(confirmed.items()):
        for ip in sorted(set(ips) - done, key=lambda a: (a.version, a)):
            found = snapshot.where_is(ip)
            if len(found) == 1 and nic_of(snapshot, found[0].ifname) == nic:
                out.append(Announce(found[0].ifname, ip, config.announce.count, config.announce.interval))
    return out


def announce_again(config: Config, snapshot: Snapshot, confirmed: Mapping[str, Iterable[IPAddress]],
                   interrupted: Iterable[IPAddress], moved: Iterable[IPAddress],
                   usable: Mapping[str, bool]) -> list[tuple[str, list[Announce]]]:
    """After a converge round: (why, announcements) for :func:`confirmed_announcements` and
    :func:`reannouncements`, those that have any."""
    moved = set(moved)
    out = [("again, as the path they were placed on now answers",
            confirmed_announcements(config, snapshot, confirmed, moved)),
           ("again, as the previous run stopped in the middle of its move",
            reannouncements(config, snapshot, interrupted, moved, usable))]
    return [(what, steps) for what, steps in out if steps]


def refresh_announcements(config: Config, snapshot: Snapshot) -> list[Announce]:
    """One announcement of every configured address, wherever it is now."""
    return [Announce(a.ifname, a.ip, 1, 0.0) for _, addr in config.all_addresses()
            for a in snapshot.where_is(addr.address.ip)]


def verify_targets(config: Config, network: IPNetwork) -> tuple[IPAddress, ...]:
    """Probe targets and configured gateways in ``network``: who can confirm a move into it."""
    out: list[IPAddress] = []
    if config.detect.probe is not None:
        out += [t for t in config.detect.probe.targets if t.version == network.version and t in network]
    for iface in config.interfaces.values():
        out += [r.via for r in iface.routes if r.via is not None and r.via.version == network.version
                and r.via in network and r.via not in out]
    return tuple(dict.fromkeys(out))
