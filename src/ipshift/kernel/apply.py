"""The executor: plan steps in, netlink requests and frames out.

Theory of operation
-------------------
:class:`Executor` owns one ``AsyncIPRoute``, one blocking batch socket
(:mod:`ipshift.kernel.batch`) and one send-only AF_PACKET socket per device,
opened once and kept ready. :meth:`Executor.run_batch` runs steps of one kind
with as few system calls as the kernel allows -- address and route steps in
one netlink batch (a one-message batch costs tens of microseconds, a third of
a round trip through the async socket), conflict probes with one socket per
survivor and one timeout in all, announcements as one frame each -- and any
other kind one distinct step at a time (a hundred moves into one subnet flush
its neighbours once). :meth:`Executor.run_step` turns one step of
:mod:`ipshift.steps` into kernel calls with an exhaustive ``match``; an
unknown step is a programming error and fails loudly.

Kernel errors are classified by meaning, not by text (the ExaBGP habit):
EEXIST on an add means already done, EADDRNOTAVAIL/ESRCH/ENOENT/ENODEV on a
delete means already gone; anything else is the step's error, which the
transaction (:mod:`ipshift.txn`) turns into an undo.

Announcements send their first frame inside the call and schedule the
remaining ``count - 1`` on the event loop; the executor keeps a reference to
every task it creates and cancels them on close. The ifindex and MAC of each
device come from the kernel view (:meth:`learn_link` / :meth:`forget_link`);
a device it does not know yet (one a step just created) is looked up.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Protocol

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ipshift.kernel import batch as nb
from ipshift.kernel.netlinkops import dump, flush_neighbours, tolerate
from ipshift.kernel.sysctl import promote_secondaries
from ipshift.kernel.withdraw import ALREADY_DONE, ALREADY_GONE, Withdrawn
from ipshift.model import IPAddress, IPInterface, IPNetwork
from ipshift.steps import (
    AddAddress, AddMacvlan, AddRoute, AddVlan, Announce, CheckConflict, Conflict, DelAddress, DelLink,
    DelNeighbours, DelRoute, DemoteRoutes, FlushNeighbours, FlushRouteCache, MoveRoutes, RestoreRoutes, SaveRoutes,
    SetMac, Step,
)
from ipshift.tasks import Tasks
from ipshift.wire.arp import build_gratuitous_arp
from ipshift.wire.conflict import probe_conflicts_many
from ipshift.wire.ndp import build_unsolicited_na
from ipshift.wire.sender import FrameSocket

log = logging.getLogger("ipshift.apply")

NETLINK_KINDS = (DelAddress, AddAddress, DelRoute, AddRoute)


class Batch(Protocol):
    """Address and route requests in bulk (:class:`ipshift.kernel.batch.NetlinkBatch`)."""

    def addresses(self, add: bool, items: Iterable[tuple[int, IPInterface]]) -> list[int]: ...
    def routes(self, add: bool, items: Iterable[tuple[int, IPNetwork, IPAddress | None, int | None]]) -> list[int]: ...
    def close(self) -> None: ...


class StepFailed(Exception):
    """A step the kernel refused (or a conflict found); the transaction is undone."""

    def __init__(self, step: Step, reason: str, code: int | None = None, conflict: bool = False) -> None:
        self.step = step
        self.reason = reason
        self.code = code
        self.conflict = conflict
        super().__init__(f"{step.describe()}: {reason}")


def _frame(mac: str, step: Announce) -> bytes:
    if isinstance(step.ip, ipaddress.IPv4Address):
        return build_gratuitous_arp(mac, step.ip)
    return build_unsolicited_na(mac, step.ip)


class Executor:
    """Runs steps against the kernel of the namespace the process is in."""

    def __init__(self, ipr: AsyncIPRoute, *, proc_sys: str = "/proc/sys", kill_at: str | None = None,
                 on_kill: Callable[[], None] | None = None, batch: Batch | None = None,
                 withdrawn: Withdrawn | None = None) -> None:
        self.ipr = ipr
        self.proc_sys = proc_sys
        self.kill_at = kill_at  # test hook: SIGKILL ourselves right before a step of this kind
        self.on_kill = on_kill
        self.withdrawn = withdrawn or Withdrawn()
        self._batch = batch
        self._sockets: dict[str, FrameSocket] = {}
        self._tasks = Tasks()
        self._index: dict[str, int] = {}
        self._mac: dict[str, str] = {}
        self._promoted: set[str] = set()

    @classmethod
    async def open(cls, **kwargs: Any) -> Executor:
        ipr = AsyncIPRoute()
        await ipr.link_lookup(ifname="lo")  # opens the socket now, not in the first failover
        return cls(ipr, batch=nb.NetlinkBatch(), **kwargs)

    async def close(self) -> None:
        await self._tasks.cancel()
        for sock in self._sockets.values():
            sock.close_in_background()
        self._sockets.clear()
        if self._batch is not None:
            self._batch.close()
        self.ipr.close()

    # ------------------------------------------------------------------ devices

    def learn_link(self, name: str, index: int, mac: str) -> None:
        """The kernel view tells the executor what it knows of links (from events and dumps)."""
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

    def ready_nics(self, names: Sequence[str]) -> None:
        """Before the first failover: ``promote_secondaries`` on, announcement sockets open, for each
        of ``names`` the kernel view knows."""
        for nic in names:
            if nic not in self._index:
                log.warning("configured NIC %s does not exist", nic)
                continue
            self.keep_secondaries(nic)
            try:
                self.prepare(nic)
            except OSError as exc:
                log.warning("cannot open a frame socket on %s: %s", nic, exc)

    def prepare(self, ifname: str) -> None:
        """Open the announcement socket of ``ifname`` now, so a failover does not wait for it."""
        if ifname not in self._sockets:
            self._sockets[ifname] = FrameSocket.open(ifname)

    async def _ifindex(self, name: str, fresh: bool = False) -> int:
        idx = None if fresh else self._index.get(name)
        if idx is not None:
            return idx
        found = await self.ipr.link_lookup(ifname=name)
        if not found:
            raise LookupError(f"no device {name}")
        self._index[name] = int(found[0])
        return int(found[0])

    async def _macof(self, name: str) -> str:
        mac = self._mac.get(name)
        if mac:
            return mac
        idx = await self._ifindex(name)
        for msg in await dump(self.ipr.get_links(idx)):
            addr = msg.get("address")
            if addr:
                self._mac[name] = str(addr).lower()
                return self._mac[name]
        raise LookupError(f"no MAC for {name}")

    def keep_secondaries(self, ifname: str) -> None:
        """Removing a primary IPv4 address deletes its subnet's secondaries unless this is on."""
        if ifname not in self._promoted:
            promote_secondaries(ifname, self.proc_sys)
            self._promoted.add(ifname)

    # ------------------------------------------------------------------ batches

    async def run_batch(self, steps: Sequence[Step]) -> list[str]:
        """Run steps of ONE kind; one error text per step ("" = done)."""
        if not steps:
            return []
        kind = type(steps[0])
        if any(type(st) is not kind for st in steps):
            raise AssertionError("run_batch() takes steps of one kind")
        if self.kill_at == kind.__name__ and self.on_kill is not None:
            self.on_kill()
        try:
            if kind in NETLINK_KINDS:
                return await self._netlink(steps)
            if kind is Announce:
                return await self._announce([st for st in steps if isinstance(st, Announce)])
            if kind is CheckConflict:
                return await self._probe([st for st in steps if isinstance(st, CheckConflict)])
            return await self._one_by_one(steps)
        except (OSError, LookupError) as exc:  # EMFILE, ENOBUFS, ENETDOWN...: these steps fail, not the daemon
            reason = f"{exc.strerror or exc} (errno {exc.errno})" if isinstance(exc, OSError) else str(exc)
            log.error("%s steps of kind %s failed: %s", len(steps), kind.__name__, reason)
            return [reason] * len(steps)

    async def _one_by_one(self, steps: Sequence[Step]) -> list[str]:
        seen: dict[Step, str] = {}
        for st in steps:  # devices, neighbour and cache flushes: few distinct ones, each once
            if st not in seen:
                try:
                    await self.run_step(st)
                    seen[st] = ""
                except StepFailed as exc:
                    seen[st] = exc.reason
        return [seen[st] for st in steps]

    async def _netlink(self, steps: Sequence[Step]) -> list[str]:
        if self._batch is None:
            raise AssertionError("the executor has no netlink batch socket (Executor.open makes one)")
        errors = [""] * len(steps)
        live: list[tuple[int, Step, int]] = []
        gone = isinstance(steps[0], (DelAddress, DelRoute))
        for i, st in enumerate(steps):
            assert isinstance(st, NETLINK_KINDS)
            try:
                live.append((i, st, await self._ifindex(st.ifname)))
            except LookupError:
                if not gone:  # a delete on a device that is gone: done already
                    errors[i] = f"no device {st.ifname}"
        if isinstance(steps[0], (DelAddress, AddAddress)):
            if isinstance(steps[0], DelAddress):
                for dev in {st.ifname for _, st, _ in live if isinstance(st, DelAddress) and st.interface.version == 4}:
                    self.keep_secondaries(dev)
            codes = self._batch.addresses(isinstance(steps[0], AddAddress),
                                 [(idx, st.interface) for _, st, idx in live
                                  if isinstance(st, (DelAddress, AddAddress))])
        else:
            codes = self._batch.routes(isinstance(steps[0], AddRoute),
                              [(idx, st.dst, st.via, st.metric) for _, st, idx in live
                               if isinstance(st, (DelRoute, AddRoute))])
        ok_codes = ALREADY_GONE if gone else ALREADY_DONE
        for (i, _, _), code in zip(live, codes):
            if code and code not in ok_codes:
                errors[i] = f"kernel refused: {errno.errorcode.get(code, code)} (errno {code})"
        return errors

    async def _announce(self, steps: Sequence[Announce]) -> list[str]:
        errors = [""] * len(steps)
        repeats: dict[tuple[int, float], list[tuple[FrameSocket, Announce, str, bytes]]] = {}
        for i, st in enumerate(steps):
            try:
                frame = _frame(mac := await self._macof(st.ifname), st)
                if st.ifname not in self._sockets:
                    self.prepare(st.ifname)
                sock = self._sockets[st.ifname]
                sock.send(frame)
            except (OSError, LookupError) as exc:
                errors[i] = str(exc)
                continue
            if st.count > 1:
                repeats.setdefault((st.count - 1, st.interval), []).append((sock, st, mac, frame))
        for (count, interval), frames in repeats.items():
            self._tasks.spawn(self._announce_rest(frames, count, interval))
        return errors

    async def _probe(self, steps: Sequence[CheckConflict]) -> list[str]:
        """One socket per survivor (and family), every probe at once, one timeout: the longest asked.
        An answer from one of this host's own NICs is no conflict: in a planned failover (or a path
        failure) the source NIC still holds the address and answers the probe itself."""
        own = frozenset(m for m in self._mac.values() if m)
        by_nic: dict[str, list[CheckConflict]] = {}
        for st in steps:
            by_nic.setdefault(st.ifname, []).append(st)
        found: dict[tuple[str, Any], str] = {}
        errors: dict[str, str] = {}

        async def one(nic: str, items: list[CheckConflict]) -> None:
            try:
                mac = await self._macof(nic)
                res = await probe_conflicts_many(nic, mac, [st.ip for st in items],
                                                 max(st.timeout for st in items), own_macs=own)
            except (OSError, LookupError) as exc:
                errors[nic] = str(exc)
                return
            found.update({(nic, ip): Conflict(why) for ip, why in res.items()})

        await asyncio.gather(*(one(nic, items) for nic, items in by_nic.items()))
        return [errors.get(st.ifname) or found.get((st.ifname, st.ip), "") for st in steps]

    # ------------------------------------------------------------------ one step

    async def run_step(self, step: Step) -> None:
        """Run one step; raises :class:`StepFailed` with the kernel's reason."""
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
        match step:
            case CheckConflict() | DelAddress() | AddAddress() | DelRoute() | AddRoute() | Announce():
                (error,) = await self.run_batch([step])
                if error:
                    raise StepFailed(step, error, conflict=isinstance(step, CheckConflict))
            case DelNeighbours(ifname=ifname, network=network):
                try:
                    idx = await self._ifindex(ifname)
                except LookupError:
                    return
                await flush_neighbours(self.ipr, network, idx, ALREADY_GONE)
            case FlushNeighbours(network=network):
                await flush_neighbours(self.ipr, network, None, ALREADY_GONE)
            case FlushRouteCache(version=version):
                path = f"{self.proc_sys}/net/ipv{version}/route/flush"
                try:
                    with open(path, "w") as f:
                        f.write("1")
                except OSError as exc:
                    log.debug("route cache flush %s: %s", path, exc)
            case AddMacvlan(parent=parent, name=name, mac=mac):
                pidx = await self._ifindex(parent)
                await tolerate(ALREADY_DONE, self.ipr.link(
                    "add", ifname=name, kind="macvlan", link=pidx, macvlan_mode="private", address=mac))
                idx = await self._ifindex(name, fresh=True)
                await self.ipr.link("set", index=idx, state="up")
                self.learn_link(name, idx, mac)
            case AddVlan(parent=parent, name=name, vlan=vlan, mac=mac):
                pidx = await self._ifindex(parent)
                kw = {"address": mac} if mac else {}
                await tolerate(ALREADY_DONE, self.ipr.link("add", ifname=name, kind="vlan", link=pidx,
                                                            vlan_id=vlan, **kw))
                idx = await self._ifindex(name, fresh=True)
                await self.ipr.link("set", index=idx, state="up")
            case DelLink(name=name, if_empty=if_empty):
                try:
                    idx = await self._ifindex(name, fresh=True)
                except LookupError:
                    return
                if if_empty and any(m.get("scope", 0) == 0 for m in await dump(self.ipr.get_addr(index=idx))):
                    return  # it got an address since the plan was made: it serves
                await tolerate(ALREADY_GONE, self.ipr.link("del", index=idx))
                self.forget_link(name)
            case SetMac(ifname=ifname, mac=mac):
                idx = await self._ifindex(ifname)
                await self.ipr.link("set", index=idx, address=mac)
                self.learn_link(ifname, idx, mac)
            case SaveRoutes(ifname=ifname):
                try:
                    idx = await self._ifindex(ifname)
                except LookupError:
                    return  # gone, and its routes with it: what the ledger knows is all there is
                self.withdrawn.save(ifname, idx)
            case MoveRoutes(source=source, target=target, routes=routes):
                try:
                    sidx: int | None = await self._ifindex(source)
                except LookupError:
                    sidx = None
                errors = [e for e in await self.withdrawn.move(self.ipr, source, sidx, target,
                                                               await self._ifindex(target), routes, self._batch) if e]
                if errors:
                    raise StepFailed(step, "; ".join(errors))
            case DemoteRoutes(ifname=ifname):
                try:
                    idx = await self._ifindex(ifname)
                except LookupError:
                    return
                await self.withdrawn.withdraw(self.ipr, ifname, idx)
            case RestoreRoutes(ifname=ifname):
                try:
                    ridx: int | None = await self._ifindex(ifname, fresh=True)
                except LookupError:
                    ridx = None
                await self.withdrawn.restore(self.ipr, ifname, ridx, self._index.get)
            case _:
                raise AssertionError(f"the executor does not know the step {step!r}")

    # ------------------------------------------------------------------ background

    async def _announce_rest(self, frames: list[tuple[FrameSocket, Announce, str, bytes]], count: int,
                             interval: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(1, count + 1):
            await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
            for sock, st, mac, frame in frames:
                if self._mac.get(st.ifname, mac) != mac:  # a SetMac since: the repeat says the new MAC
                    frame = _frame(self._mac[st.ifname], st)
                try:
                    sock.send(frame)
                except OSError as exc:
                    log.debug("announcement on %s failed: %s", sock.ifname, exc)

