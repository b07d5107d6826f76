"""A failed NIC's routes: kept before its addresses go, moved or withdrawn, and always put back.

Theory of operation
-------------------
:class:`Withdrawn` is the ledger of the routes ipshift took from each failed
NIC, and the only one. A failover

1. **saves** every main-table unicast route through the NIC (``SaveRoutes``)
   before the NIC's addresses are removed -- when a NIC loses its last IPv4
   address the kernel deletes every IPv4 route through it itself, DHCP and
   router-advertisement routes included -- and the ledger is made durable
   (``persist``) before anything is deleted;
2. **moves** the routes whose gateway is on a subnet that moved (or, IPv6, a
   link-local gateway) to the survivor with their own protocol, metric and
   preferred source (``MoveRoutes``), noting each copy it made;
3. **withdraws** what is left (``DemoteRoutes``), so nothing leaves through the
   dead link whatever ``ignore_routes_with_linkdown`` says.

Recovery (``RestoreRoutes``) adds each saved route back as the kernel had it,
with ``NLM_F_APPEND``: a route to the same prefix through another NIC (the
survivor's connected route of the same subnet, typically) coexists instead of
making the add fail with EEXIST; reads the NIC's routes back; removes the
moved copy of each route the kernel shows again, and keeps in the ledger
whatever it does not show (with its copy left where it serves), to try again
-- the daemon asks again while anything is pending. Every change of the ledger is handed to
``persist`` before this returns.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from ipshift.model import Route

log = logging.getLogger("ipshift.withdraw")

ALREADY_GONE = {errno.EADDRNOTAVAIL, errno.ESRCH, errno.ENOENT, errno.ENODEV}
ALREADY_DONE = {errno.EEXIST}
AF_INET = 2
AF_INET6 = 10
RT_TABLE_MAIN = 254
SCOPES = {"universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}


def _protocol(name: str) -> int:
    from ipshift.kernel.convert import ROUTE_PROTOS

    numbers = {v: k for k, v in ROUTE_PROTOS.items()}
    if name in numbers:
        return numbers[name]
    return int(name) if name.isdigit() else 4


def route_kw(r: Route, idx: int) -> dict[str, Any]:
    """pyroute2 keywords that add or delete ``r`` through device ``idx`` with every attribute it had."""
    kw: dict[str, Any] = {"dst": str(r.dst.network_address), "dst_len": r.dst.prefixlen, "oif": idx,
                          "family": AF_INET if r.dst.version == 4 else AF_INET6, "table": r.table,
                          "proto": _protocol(r.proto), "scope": SCOPES.get(r.scope, 0)}
    if r.gateway is not None:
        kw["gateway"] = str(r.gateway)
    if r.metric is not None:
        kw["priority"] = r.metric
    if r.src is not None:
        kw["prefsrc"] = str(r.src)
    return kw


def _route_fields(r: Route) -> dict[str, Any]:
    """``route_kw``'s attributes for :func:`ipshift.kernel.batch.route_message`."""
    return {"table": r.table, "proto": _protocol(r.proto), "scope": SCOPES.get(r.scope, 0), "gateway": r.gateway,
            "metric": r.metric, "src": r.src}


def key(r: Route) -> tuple[object, ...]:
    """What makes a route the same route (its device aside)."""
    return (r.dst, r.gateway, r.table, r.metric)


def dump(ifname: str, idx: int) -> list[Route]:
    """The main-table unicast routes through device ``idx`` (kernel-filtered dump)."""
    from ipshift.kernel import batch as nb
    from ipshift.kernel import rawdump
    from ipshift.kernel.convert import routes_from_msg

    out: list[Route] = []
    try:  # read from the netlink bytes; a kernel without strict checking: pyroute2's decoder
        found = rawdump.routes({idx: ifname}, RT_TABLE_MAIN, idx)
    except OSError:
        found = [r for family in (AF_INET, AF_INET6) for msg in nb.dump_routes(family, RT_TABLE_MAIN, idx)
                 for r in routes_from_msg(msg, {idx: ifname})]
    for r in found:
        if r.ifname == ifname and r.type == "unicast" and not (
                r.dst.version == 6 and r.dst.network_address.is_link_local):
            out.append(r)
    return out


