"""The eligibility checks: may this address live on that survivor? (pure)

Theory of operation
-------------------
:func:`evaluate` runs every check for one (address, candidate NIC) pair
against the configuration and a kernel snapshot and returns a
:class:`Candidate` listing the checks that failed. Each failure has a stable
code and one sentence for operators:

==================  ==========================================================
``same-network``    the survivor has an address (configured or in the kernel)
                    in a network that overlaps the address's network
``same-subnet``     ... and one in exactly the address's subnet (same prefix)
``survivor-healthy`` the survivor exists, is an Ethernet NIC, is admin up, has
                    carrier, an operational state that carries traffic (not
                    DORMANT: 802.1X), and no health verdict (path probes,
                    flapping) holds it down
``capacity``        below ``max_addresses``; the kernel can hold the address
                    (IPv6 present and enabled on the survivor)
``mac-capacity``    for ``mac: move``: macvlan in the kernel, an Ethernet
                    survivor, and room for one more unicast MAC
``vlan``            for ``vlan: N``: 802.1Q in the kernel and VLAN N permitted
                    on the survivor
``conflict``        nobody else uses or is configured to use the address
==================  ==========================================================

Nothing here performs I/O: conflict findings (RFC 5227 / DAD answers) and
health verdicts (path probes, flap hold-down) are inputs. :class:`Load`
carries what one planning run has already decided (addresses and MACs given
to each NIC) and the subnets it has read, so that no check rescans the
configuration per address; the configured addresses by NIC and the per-device
counts come from :mod:`ipshift.plan.index` (kept, not rebuilt per plan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ipshift.config import AddressConfig, Config
from ipshift.model import Address, IPAddress, IPInterface, IPNetwork, Link, Snapshot
from ipshift.plan.index import config_index, is_global, kernel_nets, managed_count

CHECK_CODES = (
    "same-network", "same-subnet", "survivor-healthy", "capacity", "mac-capacity", "vlan", "conflict",
)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed check: a stable code and a sentence."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A survivor that was considered and the checks it failed (empty: eligible)."""

    nic: str
    failures: tuple[Failure, ...]

    @property
    def eligible(self) -> bool:
        return not self.failures


@dataclass(slots=True)
class Load:
    """Addresses per NIC, counting moves planned so far (local to one planning run)."""

    counts: dict[str, int] = field(default_factory=dict)
    macs: dict[str, int] = field(default_factory=dict)
    # the distinct subnets of (NIC, VLAN), read once per run: config and snapshot do not change in it
    subnets: dict[tuple[str, int | None], tuple[IPNetwork, ...]] = field(default_factory=dict)
    # the checks that depend only on the survivor and the address's network, once per run
    same: dict[tuple[IPNetwork, str, int | None], tuple[Failure, ...]] = field(default_factory=dict)


# --------------------------------------------------------------------------- devices


def nic_of(snapshot: Snapshot, device: str) -> str:
    """The NIC under ``device``: its lower NIC for a macvlan/VLAN device, else the device itself."""
    link = snapshot.link(device)
    if link is not None and link.kind in ("macvlan", "vlan") and link.parent is not None:
        parent = snapshot.link_by_index(link.parent)
        if parent is not None:
            return parent.name
    return device


def managed_devices(config: Config, snapshot: Snapshot) -> frozenset[str]:
    """The configured NICs and the macvlan/VLAN devices stacked on them."""
    names = set(config.interfaces)
    for link in snapshot.links:
        if link.kind in ("macvlan", "vlan") and link.parent is not None:
            parent = snapshot.link_by_index(link.parent)
            if parent is not None and parent.name in config.interfaces:
                names.add(link.name)
    return frozenset(names)


def is_managed_address(a: Address) -> bool:
    """A global address (what a NIC's subnets and address count are made of)."""
    return is_global(a)


def _stacked(snapshot: Snapshot, nic: str) -> list[str]:
    """``nic`` and the macvlan/VLAN devices stacked on it."""
    return [nic] + [l.name for kind in ("macvlan", "vlan") for l in snapshot.children(nic, kind)]


def present_count(snapshot: Snapshot, nic: str) -> int:
    """Global addresses on ``nic`` and on the macvlan/VLAN devices stacked on it."""
    table = snapshot.table
    return sum(managed_count(dev) for d in _stacked(snapshot, nic) if (dev := table.device(d)) is not None)


