"""The executor: plan steps in, netlink requests and frames out.

Theory of operation
-------------------
:class:`Executor` owns one ``AsyncIPRoute`` and one send-only AF_PACKET socket
per device, opened once and kept ready. ``run_step`` turns one step of
:mod:`ipshift.steps` into kernel calls with an exhaustive ``match``; an unknown
step is a programming error and fails loudly. Kernel errors are classified by
meaning, not by text (the ExaBGP habit): EEXIST on an add means already done,
EADDRNOTAVAIL/ESRCH/ENOENT/ENODEV on a delete means already gone; anything
else raises :class:`StepFailed` with the step and the kernel's errno, which
the daemon turns into an undo of that transaction.

``undo_of`` gives the inverse of a completed step (None for steps that need
none: flushes, announcements, probes), so a failed transaction can be rolled
back in reverse order.

Announcements send their first frame synchronously, inside ``run_step``, and
schedule the remaining ``count - 1`` frames on the event loop; the executor
keeps a reference to every task it creates and cancels them on close.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ipshift.model import IPAddress, IPNetwork, Route
from ipshift.steps import (
    AddAddress, AddMacvlan, AddRoute, AddVlan, Announce, CheckConflict, DelAddress, DelLink, DelNeighbours,
    DelRoute, DemoteRoutes, FlushNeighbours, FlushRouteCache, RestoreRoutes, Step,
)
from ipshift.wire.arp import build_gratuitous_arp
from ipshift.wire.ndp import build_unsolicited_na
from ipshift.wire.sender import FrameSocket, probe_conflict_v4, probe_conflict_v6

log = logging.getLogger("ipshift.apply")

ALREADY_GONE = {errno.EADDRNOTAVAIL, errno.ESRCH, errno.ENOENT, errno.ENODEV}
ALREADY_DONE = {errno.EEXIST}
NUD_PERMANENT = 0x80
NUD_NOARP = 0x40
AF_INET = 2
AF_INET6 = 10
RT_TABLE_MAIN = 254
RTN_UNICAST = 1


class StepFailed(Exception):
    """A step the kernel refused (or a conflict found); the transaction is undone."""

    def __init__(self, step: Step, reason: str, code: int | None = None, conflict: bool = False) -> None:
        self.step = step
        self.reason = reason
        self.code = code
        self.conflict = conflict
        super().__init__(f"{step.describe()}: {reason}")


@dataclass(frozen=True, slots=True)
class StepTiming:
    op: str
    text: str
    start: float  # monotonic
    ms: float
    ok: bool
    error: str = ""


def _version(ip: IPAddress | IPNetwork) -> int:
    return ip.version


def _family(version: int) -> int:
    return AF_INET if version == 4 else AF_INET6


@dataclass
class Executor:
    """Runs steps against the kernel of the namespace the process is in."""

    ipr: Any  # pyroute2.AsyncIPRoute
    proc_sys: str = "/proc/sys"
    kill_at: str | None = None  # test hook: SIGKILL ourselves right before this step op
    on_kill: Callable[[], None] | None = None
    _sockets: dict[str, FrameSocket] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _index: dict[str, int] = field(default_factory=dict)
    _mac: dict[str, str] = field(default_factory=dict)
    _promoted: set[str] = field(default_factory=set)
    demoted: dict[str, list[Route]] = field(default_factory=dict)
    _batch: Any = None  # kernel.batch.NetlinkBatch, opened on first bulk use
    batch_socket: bool = True  # address/route steps through kernel.batch (False: through pyroute2's socket)

    @classmethod
    async def open(cls, **kwargs: Any) -> "Executor":
        ipr = AsyncIPRoute()
        await ipr.link_lookup(ifname="lo")  # opens the socket now, not in the first failover
        ex = cls(ipr, **kwargs)
        if ex.batch_socket:
            from ipshift.kernel.batch import NetlinkBatch

            ex._batch = NetlinkBatch()
        return ex

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in self._sockets.values():
            sock.close_in_background()
        self._sockets.clear()
        if self._batch is not None:
            self._batch.close()
        self.ipr.close()

    # ------------------------------------------------------------------ link cache

    def learn_link(self, name: str, index: int, mac: str) -> None:
        """The daemon tells the executor what it knows of links (from events and dumps)."""
        if self._index.get(name) != index and name in self._sockets:
            self._sockets.pop(name).close_in_background()
        self._index[name] = index
        self._mac[name] = mac

    def forget_link(self, name: str) -> None:
        self._index.pop(name, None)
        self._mac.pop(name, None)
        sock = self._sockets.pop(name, None)
        if sock is not None:
            sock.close_in_background()

    def prepare(self, ifname: str) -> None:
        """Open the announcement socket of ``ifname`` now, so a failover does not wait for it."""
        if ifname not in self._sockets:
            self._sockets[ifname] = FrameSocket.open(ifname)

    async def _ifindex(self, name: str) -> int:
        idx = self._index.get(name)
        if idx is not None:
            return idx
        found = await self.ipr.link_lookup(ifname=name)
        if not found:
            raise LookupError(f"no device {name}")
        self._index[name] = found[0]
        return int(found[0])

    async def _macof(self, name: str) -> str:
        mac = self._mac.get(name)
        if mac:
            return mac
        idx = await self._ifindex(name)
        for msg in await self._dump(self.ipr.get_links(idx)):
            addr = msg.get("address")
            if addr:
                self._mac[name] = str(addr).lower()
                return self._mac[name]
        raise LookupError(f"no MAC for {name}")

    async def _dump(self, coro: Any) -> list[Any]:
        res = await coro
        if hasattr(res, "__aiter__"):
            return [m async for m in res]
        return list(res)

    # ------------------------------------------------------------------ steps

    async def run_step(self, step: Step) -> None:
        if self.kill_at is not None and type(step).__name__ == self.kill_at and self.on_kill is not None:
            self.on_kill()
        try:
            await self._run(step)
        except StepFailed:
            raise
        except NetlinkError as exc:
            raise StepFailed(step, f"kernel refused: {exc.args[1] if len(exc.args) > 1 else exc} "
                                   f"(errno {exc.code})", exc.code) from None
        except OSError as exc:
            raise StepFailed(step, f"{exc.strerror or exc} (errno {exc.errno})", exc.errno) from None
        except LookupError as exc:
            raise StepFailed(step, str(exc.args[0] if exc.args else exc), errno.ENODEV) from None

    async def _run(self, step: Step) -> None:
        if self.batch_socket and isinstance(step, (DelAddress, AddAddress, DelRoute, AddRoute)):
            # the kernel answers rtnetlink requests within the send: a blocking one-message batch
            # costs tens of microseconds, a third of a round trip through the async socket
            (error,) = await self.bulk([step])
            if error:
                raise StepFailed(step, error)
            return
        match step:
            case CheckConflict(ifname=ifname, ip=ip, timeout=timeout):
                mac = await self._macof(ifname)
                # An answer from one of this host's own NICs is no conflict: in a planned
                # failover (or a path failure) the source NIC still holds the address and
                # answers the probe itself.
                own = frozenset(m for m in self._mac.values() if m)
                if isinstance(ip, ipaddress.IPv4Address):
                    reason = await probe_conflict_v4(ifname, mac, ip, timeout, own_macs=own)
                else:
                    reason = await probe_conflict_v6(ifname, mac, ip, timeout, own_macs=own)
                if reason is not None:
                    raise StepFailed(step, reason, conflict=True)
            case DelAddress(ifname=ifname, interface=iface):
                try:
                    idx = await self._ifindex(ifname)
                except LookupError:
                    return  # the device is gone, and the address with it
                if iface.version == 4:
                    self.keep_secondaries(ifname)
                await self._tolerate(ALREADY_GONE, self.ipr.addr(
                    "del", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen))
            case AddAddress(ifname=ifname, interface=iface, nodad=nodad):
                idx = await self._ifindex(ifname)
                kw: dict[str, Any] = {}
                if nodad:
                    kw["flags"] = 0x02  # IFA_F_NODAD
                await self._tolerate(ALREADY_DONE, self.ipr.addr(
                    "add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen, **kw))
            case Announce(ifname=ifname, ip=ip, count=count, interval=interval):
                mac = await self._macof(ifname)
                frame = (build_gratuitous_arp(mac, ip) if isinstance(ip, ipaddress.IPv4Address)
                         else build_unsolicited_na(mac, ip))
                if ifname not in self._sockets:
                    self.prepare(ifname)
                sock = self._sockets[ifname]
                sock.send(frame)
                if count > 1:
                    self._spawn(self._announce_rest(sock, frame, count - 1, interval))
            case DelRoute(dst=dst, ifname=ifname, via=via, metric=metric):
                try:
                    idx = await self._ifindex(ifname)
                except LookupError:
                    return
                await self._tolerate(ALREADY_GONE, self.ipr.route("del", **self._route_kw(dst, idx, via, metric)))
            case AddRoute(dst=dst, ifname=ifname, via=via, metric=metric):
                idx = await self._ifindex(ifname)
                await self._tolerate(ALREADY_DONE, self.ipr.route("add", **self._route_kw(dst, idx, via, metric)))
            case DelNeighbours(ifname=ifname, network=network):
                try:
                    idx = await self._ifindex(ifname)
                except LookupError:
                    return
                await self._flush_neighbours(network, idx)
            case FlushNeighbours(network=network):
                await self._flush_neighbours(network, None)
            case FlushRouteCache(version=version):
                path = f"{self.proc_sys}/net/ipv{version}/route/flush"
                try:
                    with open(path, "w") as f:
                        f.write("1")
                except OSError as exc:
                    log.debug("route cache flush %s: %s", path, exc)
            case AddMacvlan(parent=parent, name=name, mac=mac):
                pidx = await self._ifindex(parent)
                await self._tolerate(ALREADY_DONE, self.ipr.link(
                    "add", ifname=name, kind="macvlan", link=pidx, macvlan_mode="private", address=mac))
                idx = await self._ifindex_fresh(name)
                await self.ipr.link("set", index=idx, state="up")
                self.learn_link(name, idx, mac)
            case AddVlan(parent=parent, name=name, vlan=vlan, mac=mac):
                pidx = await self._ifindex(parent)
                kw = {"address": mac} if mac else {}
                await self._tolerate(ALREADY_DONE, self.ipr.link(
                    "add", ifname=name, kind="vlan", link=pidx, vlan_id=vlan, **kw))
                idx = await self._ifindex_fresh(name)
                await self.ipr.link("set", index=idx, state="up")
            case DelLink(name=name):
                try:
                    idx = await self._ifindex_fresh(name)
                except LookupError:
                    return
                await self._tolerate(ALREADY_GONE, self.ipr.link("del", index=idx))
                self.forget_link(name)
            case DemoteRoutes(ifname=ifname):
                await self._demote(ifname)
            case RestoreRoutes(ifname=ifname):
                await self._restore(ifname)
            case _:
                raise AssertionError(f"the executor does not know the step {step!r}")

    # ------------------------------------------------------------------ bulk (many addresses at once)

    async def bulk(self, steps: list[Step]) -> list[str]:
        """Run many steps of ONE kind (DelAddress, AddAddress, DelRoute, AddRoute or Announce) with as
        few system calls as the kernel allows; one error text per step ("" when done)."""
        if not steps:
            return []
        kind = type(steps[0])
        if any(type(st) is not kind for st in steps):
            raise AssertionError("bulk() takes steps of one kind")
        if kind is Announce:
            return await self._bulk_announce(steps)  # type: ignore[arg-type]
        from ipshift.kernel import batch as nb

        if self._batch is None:
            self._batch = nb.NetlinkBatch()
        indexes: list[int | None] = []
        for st in steps:
            try:
                indexes.append(await self._ifindex(st.ifname))  # type: ignore[union-attr]
            except LookupError:
                indexes.append(None)
        live = [(i, st, idx) for i, (st, idx) in enumerate(zip(steps, indexes)) if idx is not None]
        errors = [""] * len(steps)
        gone = kind in (DelAddress, DelRoute)
        for i, st, idx in zip(range(len(steps)), steps, indexes):
            if idx is None and not gone:
                errors[i] = f"no device {st.ifname}"  # type: ignore[union-attr]
        if kind in (DelAddress, AddAddress):
            if kind is DelAddress:
                for dev in {st.ifname for _, st, _ in live if st.interface.version == 4}:  # type: ignore[union-attr]
                    self.keep_secondaries(dev)
            codes = nb.addresses(self._batch, kind is AddAddress,
                                 [(idx, st.interface) for _, st, idx in live])  # type: ignore[union-attr]
        else:
            codes = nb.routes(self._batch, kind is AddRoute,
                              [(idx, st.dst, st.via, st.metric) for _, st, idx in live])  # type: ignore[union-attr]
        ok_codes = ALREADY_GONE if gone else ALREADY_DONE
        for (i, _, _), code in zip(live, codes):
            if code and code not in ok_codes:
                errors[i] = f"kernel refused: {errno.errorcode.get(code, code)} (errno {code})"
        return errors

    async def _bulk_announce(self, steps: list[Announce]) -> list[str]:
        errors = [""] * len(steps)
        repeats: dict[tuple[int, float], list[tuple[FrameSocket, bytes]]] = {}
        for i, st in enumerate(steps):
            try:
                mac = await self._macof(st.ifname)
                frame = (build_gratuitous_arp(mac, st.ip) if isinstance(st.ip, ipaddress.IPv4Address)
                         else build_unsolicited_na(mac, st.ip))
                if st.ifname not in self._sockets:
                    self.prepare(st.ifname)
                sock = self._sockets[st.ifname]
                sock.send(frame)
            except (OSError, LookupError) as exc:
                errors[i] = str(exc)
                continue
            if st.count > 1:
                repeats.setdefault((st.count - 1, st.interval), []).append((sock, frame))
        for (count, interval), frames in repeats.items():
            self._spawn(self._announce_many(frames, count, interval))
        return errors

    async def _announce_many(self, frames: list[tuple[FrameSocket, bytes]], count: int, interval: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(1, count + 1):
            await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
            for sock, frame in frames:
                try:
                    sock.send(frame)
                except OSError as exc:
                    log.debug("announcement on %s failed: %s", sock.ifname, exc)

    def undo_of(self, step: Step) -> Step | None:
        """The step that reverses a completed ``step`` (None where nothing needs reversing)."""
        match step:
            case DelAddress(ifname=ifname, interface=iface):
                return AddAddress(ifname, iface, nodad=iface.version == 6)
            case AddAddress(ifname=ifname, interface=iface):
                return DelAddress(ifname, iface)
            case DelRoute(dst=dst, ifname=ifname, via=via, metric=metric):
                return AddRoute(dst, ifname, via, metric)
            case AddRoute(dst=dst, ifname=ifname, via=via, metric=metric):
                return DelRoute(dst, ifname, via, metric)
            case AddMacvlan(name=name) | AddVlan(name=name):
                return DelLink(name)
            case _:
                return None

    # ------------------------------------------------------------------ helpers

    async def _ifindex_fresh(self, name: str) -> int:
        self._index.pop(name, None)
        return await self._ifindex(name)

    @staticmethod
    async def _tolerate(codes: set[int], coro: Any) -> None:
        try:
            res = await coro
            if hasattr(res, "__aiter__"):
                async for _ in res:
                    pass
        except NetlinkError as exc:
            if exc.code in codes:
                return
            raise

    @staticmethod
    def _route_kw(dst: IPNetwork, idx: int, via: IPAddress | None, metric: int | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"dst": str(dst.network_address), "dst_len": dst.prefixlen, "oif": idx,
                              "family": _family(dst.version), "proto": 4}  # RTPROT_STATIC
        if via is not None:
            kw["gateway"] = str(via)
        if metric is not None:
            kw["priority"] = metric
        return kw

    def keep_secondaries(self, ifname: str) -> None:
        """Removing a primary IPv4 address deletes its subnet's secondaries unless this is on."""
        if ifname in self._promoted:
            return
        path = f"{self.proc_sys}/net/ipv4/conf/{ifname}/promote_secondaries"
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
        self._promoted.add(ifname)

    async def _flush_neighbours(self, network: IPNetwork, ifindex: int | None) -> None:
        msgs = await self._dump(self.ipr.get_neighbours(family=_family(network.version)))
        for msg in msgs:
            if ifindex is not None and msg["ifindex"] != ifindex:
                continue
            if msg["state"] & (NUD_PERMANENT | NUD_NOARP):
                continue
            dst = msg.get("dst")
            if dst is None or ipaddress.ip_address(dst) not in network:
                continue
            await self._tolerate(ALREADY_GONE, self.ipr.neigh(
                "del", ifindex=msg["ifindex"], dst=dst, family=msg["family"]))

    async def _demote(self, ifname: str) -> None:
        """Withdraw every main-table route through ``ifname``, remembering it for restore."""
        try:
            idx = await self._ifindex(ifname)
        except LookupError:
            return
        from ipshift.kernel import batch as nb
        from ipshift.kernel.snapshot import routes_from_msg

        saved = self.demoted.setdefault(ifname, [])
        for family in (AF_INET, AF_INET6):
            for msg in nb.dump_routes(family, RT_TABLE_MAIN, idx):
                for r in routes_from_msg(msg, {idx: ifname}):
                    if r.ifname != ifname or r.type != "unicast":
                        continue
                    if r.dst.version == 6 and r.dst.network_address.is_link_local:
                        continue
                    try:
                        await self.ipr.route("del", **self._route_full_kw(r, idx))
                    except NetlinkError as exc:
                        if exc.code not in ALREADY_GONE:
                            log.warning("could not withdraw %s dev %s: %s", r.dst, ifname, exc)
                        continue
                    saved.append(r)
        if saved:
            log.info("withdrew %d route(s) through %s while it is failed", len(saved), ifname)

    async def _restore(self, ifname: str) -> None:
        routes = self.demoted.pop(ifname, [])
        if not routes:
            return
        try:
            idx = await self._ifindex_fresh(ifname)
        except LookupError:
            return
        restored = 0
        for r in routes:
            try:
                await self.ipr.route("add", **self._route_full_kw(r, idx))
                restored += 1
            except NetlinkError as exc:
                if exc.code not in ALREADY_DONE:
                    log.info("not restoring %s dev %s: %s", r.dst, ifname, exc.args[-1])
        log.info("restored %d of %d route(s) through %s", restored, len(routes), ifname)

    @staticmethod
    def _route_full_kw(r: Route, idx: int) -> dict[str, Any]:
        protos = {"kernel": 2, "boot": 3, "static": 4, "dhcp": 16, "ra": 9}
        scopes = {"universe": 0, "link": 253, "host": 254}
        kw: dict[str, Any] = {"dst": str(r.dst.network_address), "dst_len": r.dst.prefixlen, "oif": idx,
                              "family": _family(r.dst.version), "table": r.table,
                              "proto": protos.get(r.proto, int(r.proto) if r.proto.isdigit() else 4),
                              "scope": scopes.get(r.scope, 0)}
        if r.gateway is not None:
            kw["gateway"] = str(r.gateway)
        if r.metric is not None:
            kw["priority"] = r.metric
        if r.src is not None:
            kw["prefsrc"] = str(r.src)
        return kw

    # ------------------------------------------------------------------ background

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce_rest(self, sock: FrameSocket, frame: bytes, count: int, interval: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(1, count + 1):
            await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
            try:
                sock.send(frame)
            except OSError as exc:
                log.warning("announcement on %s failed: %s", sock.ifname if hasattr(sock, "ifname") else "?", exc)
                return