WITHDRAWN_FILE = "withdrawn.json"


class Withdrawn:
    """See the module docstring. ``persist(ledger)`` makes the ledger durable (synchronously)."""

    @classmethod
    def open(cls, state_dir: str | Path, legacy: Mapping[str, Sequence[Route]] | None = None) -> Withdrawn:
        """The ledger of ``state_dir/withdrawn.json``, written there (atomically, synchronously) at
        every change. A file that cannot be read is logged and the ledger starts empty; a write that
        fails is logged and the failover goes on (its addresses matter more than the ledger).
        ``legacy``: the withdrawn routes a state file of the first versions kept, merged in."""
        import json

        from ipshift.journal import write_atomic

        path = Path(state_dir) / WITHDRAWN_FILE

        def persist(doc: Mapping[str, Any]) -> None:
            try:
                write_atomic(path, json.dumps({"version": 1, **doc}, sort_keys=True).encode())
            except OSError as exc:
                log.error("cannot write %s: %s (withdrawn routes are not durable)", path, exc)

        ledger = cls(persist)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            ledger.load(doc)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            ledger.routes.clear()
            ledger.moved.clear()
        for nic, routes in (legacy or {}).items():
            ledger._keep(nic, routes)
        return ledger

    def __init__(self, persist: Callable[[Mapping[str, Any]], None] | None = None) -> None:
        self.persist = persist
        self.routes: dict[str, list[Route]] = {}  # NIC -> its routes as they were
        self.moved: dict[str, list[Route]] = {}  # NIC -> the copies made on survivors (ifname: where)

    # -- the ledger

    def load(self, doc: Mapping[str, Any]) -> None:
        from ipshift.journal import route_from_doc

        for field_name, into in (("routes", self.routes), ("moved", self.moved)):
            for nic, routes in (doc.get(field_name) or {}).items():
                merged = {key(r): r for r in into.get(str(nic), [])}
                merged.update({key(r): r for r in (route_from_doc(d) for d in routes)})
                into[str(nic)] = list(merged.values())

    def doc(self) -> dict[str, Any]:
        from ipshift.journal import route_to_doc

        return {"routes": {n: [route_to_doc(r) for r in rs] for n, rs in self.routes.items() if rs},
                "moved": {n: [route_to_doc(r) for r in rs] for n, rs in self.moved.items() if rs}}

    def _changed(self) -> None:
        if self.persist is not None:
            self.persist(self.doc())

    def _keep(self, ifname: str, routes: Iterable[Route]) -> bool:
        saved = self.routes.setdefault(ifname, [])
        known = {key(r) for r in saved}
        new = [r for r in routes if key(r) not in known]
        saved.extend(new)
        return bool(new)

    # -- the steps

    def save(self, ifname: str, idx: int) -> None:
        """``SaveRoutes``: the NIC's routes into the ledger, durable before this returns."""
        if self._keep(ifname, dump(ifname, idx)):
            self._changed()

    async def move(self, ipr: Any, source: str, source_idx: int | None, target: str, target_idx: int,
                   routes: Sequence[Route], batch: Any = None) -> list[str]:
        """``MoveRoutes``: each route added on ``target`` (as it was), then removed from ``source``;
        the error of each ("" = done). ``batch``: a :class:`~ipshift.kernel.batch.NetlinkBatch`, to
        send the adds (then the removals) in one batch each instead of a request at a time."""
        self._keep(source, routes)
        copies = self.moved.setdefault(source, [])
        if batch is not None:
            return self._move_batched(batch, source_idx, target, target_idx, routes, copies)
        errors: list[str] = []
        for r in routes:
            copy = replace(r, ifname=target)
            try:
                await ipr.route("append", **route_kw(copy, target_idx))
            except NetlinkError as exc:
                if exc.code not in ALREADY_DONE:
                    errors.append(f"{r.dst}: kernel refused: {exc.args[-1]} (errno {exc.code})")
                    continue
            if all(key(c) != key(copy) or c.ifname != target for c in copies):
                copies.append(copy)
            errors.append("")
            if source_idx is not None:
                try:
                    await ipr.route("del", **route_kw(r, source_idx))
                except NetlinkError as exc:
                    if exc.code not in ALREADY_GONE:
                        log.warning("could not remove %s dev %s: %s", r.dst, source, exc)
        self._changed()
        return errors

    def _move_batched(self, batch: Any, source_idx: int | None, target: str, target_idx: int,
                      routes: Sequence[Route], copies: list[Route]) -> list[str]:
        from ipshift.kernel.batch import route_message

        known = {(key(c), c.ifname) for c in copies}
        added = batch.messages([route_message(True, r.dst, target_idx, **_route_fields(r)) for r in routes])
        errors: list[str] = []
        gone: list[Route] = []
        for r, code in zip(routes, added):
            if code and code not in ALREADY_DONE:
                errors.append(f"{r.dst}: kernel refused: {os.strerror(code)} (errno {code})")
                continue
            copy = replace(r, ifname=target)
            if (key(copy), target) not in known:
                known.add((key(copy), target))
                copies.append(copy)
            errors.append("")
            gone.append(r)
        if source_idx is not None and gone:
            for r, code in zip(gone, batch.messages([route_message(False, r.dst, source_idx, **_route_fields(r))
                                                     for r in gone])):
                if code and code not in ALREADY_GONE:
                    log.warning("could not remove %s dev %s: %s", r.dst, r.ifname, os.strerror(code))
        self._changed()
        return errors

    async def withdraw(self, ipr: Any, ifname: str, idx: int) -> None:
        """``DemoteRoutes``: remove every route still through ``ifname``, kept in the ledger first."""
        left = dump(ifname, idx)
        if self._keep(ifname, left):
            self._changed()
        removed = 0
        for r in left:
            try:
                await ipr.route("del", **route_kw(r, idx))
                removed += 1
            except NetlinkError as exc:
                if exc.code not in ALREADY_GONE:
                    log.warning("could not withdraw %s dev %s: %s", r.dst, ifname, exc)
        if removed:
            log.info("withdrew %d route(s) through %s while it is failed", removed, ifname)

    def pending(self) -> frozenset[str]:
        """The NICs whose routes are not all back (or whose moved copies are still elsewhere)."""
        return frozenset(n for n in set(self.routes) | set(self.moved) if self.routes.get(n) or self.moved.get(n))

    async def restore(self, ipr: Any, ifname: str, idx: int | None, index_of: Callable[[str], int | None]) -> None:
        """``RestoreRoutes``: the ledger's routes of ``ifname`` back; then, for each one the kernel
        shows again, its moved copy goes. What is not back stays in the ledger, with its copy where
        it is: the gateway is never left without the route."""
        if idx is None:  # the device is gone: keep everything for when it is back
            return
        saved = list(self.routes.get(ifname, ()))
        copies = list(self.moved.get(ifname, ()))
        if not saved and not copies:
            return
        for r in saved:
            try:
                await ipr.route("append", **route_kw(r, idx))
            except NetlinkError as exc:
                if exc.code not in ALREADY_DONE:
                    log.info("cannot restore %s dev %s yet: %s", r.dst, ifname, exc.args[-1])
        present = {key(r) for r in dump(ifname, idx)}
        missing = [r for r in saved if key(r) not in present]
        kept: list[Route] = []
        for c in copies:
            where = index_of(c.ifname) if c.ifname else None
            if key(c) not in present or where is None:
                kept.append(c)  # the original is not back (or its device is unknown): the copy serves
                continue
            try:
                await ipr.route("del", **route_kw(c, where))
            except NetlinkError as exc:
                if exc.code not in ALREADY_GONE:
                    log.warning("cannot remove the moved copy of %s from %s: %s", c.dst, c.ifname, exc.args[-1])
                    kept.append(c)
        self.routes[ifname] = missing
        self.moved[ifname] = kept
        if missing:
            log.warning("restored %d of %d route(s) through %s; kept for the next try: %s", len(saved) - len(missing),
                        len(saved), ifname, ", ".join(str(r.dst) for r in missing))
        else:
            log.info("restored %d route(s) through %s", len(saved), ifname)
        self._changed()