def addresses_on(config: Config, snapshot: Snapshot, nic: str) -> list[tuple[str, AddressConfig]]:
    """Configured addresses that would have to move if ``nic`` failed now, as (home, address).

    Those the kernel shows on ``nic`` (or on a macvlan/VLAN device stacked on it; an address held
    twice counts for the first holder), and those homed on ``nic`` that are on no NIC at all yet.
    Costs what ``nic`` holds and is configured with, not what the gateway holds.
    """
    idx = config_index(config)
    result: dict[IPAddress, tuple[str, AddressConfig]] = {}
    for dev in _stacked(snapshot, nic):
        for a in snapshot.addresses_on(dev):
            hit = idx.by_ip.get(a.ip)
            if hit is not None and a.ip not in result:
                found = snapshot.where_is(a.ip)
                if nic_of(snapshot, found[0].ifname) == nic:
                    result[a.ip] = hit
    for addr in idx.addresses(nic):
        if addr.address.ip not in result and not snapshot.where_is(addr.address.ip):
            result[addr.address.ip] = (nic, addr)
    return sorted(result.values(), key=lambda item: (item[1].address.version, item[1].address.ip))


# --------------------------------------------------------------------------- the checks


def _survivor_networks(config: Config, snapshot: Snapshot, nic: str, vlan: int | None,
                       load: Load) -> tuple[IPNetwork, ...]:
    """The distinct subnets ``nic`` is on for ``vlan`` (None: untagged), from config and kernel."""
    key = (nic, vlan)
    if key not in load.subnets:
        configured = config_index(config).nets.get(key, ())
        nets: list[IPNetwork] = list(dict.fromkeys(i.network for i in configured))
        if snapshot.link(nic) is not None:
            if vlan is None:
                devices = [nic] + [m.name for m in snapshot.children(nic, "macvlan")]
            else:
                devices = [v.name for v in snapshot.children(nic, "vlan") if v.vlan_id == vlan]
            table = snapshot.table
            for dev in devices:
                held = table.device(dev)
                if held is not None:
                    nets.extend(kernel_nets(held))
        load.subnets[key] = tuple(dict.fromkeys(nets))
    return load.subnets[key]


def _check_network(iface: IPInterface, nets: Sequence[IPNetwork], nic: str, vlan: int | None) -> list[Failure]:
    same_family = [n for n in nets if n.version == iface.version]
    where = f"{nic}" if vlan is None else f"VLAN {vlan} of {nic}"
    failures: list[Failure] = []
    if not any(n.overlaps(iface.network) for n in same_family):
        have = ", ".join(sorted({str(n) for n in same_family})) or f"no IPv{iface.version} address"
        failures.append(Failure("same-network",
                                f"{where} is not on the network of {iface.network} (it has {have})"))
    if iface.network not in same_family:
        have = ", ".join(sorted({str(n) for n in same_family})) or f"no IPv{iface.version} subnet"
        failures.append(Failure("same-subnet",
                                f"{where} is not on subnet {iface.network} (it has {have})"))
    return failures


def _check_health(link: Link | None, nic: str, unhealthy: Mapping[str, str]) -> list[Failure]:
    if link is None:
        return [Failure("survivor-healthy", f"{nic} does not exist in the kernel")]
    if not link.is_ethernet:
        return [Failure("survivor-healthy", f"{nic} is not an Ethernet NIC (link type {link.link_type}"
                        f"{', no MAC' if not link.mac else ''}): ipshift moves addresses between Ethernet NICs")]
    if not link.admin_up:
        return [Failure("survivor-healthy", f"{nic} is administratively down")]
    if not link.carrier:
        return [Failure("survivor-healthy", f"{nic} has no carrier (link down)")]
    if not link.healthy:
        return [Failure("survivor-healthy", f"{nic} is not operational (operstate {link.operstate})")]
    if nic in unhealthy:
        return [Failure("survivor-healthy", f"{nic} is held down: {unhealthy[nic]}")]
    return []


