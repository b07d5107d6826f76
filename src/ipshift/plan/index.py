"""What the planner reads of a configuration and a snapshot over and over, kept (pure).

Theory of operation
-------------------
A failover must cost what the failed NIC holds, not what the gateway holds. Two
kinds of index make that so:

* :func:`config_index` -- per configuration (built once, on first use, and kept
  while that :class:`~ipshift.config.Config` object is among the last few
  used): the configured addresses by IP and by NIC, which NICs have a VLAN
  address, and the configured routes a NIC's subnets claim;
* per-device counts, kept in the ``memo`` of a snapshot's
  :class:`~ipshift.model.DeviceAddresses` (the view shares that object between
  snapshots while the device's addresses stay the same, so a count is made
  once per change of that device): its global addresses, how many configured
  addresses of each NIC it holds, and how many of its home NIC's configured
  addresses it holds with the configured prefix.

:func:`settled` answers "is every address of this NIC at home, once, as
configured, with nothing to finish?" from those counts, so the planner skips
a healthy NIC's failback walk unless one of its devices changed. Nothing here
performs I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ipshift.config import AddressConfig, Config, RouteConfig
from ipshift.model import Address, DeviceAddresses, IPAddress, IPInterface, IPNetwork, Snapshot

_KEPT = 4  # configurations whose index is kept (the running one, and the one before a reload)


@dataclass(frozen=True, slots=True, eq=False)
class ConfigIndex:
    """One configuration's addresses by IP and by NIC (sorted as the planner walks them)."""

    by_ip: Mapping[IPAddress, tuple[str, AddressConfig]]
    order: Mapping[IPAddress, int]  # position in ``Config.all_addresses()``
    of: Mapping[str, tuple[AddressConfig, ...]]  # per NIC, by (version, IP)
    vlan: frozenset[str]  # NICs with a VLAN address
    claimable: Mapping[str, tuple[RouteConfig, ...]]  # routes with a gateway on one of the NIC's subnets
    nets: Mapping[tuple[str, int | None], tuple[IPInterface, ...]]  # configured addresses per (NIC, VLAN)

    def addresses(self, nic: str) -> tuple[AddressConfig, ...]:
        return self.of.get(nic, ())


_cache: list[tuple[Config, ConfigIndex]] = []


def config_index(config: Config) -> ConfigIndex:
    """The index of ``config`` (by identity: a configuration never changes)."""
    for c, idx in _cache:
        if c is config:
            return idx
    idx = _build(config)
    _cache.insert(0, (config, idx))
    del _cache[_KEPT:]
    return idx


def _build(config: Config) -> ConfigIndex:
    by_ip: dict[IPAddress, tuple[str, AddressConfig]] = {}
    order: dict[IPAddress, int] = {}
    of: dict[str, tuple[AddressConfig, ...]] = {}
    nets: dict[tuple[str, int | None], list[IPInterface]] = {}
    claimable: dict[str, tuple[RouteConfig, ...]] = {}
    for i, (home, addr) in enumerate(config.all_addresses()):
        by_ip.setdefault(addr.address.ip, (home, addr))
        order.setdefault(addr.address.ip, i)
        nets.setdefault((home, addr.vlan), []).append(addr.address)
    for name, iface in config.interfaces.items():
        of[name] = tuple(sorted(iface.addresses, key=lambda a: (a.address.version, a.address.ip)))
        networks = {a.address.network for a in iface.addresses}
        claimable[name] = tuple(r for r in iface.routes if r.via is not None
                                and any(r.via in n for n in networks))
    return ConfigIndex(by_ip, order, of, frozenset(n for n, i in config.interfaces.items()
                                                   if any(a.vlan is not None for a in i.addresses)),
                       claimable, {k: tuple(v) for k, v in nets.items()})


# --------------------------------------------------------------------------- per-device counts


def managed_count(dev: DeviceAddresses) -> int:
    """The device's global addresses (not link-local)."""
    n = dev.memo.get("managed")
    if not isinstance(n, int):
        n = sum(1 for a in dev.by_ip.values() if is_global(a))
        dev.memo["managed"] = n
    return n


def is_global(a: Address) -> bool:
    if a.scope != "global":
        return False
    return not (a.ip.version == 6 and a.ip.is_link_local)


def homes_held(idx: ConfigIndex, dev: DeviceAddresses) -> Mapping[str, int]:
    """Per NIC, how many of its configured addresses the device holds."""
    key = ("homes", idx)
    got = dev.memo.get(key)
    if isinstance(got, dict):
        return got
    counts: dict[str, int] = {}
    for ip in dev.by_ip:
        hit = idx.by_ip.get(ip)
        if hit is not None:
            counts[hit[0]] = counts.get(hit[0], 0) + 1
    dev.memo[key] = counts
    return counts


def at_home(idx: ConfigIndex, nic: str, dev: DeviceAddresses) -> int:
    """How many of ``nic``'s configured addresses its device ``dev`` holds with the configured prefix."""
    key = ("home", idx, nic)
    got = dev.memo.get(key)
    if isinstance(got, int):
        return got
    n = 0
    for addr in idx.addresses(nic):
        a = dev.by_ip.get(addr.address.ip)
        if a is not None and a.interface == addr.address:
            n += 1
    dev.memo[key] = n
    return n


def kernel_nets(dev: DeviceAddresses) -> tuple[IPNetwork, ...]:
    """The distinct subnets of the device's global addresses, in order."""
    got = dev.memo.get("nets")
    if isinstance(got, tuple):
        return got
    nets = tuple(dict.fromkeys(a.interface.network for a in dev.by_ip.values() if is_global(a)))
    dev.memo["nets"] = nets
    return nets


def settled(config: Config, snapshot: Snapshot, nic: str, managed: frozenset[str]) -> bool:
    """Every configured address of ``nic`` (none on a VLAN) is on ``nic`` with its configured prefix
    and on no other managed device, and no configured route its subnets claim lies on another
    managed device: its failback plan has nothing to do (no moves, no refusals)."""
    idx = config_index(config)
    addrs = idx.addresses(nic)
    if nic in idx.vlan:
        return False
    table = snapshot.table
    if addrs:
        dev = table.device(nic)
        if dev is None or at_home(idx, nic, dev) != len(addrs):
            return False
        for name in managed:
            other = table.device(name)
            if name != nic and other is not None and homes_held(idx, other).get(nic):
                return False
    for r in idx.claimable.get(nic, ()):
        for kr in snapshot.routes_to(r.to, r.via):
            if kr.table == 254 and kr.ifname is not None and kr.ifname != nic and kr.ifname in managed:
                cfg = config.interfaces.get(kr.ifname)
                if cfg is None or not any(o.to == r.to and o.via == r.via for o in cfg.routes):
                    return False
    return True
