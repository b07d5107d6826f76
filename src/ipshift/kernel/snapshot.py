"""Reading a namespace's network state into a :class:`~ipshift.model.Snapshot`.

Theory of operation: one netlink dump each of links, addresses (IPv4 and
IPv6), routes and neighbours, over one ``IPRoute`` socket, plus the per-link
sysctls from ``/proc/sys`` and the kernel feature probe. The dumps are not one
atomic reading: an address or route whose link appeared after the link dump
is left out (the next snapshot has it).

The daemon's own reads (no ``ipr`` handed in) take the addresses and routes
from :mod:`ipshift.kernel.rawdump`, which reads the netlink bytes itself (a
re-read of 10,000 addresses through pyroute2's decoder took over a second);
the messages of the other dumps become values through the pure converters of
:mod:`ipshift.kernel.convert` (which also holds the kernel's rules for the
effective sysctl values); they are re-exported here, so that
``from ipshift.kernel.snapshot import link_from_msg`` keeps working.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from ipshift.kernel.convert import (
    AF_INET,
    AF_INET6,
    ARPHRD_LOOPBACK,
    IPV4_KEYS,
    IPV6_KEYS,
    RT_TABLE_MAIN,
    Msg,
    address_from_msg,
    effective_sysctls,
    link_from_msg,
    neighbour_from_msg,
    nla,
    routes_from_msg,
)
from ipshift.kernel.features import probe_features
from ipshift.kernel.netns import call_in_netns
from ipshift.kernel.rawdump import AddressKey as rawdump_key
from ipshift.model import Address, KernelFeatures, Link, LinkSysctls, Neighbour, Route, Snapshot

__all__ = [
    "Msg",
    "address_from_msg",
    "effective_sysctls",
    "link_from_msg",
    "neighbour_from_msg",
    "nla",
    "read_addresses",
    "read_links",
    "read_neighbours",
    "read_routes",
    "read_snapshot",
    "read_sysctls",
    "routes_from_msg",
]


# ------------------------------------------------------------------- sysctls


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_raw_sysctls(conf: str, proc_sys: str = "/proc/sys") -> dict[str, int | None]:
    """The raw values of the keys for ``conf`` (a link name, ``all`` or ``default``)."""
    values: dict[str, int | None] = {}
    for key in IPV4_KEYS:
        values[key] = _read_int(f"{proc_sys}/net/ipv4/conf/{conf}/{key}")
    for key in IPV6_KEYS:
        values[key] = _read_int(f"{proc_sys}/net/ipv6/conf/{conf}/{key}")
    return values


def read_sysctls(ifnames: Iterable[str], netns: str | None = None) -> dict[str, LinkSysctls]:
    """Effective sysctls of ``ifnames`` in namespace ``netns`` (None: the caller's)."""
    names = list(ifnames)

    def read() -> dict[str, LinkSysctls]:
        every = read_raw_sysctls("all")
        return {name: effective_sysctls(every, read_raw_sysctls(name)) for name in names}

    return call_in_netns(netns, read)


# ----------------------------------------------------------------------- I/O


def read_links(ipr: Any) -> tuple[Link, ...]:
    return tuple(sorted((link_from_msg(m) for m in ipr.link("dump")), key=lambda l: l.index))


def _ifnames(links: Iterable[Link]) -> dict[int, str]:
    return {link.index: link.name for link in links}


def read_addresses(ipr: Any, links: Iterable[Link]) -> tuple[Address, ...]:
    ifnames = _ifnames(links)
    found = (address_from_msg(m, ifnames) for m in ipr.addr("dump"))
    return tuple(a for a in found if a is not None)


def read_routes(ipr: Any, links: Iterable[Link], table: int | None = RT_TABLE_MAIN, *,
                kernel_filter: bool = False, netns: str | None = None) -> tuple[Route, ...]:
    """The unicast routes of ``table`` (None: every table but the local one).

    ``kernel_filter``: ask the kernel for ``table`` only (``batch.dump_routes``, strict checking,
    in namespace ``netns``: the one ``ipr`` talks to) instead of ``ipr``'s plain dump of every
    table -- with 10,000 addresses, 20,000 local routes for pyroute2 to decode (0.7 s) to keep a
    handful.
    """
    ifnames = _ifnames(links)
    if kernel_filter and table is not None:
        from ipshift.kernel import batch as nb

        main = table
        try:
            msgs = call_in_netns(netns, lambda: [m for family in (AF_INET, AF_INET6)
                                                 for m in nb.dump_routes(family, main, None)])
        except OSError:  # a kernel without strict checking or without IPv6: the plain dump below
            pass
        else:
            return tuple(r for m in msgs for r in routes_from_msg(m, ifnames, table))
    return tuple(r for m in ipr.route("dump", family=0) for r in routes_from_msg(m, ifnames, table))


def read_neighbours(ipr: Any, links: Iterable[Link]) -> tuple[Neighbour, ...]:
    links = tuple(links)
    ifnames = _ifnames(links)
    loopbacks = {link.index for link in links if link.link_type == ARPHRD_LOOPBACK}
    found = (neighbour_from_msg(m, ifnames, loopbacks) for m in ipr.neigh("dump"))
    return tuple(n for n in found if n is not None)


def read_snapshot(
    ipr: Any | None = None,
    *,
    netns: str | None = None,
    features: KernelFeatures | None = None,
) -> Snapshot:
    """Read the namespace ``ipr`` talks to (by default: open one on the current namespace).

    ``netns`` names the namespace when it is not the caller's own: without
    ``ipr`` an ``IPRoute(netns=netns, flags=0)`` is opened (and closed), and
    the ``/proc`` reads (sysctls, feature checks) happen from a helper thread
    inside it. Pass it whenever ``ipr`` looks at another namespace, or the
    sysctls describe the caller's namespace instead. ``features`` skips the
    kernel probe (features do not change while a daemon runs).
    """
    if ipr is None:
        return _with_ipr(netns, lambda own: _read(own, netns, features, kernel_filter=True))
    return _read(ipr, netns, features, kernel_filter=False)


def _read(ipr: Any, netns: str | None, features: KernelFeatures | None, *, kernel_filter: bool) -> Snapshot:
    links = read_links(ipr)
    raw = _read_raw(links, netns) if kernel_filter else None
    if raw is not None:
        addresses, routes = raw
    else:
        addresses = read_addresses(ipr, links)
        routes = read_routes(ipr, links, kernel_filter=kernel_filter, netns=netns)
    neighbours = read_neighbours(ipr, links)
    sysctls = read_sysctls([link.name for link in links], netns)
    if features is None:
        features = probe_features(ipr, netns)
    return Snapshot(
        links=links,
        addresses=addresses,
        routes=routes,
        neighbours=neighbours,
        sysctls=sysctls,
        features=features,
    )


def _read_raw(links: Iterable[Link], netns: str | None) -> tuple[tuple[Address, ...], tuple[Route, ...]] | None:
    """Addresses and main-table routes read from the netlink bytes (:mod:`ipshift.kernel.rawdump`);
    None when the kernel refuses the filtered route dump (no strict checking: the pyroute2 path)."""
    from ipshift.kernel import rawdump

    ifnames = _ifnames(links)

    def read() -> tuple[tuple[Address, ...], tuple[Route, ...]]:
        with _known_lock:  # (two re-reads may overlap: one at a time reuses the last one's objects)
            known = _known.setdefault(netns, {})
            found = tuple(rawdump.addresses(ifnames, known))
        return found, tuple(rawdump.routes(ifnames, RT_TABLE_MAIN))

    try:
        return call_in_netns(netns, read)
    except OSError:
        return None


# the addresses of the last dump per namespace (None: the caller's), reused by the next one
_known: dict[str | None, dict[rawdump_key, Address]] = {}
_known_lock = threading.Lock()


def _with_ipr(netns: str | None, fn: Callable[[Any], Snapshot]) -> Snapshot:
    from pyroute2.iproute.linux import IPRoute

    ipr = IPRoute() if netns is None else IPRoute(netns=netns, flags=0)
    try:
        return fn(ipr)
    finally:
        ipr.close()
