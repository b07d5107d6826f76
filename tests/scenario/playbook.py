"""A playbook for scenario tests: kernel events in, the executed steps and the records out.

The daemon runs on the parts it is made of -- kernel view, NIC states, plan runner, history --
against :class:`FakeKernel`, an in-memory kernel that applies the steps it is given the way
Linux would (addresses, routes, macvlan devices) and answers the view's re-reads. Everything
goes through public methods: ``Daemon.dispatch`` for events, ``converge_once`` and the
operator commands, the records and the status the daemon hands out. No root, no namespaces.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ipshift.config import parse_config
from ipshift.daemon import Daemon
from ipshift.events import AddressEvent, LinkEvent, LinkGone
from ipshift.kernel.withdraw import Withdrawn
from ipshift.model import Address, IPAddress, KernelFeatures, Link, Route, Snapshot
from ipshift.steps import (
    AddAddress, AddMacvlan, AddRoute, CheckConflict, Conflict, DelAddress, DelLink, DelRoute, DemoteRoutes,
    MoveRoutes, RestoreRoutes, SaveRoutes, SetMac, Step,
)

MAC = {f"eth{i}": f"02:00:00:00:00:1{i}" for i in range(10)}


@dataclass
class FakeKernel:
    """An in-memory kernel that runs steps; ``fail`` makes a step fail, ``answers`` a probe answer."""

    links: dict[str, Link]
    addresses: dict[tuple[str, IPAddress], Address] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)  # step text -> error
    answers: dict[tuple[str, IPAddress], str] = field(default_factory=dict)  # (survivor, ip) -> who answers
    ran: list[str] = field(default_factory=list)  # every step's text, in order
    batches: list[tuple[str, int]] = field(default_factory=list)  # (kind, steps) of every run_batch call
    withdrawn: Withdrawn = field(default_factory=Withdrawn)
    gate: asyncio.Event | None = None  # when set up: a batch of this kind waits for it
    gate_kind: str = ""

    # -- the executor's side

    async def run_batch(self, steps: Sequence[Step]) -> list[str]:
        kind = type(steps[0]).__name__
        self.batches.append((kind, len(steps)))
        if self.gate is not None and kind == self.gate_kind:
            await self.gate.wait()
        if isinstance(steps[0], CheckConflict):
            await asyncio.sleep(0)
        errors = []
        for st in steps:
            self.ran.append(st.describe())
            errors.append(self.fail.get(st.describe(), "") or self._apply(st))
        return errors

    def _apply(self, st: Step) -> str:
        match st:
            case CheckConflict(ifname=ifname, ip=ip):
                who = self.answers.get((ifname, ip))
                return Conflict(f"in use by {who}") if who else ""
            case AddAddress(ifname=ifname, interface=iface):
                if ifname not in self.links:
                    return f"no device {ifname}"
                self.addresses[(ifname, iface.ip)] = Address(ifname, iface)
            case DelAddress(ifname=ifname, interface=iface):
                self.addresses.pop((ifname, iface.ip), None)
            case AddRoute(dst=dst, ifname=ifname, via=via, metric=metric):
                self.routes.append(Route(dst=dst, ifname=ifname, gateway=via, metric=metric))
            case DelRoute(dst=dst, ifname=ifname, via=via):
                self.routes = [r for r in self.routes if (r.dst, r.ifname, r.gateway) != (dst, ifname, via)]
            case MoveRoutes(source=source, target=target, routes=routes):
                for r in routes:
                    self.routes = [k for k in self.routes if (k.dst, k.ifname, k.gateway) != (r.dst, source, r.gateway)]
                    self.routes.append(replace(r, ifname=target))
                    self.withdrawn.moved.setdefault(source, []).append(replace(r, ifname=target))
            case SaveRoutes(ifname=ifname):
                self.withdrawn.routes.setdefault(ifname, []).extend(
                    r for r in self.routes if r.ifname == ifname and r not in self.withdrawn.routes.get(ifname, []))
            case DemoteRoutes(ifname=ifname):
                self.withdrawn.routes.setdefault(ifname, []).extend(
                    r for r in self.routes if r.ifname == ifname and r not in self.withdrawn.routes[ifname])
                self.routes = [r for r in self.routes if r.ifname != ifname]
            case RestoreRoutes(ifname=ifname):
                for c in self.withdrawn.moved.pop(ifname, []):
                    self.routes = [k for k in self.routes if (k.dst, k.ifname, k.gateway) != (c.dst, c.ifname, c.gateway)]
                for r in self.withdrawn.routes.pop(ifname, []):
                    if r not in self.routes:
                        self.routes.append(r)
            case AddMacvlan(parent=parent, name=name, mac=mac):
                index = max(l.index for l in self.links.values()) + 1
                self.links[name] = Link(name, index, mac, True, True, "UP", "macvlan",
                                        parent=self.links[parent].index)
            case SetMac(ifname=ifname, mac=mac):
                self.links[ifname] = replace(self.links[ifname], mac=mac)
            case DelLink(name=name):
                self.links.pop(name, None)
                self.addresses = {k: a for k, a in self.addresses.items() if k[0] != name}
            case _:
                pass
        return ""

    def learn_link(self, name: str, index: int, mac: str) -> None: ...
    def forget_link(self, name: str) -> None: ...

    # -- the view's side

    def read(self) -> Snapshot:
        return Snapshot(links=tuple(self.links.values()), addresses=tuple(self.addresses.values()),
                        routes=tuple(self.routes), features=KernelFeatures(vlan_8021q=False, macvlan=True))

    def where(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for (ifname, ip) in sorted(self.addresses, key=lambda k: (k[0], str(k[1]))):
            out.setdefault(str(ip), []).append(ifname)
        return out


@dataclass
class FakeVerifier:
    """Answers path verifications from a table: (device, ip) -> who confirms (absent: nobody)."""

    confirms: dict[tuple[str, IPAddress], IPAddress] = field(default_factory=dict)
    asked: list[tuple[str, tuple[IPAddress, ...], tuple[IPAddress, ...]]] = field(default_factory=list)

    async def verify(self, device: str, mac: str, ips: Sequence[IPAddress], targets: Sequence[IPAddress],
                     reannounce: Any) -> dict[IPAddress, tuple[float, IPAddress] | str]:
        self.asked.append((device, tuple(ips), tuple(targets)))
        await asyncio.sleep(0)
        return {ip: (0.0, self.confirms[(device, ip)]) if (device, ip) in self.confirms else "no answer"
                for ip in ips}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Playbook:
    """A daemon on a :class:`FakeKernel` (see the module docstring). Use inside a running loop."""

    def __init__(self, config: dict[str, Any], nics: Sequence[str], addrs: dict[str, list[str]],
                 *, routes: Sequence[Route] = (), path: Path | None = None) -> None:
        self.path = path
        text = yaml.safe_dump(config)
        if path is not None:
            path.write_text(text)
        self.config = parse_config(text, str(path or "test.yaml"))
        self.kernel = FakeKernel({n: Link(n, i + 2, MAC[n], True, True, "UP", "veth") for i, n in enumerate(nics)},
                                 {(n, ipaddress.ip_interface(a).ip): Address(n, ipaddress.ip_interface(a))
                                  for n, lst in addrs.items() for a in lst}, list(routes))
        self.verifier = FakeVerifier()
        self.clock = Clock()
        self.daemon = Daemon(self.config, str(path or "test.yaml"), executor=self.kernel, reader=self.kernel.read,
                             verifier=self.verifier, clock=self.clock)
        self.daemon.view.load(self.kernel.read())
        self.daemon.nics.start(self.daemon.view.links)
        self.worker = asyncio.get_running_loop().create_task(self.daemon.history.worker(self.daemon.runner.idle))

    # -- events in

    async def carrier(self, nic: str, up: bool) -> None:
        link = replace(self.kernel.links[nic], carrier=up, operstate="UP" if up else "LOWERLAYERDOWN")
        self.kernel.links[nic] = link
        await self.daemon.dispatch(LinkEvent(link, self.clock()))

    async def link(self, link: Link) -> None:
        self.kernel.links[link.name] = link
        await self.daemon.dispatch(LinkEvent(link, self.clock()))

    async def gone(self, nic: str) -> None:
        link = self.kernel.links.pop(nic)
        self.kernel.addresses = {k: a for k, a in self.kernel.addresses.items() if k[0] != nic}
        await self.daemon.dispatch(LinkGone(nic, link.index, self.clock()))

    async def address(self, added: bool, nic: str, iface: str) -> None:
        i = ipaddress.ip_interface(iface)
        if added:
            self.kernel.addresses[(nic, i.ip)] = Address(nic, i)
        else:
            self.kernel.addresses.pop((nic, i.ip), None)
        await self.daemon.dispatch(AddressEvent(added, nic, i, self.clock()))

    def later(self, seconds: float, *nics: str) -> None:
        """Time passes: the NICs' timers (failback delay, hold-down) fire."""
        self.clock.now += seconds
        for nic in nics:
            self.daemon.nics.tick(nic)

    # -- steps and records out

    async def converge(self) -> list[Any]:
        """One converge run; the records it made, as ``ipshift status`` shows them."""
        recs = await self.daemon.converge_once()
        await self.daemon.history.settled()
        return [self.record(r.id) for r in recs]

    def record(self, rid: int) -> dict[str, Any]:
        parts = self.daemon.history.parts_of([rid])
        assert parts, f"record {rid} is not kept"
        doc: dict[str, Any] = json.loads("".join(parts))
        return doc

    async def settled(self) -> None:
        """Background work done: verifications that can end, and the serialisation of records."""
        for _ in range(5):
            await asyncio.sleep(0)
        await self.daemon.history.settled()

    async def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads("".join(await self.daemon.status()))
        return doc

    def where(self) -> dict[str, list[str]]:
        return self.kernel.where()
