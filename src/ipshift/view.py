"""The kernel view: the daemon's one cache of links, addresses and routes.

Theory of operation
-------------------
:class:`KernelView` is the only writer of what the daemon believes the kernel
holds. Three things change it:

* **events** from the netlink monitor (:meth:`~KernelView.apply_link`,
  :meth:`~KernelView.remove_link`, :meth:`~KernelView.apply_address`) -- on the
  hot path, so a failover plans from the view without a re-dump. A link event
  carries the whole decoded :class:`~ipshift.model.Link`; a device renamed
  keeps its addresses under the new name;
* **our own steps** (:meth:`~KernelView.note`): what a completed step changed
  is in the view at once, before the kernel's notification says so (routes
  have no notifications here at all);
* **re-reads** (:meth:`~KernelView.reread`): a full dump, in a worker thread.
  Events and route steps that happen while a dump runs may be newer than what
  it read, so each re-read keeps an *overlay* of them and lays it over the
  dump when it ends; two re-reads may overlap, each with its own overlay.

:meth:`~KernelView.snapshot` hands the planner an immutable
:class:`~ipshift.model.Snapshot`, built once per change (not per call) and
never by copying every address: the view keeps each device's addresses
apart, and a snapshot shares the :class:`~ipshift.model.DeviceAddresses` of
every device whose addresses did not change since the last one (with what
the planner derived from them); an event costs O(1), a snapshot O(devices +
addresses of the devices that changed), and the routes' index is shared
while the routes stay the same. A re-read keeps the tables of the devices
whose addresses it found unchanged.
``listener`` (the executor) hears of every link the view learns or forgets,
for its socket and ifindex caches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from ipshift.model import Address, AddressTable, DeviceAddresses, IPAddress, IPInterface, Link, Route, Snapshot
from ipshift.steps import AddAddress, AddRoute, DelAddress, DelLink, DelRoute, MoveRoutes, Step, stand_in_mac

log = logging.getLogger("ipshift.view")

AddrKey = tuple[str, IPAddress]


class LinkListener(Protocol):
    def learn_link(self, name: str, index: int, mac: str) -> None: ...
    def forget_link(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class LinkChange:
    """What :meth:`KernelView.apply_link` found: the link before (under its old name when it was
    renamed: ``renamed_from``); None for a device the view did not know."""

    old: Link | None
    renamed_from: str | None = None

    @property
    def new(self) -> bool:
        return self.old is None


@dataclass(slots=True)
class _Overlay:
    """What changed while one re-read's dump ran (None: gone)."""

    links: dict[str, Link | None] = field(default_factory=dict)
    addresses: dict[AddrKey, Address | None] = field(default_factory=dict)
    routes: list[tuple[bool, Route]] = field(default_factory=list)


def with_route_changes(routes: Sequence[Route], changes: Sequence[tuple[bool, Route]]) -> tuple[Route, ...]:
    """``routes`` after ``changes`` ((added?, route), in order). A route step names a destination,
    a gateway and a device: an addition replaces what had those three, a removal drops it."""
    by_key: dict[tuple[object, ...], list[Route]] = {}
    for r in routes:
        by_key.setdefault((r.dst, r.ifname, r.gateway), []).append(r)
    for added, route in changes:
        key = (route.dst, route.ifname, route.gateway)
        by_key.pop(key, None)
        if added:
            by_key[key] = [route]
    return tuple(r for rs in by_key.values() for r in rs)


