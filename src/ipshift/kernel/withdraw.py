"""Withdrawing a failed NIC's routes and putting them back (``DemoteRoutes`` / ``RestoreRoutes``).

Theory of operation: while a NIC is failed, every main-table unicast route
through it is removed (except IPv6 link-local ones), so that nothing the
gateway sends leaves through a dead link, even on kernels or setups where
``ignore_routes_with_linkdown`` does not apply. Each withdrawn route is kept
exactly as the kernel had it (protocol, scope, metric, preferred source) in
:class:`Withdrawn`, which the daemon journals; when the NIC is healthy again
the routes are added back with the same attributes. The route dump goes
through :func:`ipshift.kernel.batch.dump_routes` (the kernel filters by table
and device); the changes go through pyroute2's ``AsyncIPRoute``.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from ipshift.model import Route

log = logging.getLogger("ipshift.withdraw")

ALREADY_GONE = {errno.EADDRNOTAVAIL, errno.ESRCH, errno.ENOENT, errno.ENODEV}
ALREADY_DONE = {errno.EEXIST}
AF_INET = 2
AF_INET6 = 10
RT_TABLE_MAIN = 254
PROTOCOLS = {"kernel": 2, "boot": 3, "static": 4, "dhcp": 16, "ra": 9}
SCOPES = {"universe": 0, "link": 253, "host": 254}


def route_kw(r: Route, idx: int) -> dict[str, Any]:
    """pyroute2 keywords that add or delete ``r`` through device ``idx`` with every attribute it had."""
    kw: dict[str, Any] = {"dst": str(r.dst.network_address), "dst_len": r.dst.prefixlen, "oif": idx,
                          "family": AF_INET if r.dst.version == 4 else AF_INET6, "table": r.table,
                          "proto": PROTOCOLS.get(r.proto, int(r.proto) if r.proto.isdigit() else 4),
                          "scope": SCOPES.get(r.scope, 0)}
    if r.gateway is not None:
        kw["gateway"] = str(r.gateway)
    if r.metric is not None:
        kw["priority"] = r.metric
    if r.src is not None:
        kw["prefsrc"] = str(r.src)
    return kw


class Withdrawn:
    """The routes withdrawn from each failed NIC (the only record of them: journaled by the daemon)."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Route]] = {}

    async def withdraw(self, ipr: Any, ifname: str, idx: int) -> None:
        """Remove every main-table route through ``ifname`` and remember it."""
        from ipshift.kernel import batch as nb
        from ipshift.kernel.convert import routes_from_msg

        saved = self.routes.setdefault(ifname, [])
        for family in (AF_INET, AF_INET6):
            for msg in nb.dump_routes(family, RT_TABLE_MAIN, idx):
                for r in routes_from_msg(msg, {idx: ifname}):
                    if r.ifname != ifname or r.type != "unicast":
                        continue
                    if r.dst.version == 6 and r.dst.network_address.is_link_local:
                        continue
                    try:
                        await ipr.route("del", **route_kw(r, idx))
                    except NetlinkError as exc:
                        if exc.code not in ALREADY_GONE:
                            log.warning("could not withdraw %s dev %s: %s", r.dst, ifname, exc)
                        continue
                    saved.append(r)
        if saved:
            log.info("withdrew %d route(s) through %s while it is failed", len(saved), ifname)

    async def restore(self, ipr: Any, ifname: str, idx: int | None) -> None:
        """Put back what :meth:`withdraw` removed from ``ifname`` (now device ``idx``)."""
        if idx is None:  # the device is gone: keep the routes for when it is back
            return
        routes = self.routes.pop(ifname, [])
        if not routes:
            return
        restored = 0
        for r in routes:
            try:
                await ipr.route("add", **route_kw(r, idx))
                restored += 1
            except NetlinkError as exc:
                if exc.code not in ALREADY_DONE:
                    log.info("not restoring %s dev %s: %s", r.dst, ifname, exc.args[-1])
        log.info("restored %d of %d route(s) through %s", restored, len(routes), ifname)