def _check_capacity(config: Config, snapshot: Snapshot, nic: str, iface: IPInterface,
                    load: Load) -> list[Failure]:
    failures: list[Failure] = []
    limit = config.interfaces[nic].max_addresses if nic in config.interfaces else None
    held = load.counts.get(nic, 0)
    if limit is not None and held + 1 > limit:
        failures.append(Failure("capacity", f"{nic} already holds {held} addresses, its max_addresses is {limit}"))
    if iface.version == 6:
        if not snapshot.features.ipv6:
            failures.append(Failure("capacity", "this kernel has no IPv6 support"))
        elif snapshot.sysctl(nic).disable_ipv6 == 1:
            failures.append(Failure("capacity", f"IPv6 is disabled on {nic} (disable_ipv6=1)"))
    return failures


def _check_mac(config: Config, snapshot: Snapshot, link: Link | None, nic: str, load: Load) -> list[Failure]:
    failures: list[Failure] = []
    if snapshot.features.macvlan is False:
        failures.append(Failure("mac-capacity", "this kernel has no macvlan support, so no NIC can take a second MAC"))
    if link is not None and not link.is_ethernet:
        failures.append(Failure("mac-capacity", f"{nic} is not an Ethernet NIC and cannot take another MAC"))
    limit = config.interfaces[nic].max_extra_macs if nic in config.interfaces else None
    if limit is not None:
        used = load.macs.get(nic, 0)
        if used + 1 > limit:
            failures.append(Failure("mac-capacity",
                                    f"{nic} already carries {used} extra MACs, its max_extra_macs is {limit}"))
    return failures


def _check_vlan(config: Config, snapshot: Snapshot, nic: str, vlan: int) -> list[Failure]:
    failures: list[Failure] = []
    if snapshot.features.vlan_8021q is False:
        failures.append(Failure("vlan", f"this kernel has no 802.1Q VLAN support (8021q), so {nic} cannot carry VLAN {vlan}"))
    allowed = config.interfaces[nic].vlans if nic in config.interfaces else None
    if allowed is not None and vlan not in allowed:
        failures.append(Failure("vlan", f"VLAN {vlan} is not permitted on {nic} (vlans: {sorted(allowed)})"))
    return failures


def _check_conflict(config: Config, snapshot: Snapshot, ip: IPAddress, nic: str,
                    conflicts: Mapping[tuple[IPAddress, str], str], managed: frozenset[str]) -> list[Failure]:
    failures: list[Failure] = []
    if (ip, nic) in conflicts:
        failures.append(Failure("conflict", f"{ip} is in use on the network of {nic}: {conflicts[(ip, nic)]}"))
    for peer in config.peers:
        if ip in peer.addresses:
            failures.append(Failure("conflict", f"{ip} is configured on peer {peer.name}"))
    for addr in snapshot.where_is(ip):
        if addr.ifname not in managed:
            failures.append(Failure("conflict", f"{ip} is already on {addr.ifname}, which ipshift does not manage"))
    return failures


def evaluate(config: Config, snapshot: Snapshot, addr: AddressConfig, nic: str,
             *, load: Load, unhealthy: Mapping[str, str], conflicts: Mapping[tuple[IPAddress, str], str],
             managed_devices: frozenset[str]) -> Candidate:
    """Every check for moving ``addr`` onto ``nic``."""
    iface = addr.address
    link = snapshot.link(nic)
    key = (iface.network, nic, addr.vlan)
    same = load.same.get(key)
    if same is None:  # network and health: the same for every address of this subnet in this run
        found: list[Failure] = []
        trunked = (addr.vlan is not None and nic in config.interfaces
                   and addr.vlan in (config.interfaces[nic].vlans or ()))
        if not trunked:  # a NIC that declares VLAN N carries VLAN N's network, whatever addresses it has on it
            found += _check_network(iface, _survivor_networks(config, snapshot, nic, addr.vlan, load), nic, addr.vlan)
        found += _check_health(link, nic, unhealthy)
        same = load.same[key] = tuple(found)
    failures: list[Failure] = list(same)
    failures += _check_capacity(config, snapshot, nic, iface, load)
    if addr.mac == "move":
        failures += _check_mac(config, snapshot, link, nic, load)
    if addr.vlan is not None:
        failures += _check_vlan(config, snapshot, nic, addr.vlan)
    failures += _check_conflict(config, snapshot, iface.ip, nic, conflicts, managed_devices)
    return Candidate(nic, tuple(failures))