class KernelView:
    """See the module docstring. ``reader`` dumps the kernel (blocking; run in a worker thread)."""

    def __init__(self, reader: Callable[[], Snapshot] | None = None, *, listener: LinkListener | None = None) -> None:
        self._reader = reader or _read_kernel
        self._listener = listener
        self._base = Snapshot()  # routes, neighbours, sysctls, features of the last dump
        self._links: dict[str, Link] = {}
        # addresses per device (what events change), the frozen tables the last snapshot shares,
        # the devices changed since, and how many devices hold each IP (for the duplicates)
        self._devs: dict[str, dict[IPAddress, Address]] = {}
        self._tables: dict[str, DeviceAddresses] = {}
        self._dirty: set[str] = set()
        self._holders: dict[IPAddress, int] = {}
        self._multi: set[IPAddress] = set()
        self._overlays: list[_Overlay] = []
        self._cached: Snapshot | None = None
        self._last: Snapshot | None = None  # the last snapshot made (its route index is shared)
        self._last_seen: dict[str, Link] = {}  # devices that are gone, as they were last seen
        self._own_mac: dict[str, str] = {}  # each device's own MAC: never a stand-in ipshift gave it

    def listen(self, listener: LinkListener) -> None:
        """From now on, tell ``listener`` of every link learnt or forgotten (and of those known now)."""
        self._listener = listener
        for link in self._links.values():
            listener.learn_link(link.name, link.index, link.mac)

    # ------------------------------------------------------------------ reads

    def snapshot(self) -> Snapshot:
        """The view as an immutable snapshot (the same object until something changes)."""
        if self._cached is None:
            for dev in self._dirty:
                held = self._devs.get(dev)
                if held:
                    self._tables[dev] = DeviceAddresses(dev, dict(held))
                else:
                    self._tables.pop(dev, None)
            self._dirty.clear()
            # devices in ifindex order, as a dump lists them: where_is() names the holders in that order
            order = sorted(self._tables, key=lambda d: ((l.index, d) if (l := self._links.get(d)) else (1 << 31, d)))
            table = AddressTable({d: self._tables[d] for d in order}, frozenset(self._multi))
            snap = replace(self._base, links=tuple(self._links.values()), addresses=table)
            if self._last is not None:
                snap.adopt_indexes(self._last)
            self._cached = self._last = snap
        return self._cached

    def address(self, ifname: str, ip: IPAddress) -> Address | None:
        """The address ``ip`` on ``ifname``, as the view has it now."""
        return self._devs.get(ifname, {}).get(ip)

    def link(self, name: str) -> Link | None:
        return self._links.get(name)

    @property
    def links(self) -> Mapping[str, Link]:
        return self._links

    def remembered(self) -> dict[str, Link]:
        """Every device the view knows or knew: the gone ones as they were last seen (a deleted
        NIC's MAC still moves with its ``mac: move`` addresses)."""
        return {**self._last_seen, **self._links}

    def own_macs(self) -> dict[str, str]:
        """Each device's own MAC: the last one it showed that is not the stand-in of the one before
        (:func:`~ipshift.steps.stand_in_mac`: what a NIC whose MAC moved away carries meanwhile)."""
        return dict(self._own_mac)

    def remember(self, links: Mapping[str, Link]) -> None:
        """Devices a previous run saw (the state file, with their own MACs): known as gone unless
        the kernel has them."""
        for name, link in links.items():
            self._last_seen.setdefault(name, link)
            self._learn_mac(link)

    def _learn_mac(self, link: Link) -> None:
        own = self._own_mac.get(link.name)
        if link.mac and link.mac != own and (own is None or link.mac != stand_in_mac(own)):
            self._own_mac[link.name] = link.mac

    @property
    def rereads_running(self) -> int:
        return len(self._overlays)


    def probe_source(self, nic: str, target: IPAddress) -> IPAddress | None:
        """The address a path probe from ``nic`` uses: its own, in the target's subnet (IPv6: or its
        link-local); None (0.0.0.0 for ARP) when it holds none, e.g. after its addresses moved away."""
        link_local: IPAddress | None = None
        for a in self._devs.get(nic, {}).values():
            ip = a.ip
            if ip.version != target.version:
                continue
            if ip.version == 6 and ip.is_link_local:
                link_local = ip
            elif target in a.network:
                return ip
        return link_local

    # ------------------------------------------------------------------ events

    def apply_link(self, link: Link) -> LinkChange:
        """A link's state as the kernel reported it (the whole link: it replaces what was there)."""
        renamed_from = None
        old = self._links.get(link.name)
        if old is None or old.index != link.index:
            for name, other in self._links.items():
                if other.index == link.index and name != link.name:
                    renamed_from = name
                    break
        if renamed_from is not None:
            old = self._links[renamed_from]
            self._forget(renamed_from, keep_addresses_as=link.name)
            if renamed_from in self._own_mac:
                self._own_mac[link.name] = self._own_mac[renamed_from]
        self._learn_mac(link)
        self._links[link.name] = link
        for o in self._overlays:
            o.links[link.name] = link
        self._cached = None
        if self._listener is not None:
            self._listener.learn_link(link.name, link.index, link.mac)
        return LinkChange(old, renamed_from)

    def remove_link(self, name: str) -> Link | None:
        """The device is gone (deleted, or moved to another namespace), and its addresses with it."""
        old = self._links.get(name)
        self._forget(name)
        return old

    def apply_address(self, added: bool, ifname: str, interface: IPInterface) -> None:
        ip = interface.ip
        if added:
            self._put(Address(ifname=ifname, interface=interface))
        else:
            self._drop(ifname, ip)
        for o in self._overlays:
            o.addresses[(ifname, ip)] = self.address(ifname, ip)
        self._cached = None

    def note(self, steps: Sequence[Step]) -> None:
        """Completed steps: what they changed goes into the view at once (see the module docstring).

        Route changes are applied in one pass (a batch of 1,000 route steps against 1,000 routes
        one at a time was a million comparisons)."""
        changes: list[tuple[bool, Route]] = []
        for step in steps:
            match step:
                case AddAddress(ifname=ifname, interface=iface):
                    self.apply_address(True, ifname, iface)
                case DelAddress(ifname=ifname, interface=iface):
                    self.apply_address(False, ifname, iface)
                case AddRoute(dst=dst, ifname=ifname, via=via, metric=metric):
                    changes.append((True, Route(dst=dst, ifname=ifname, gateway=via, metric=metric)))
                case DelRoute(dst=dst, ifname=ifname, via=via):
                    changes.append((False, Route(dst=dst, ifname=ifname, gateway=via)))
                case DelLink(name=name):  # (an if_empty one that found an address did not run: the
                    # re-read after the round shows it again)
                    self.remove_link(name)
                case MoveRoutes(source=source, target=target, routes=routes):
                    for r in routes:
                        changes.append((False, replace(r, ifname=source)))
                        changes.append((True, replace(r, ifname=target)))
                case _:
                    pass
        if changes:
            self._base = replace(self._base, routes=with_route_changes(self._base.routes, changes))
            for o in self._overlays:
                o.routes.extend(changes)
            self._cached = None

    # ------------------------------------------------------------------ re-reads

    async def reread(self, why: str, *, after: float = 0.0) -> None:
        """Dump the kernel in a worker thread (``after`` seconds from now); what changed meanwhile
        wins over the dump."""
        if after:
            await asyncio.sleep(after)
        overlay = _Overlay()
        self._overlays.append(overlay)
        try:
            snap = await asyncio.get_running_loop().run_in_executor(None, self._reader)
        finally:
            # by identity: two re-reads can run at once (the converge loop's and the monitor's after
            # an overrun), and their overlays compare equal until an event reaches only one of them
            self._overlays = [o for o in self._overlays if o is not overlay]
        self.load(snap, overlay)
        log.debug("kernel state read (%s): %d links, %d addresses", why, len(snap.links), len(snap.addresses))

    def load(self, snap: Snapshot, overlay: _Overlay | None = None) -> None:
        """Replace the view with ``snap`` (a dump), with ``overlay`` laid over it."""
        if overlay is not None and overlay.routes:
            snap = replace(snap, routes=with_route_changes(snap.routes, overlay.routes))
        links = {l.name: l for l in snap.links}
        for name, newer in (overlay.links.items() if overlay is not None else ()):
            if newer is None:
                links.pop(name, None)
            else:
                links[name] = newer
        devs: dict[str, dict[IPAddress, Address]] = {}
        for a in snap.addresses:
            if a.ifname in links:
                devs.setdefault(a.ifname, {})[a.ip] = a
        for (dev, ip), addr in (overlay.addresses.items() if overlay is not None else ()):
            if addr is None:
                devs.get(dev, {}).pop(ip, None)
            else:
                devs.setdefault(dev, {})[ip] = addr
        self._base = replace(snap, links=(), addresses=())
        self._last_seen.update({n: l for n, l in self._links.items() if n not in links})
        for link in links.values():
            self._learn_mac(link)
        self._links = links
        self._load_addresses(devs)
        self._cached = None
        if self._listener is not None:
            for link in links.values():
                self._listener.learn_link(link.name, link.index, link.mac)

    # ------------------------------------------------------------------ internals

    def _put(self, a: Address) -> None:
        held = self._devs.setdefault(a.ifname, {})
        if a.ip not in held:
            n = self._holders.get(a.ip, 0) + 1
            self._holders[a.ip] = n
            if n > 1:
                self._multi.add(a.ip)
        held[a.ip] = a
        self._dirty.add(a.ifname)

    def _drop(self, ifname: str, ip: IPAddress) -> None:
        held = self._devs.get(ifname)
        if held is None or held.pop(ip, None) is None:
            return
        if not held:
            del self._devs[ifname]
        n = self._holders.get(ip, 0) - 1
        if n <= 0:
            self._holders.pop(ip, None)
        else:
            self._holders[ip] = n
        if n <= 1:
            self._multi.discard(ip)
        self._dirty.add(ifname)

    def _load_addresses(self, devs: dict[str, dict[IPAddress, Address]]) -> None:
        """A dump's addresses: a device whose addresses are those of its current table keeps the
        table (and what readers derived from it)."""
        holders: dict[IPAddress, int] = {}
        for held in devs.values():
            for ip in held:
                holders[ip] = holders.get(ip, 0) + 1
        self._dirty = {dev for dev in set(devs) | set(self._tables)
                       if (t := self._tables.get(dev)) is None or dev not in devs or t.by_ip != devs[dev]}
        self._devs = {dev: held for dev, held in devs.items() if held}
        self._holders = holders
        self._multi = {ip for ip, n in holders.items() if n > 1}

    def _forget(self, name: str, keep_addresses_as: str | None = None) -> None:
        gone = self._links.pop(name, None)
        if gone is not None:
            self._last_seen[name] = gone
        moved = dict(self._devs.get(name, {}))
        for ip in moved:
            self._drop(name, ip)
        if keep_addresses_as is not None:
            for a in moved.values():
                self._put(replace(a, ifname=keep_addresses_as))
        for o in self._overlays:
            o.links[name] = None
            for ip in moved:
                o.addresses[(name, ip)] = None
            if keep_addresses_as is not None:
                for ip in moved:
                    o.addresses[(keep_addresses_as, ip)] = self.address(keep_addresses_as, ip)
        self._cached = None
        if self._listener is not None:
            self._listener.forget_link(name)


def _read_kernel() -> Snapshot:
    from ipshift.kernel.snapshot import read_snapshot

    return read_snapshot()
