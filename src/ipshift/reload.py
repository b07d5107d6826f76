"""A reload is a diff: what the new configuration changes against the running one (pure).

Theory of operation
-------------------
:func:`diff` compares the configuration in force with the one just read and
says what the daemon must do about it; the parts then apply it (the NIC
states add and forget NICs and keep the state of the others, the prober keeps
every unchanged NIC's verdict, the servers move when their addresses change).
Addresses need no instruction: the planner brings the kernel to the new
placement -- a new address appears on its home NIC (or a survivor when home
is down), a changed prefix is applied, and a delete always names the prefix
the kernel has.

An address that leaves the configuration is no longer ipshift's, but ipshift
undoes its own doing first: one that ipshift had moved away from its home is
*leaving* (:func:`leaving`) and goes back home once home is usable
(:mod:`ipshift.plan.retire`); one that is at home, or on a device ipshift does
not manage, is left exactly where it is -- ipshift never deletes an address
from its home NIC because it left the configuration. A NIC that leaves the
configuration gets its withdrawn routes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ipshift.config import AddressConfig, Config
from ipshift.model import Snapshot
from ipshift.plan import managed_devices, nic_of


@dataclass(frozen=True, slots=True)
class Change:
    added_nics: frozenset[str]
    removed_nics: frozenset[str]
    removed: Mapping[str, tuple[str, AddressConfig]]  # address/prefix -> (its home, its configuration)
    refresh: bool  # announce.refresh changed
    servers: bool  # the control socket or the metrics address changed

    def describe(self) -> str:
        parts = [f"NICs added: {', '.join(sorted(self.added_nics)) or 'none'}",
                 f"removed: {', '.join(sorted(self.removed_nics)) or 'none'}"]
        if self.removed:
            parts.append(f"{len(self.removed)} address(es) no longer configured")
        return "; ".join(parts)


def diff(old: Config, new: Config) -> Change:
    now = {a.address.ip for _, a in new.all_addresses()}
    removed = {str(a.address): (home, a) for home, a in old.all_addresses() if a.address.ip not in now}
    return Change(frozenset(set(new.interfaces) - set(old.interfaces)),
                  frozenset(set(old.interfaces) - set(new.interfaces)), removed,
                  old.announce.refresh != new.announce.refresh,
                  old.socket != new.socket or old.metrics != new.metrics)


def leaving(old: Config, change: Change, snapshot: Snapshot) -> dict[str, tuple[str, AddressConfig]]:
    """The addresses that left the configuration and that ipshift had moved away from their home:
    they go home (then ipshift forgets them). Those at home, nowhere, or on a device ipshift does
    not manage are left alone."""
    managed = managed_devices(old, snapshot)
    out: dict[str, tuple[str, AddressConfig]] = {}
    for key, (home, addr) in change.removed.items():
        found = snapshot.where_is(addr.address.ip)
        if len(found) == 1 and found[0].ifname in managed and nic_of(snapshot, found[0].ifname) != home:
            out[key] = (home, addr)
    return out


def still_leaving(leaving: Mapping[str, tuple[str, AddressConfig]],
                  snapshot: Snapshot) -> dict[str, tuple[str, AddressConfig]]:
    """The leaving addresses not home yet (one that is home, or on no device, is forgotten)."""
    out: dict[str, tuple[str, AddressConfig]] = {}
    for key, (home, addr) in leaving.items():
        found = snapshot.where_is(addr.address.ip)
        if len(found) == 1 and nic_of(snapshot, found[0].ifname) != home:
            out[key] = (home, addr)
    return out
