"""The vocabulary of a plan: what the executor is asked to do, as frozen values.

Theory of operation: the planner never touches the kernel; it returns a list of
these commands in the order they must run. One executor (in the daemon) turns
each into netlink calls or frames with an exhaustive ``match`` and fails
loudly on a command it does not know. Every command is plain data, so a plan
can be printed by ``ipshift check``, journaled before it runs, compared in
tests, and replayed after a crash.

This module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ipshift.model import IPAddress, IPInterface, IPNetwork, Route


@dataclass(frozen=True, slots=True)
class CheckConflict:
    """RFC 5227 ARP probe (IPv6: DAD) for ``ip`` from ``ifname``; an answer aborts the move."""

    ifname: str
    ip: IPAddress
    timeout: float

    def describe(self) -> str:
        kind = "DAD probe" if self.ip.version == 6 else "ARP probe"
        return f"{kind} for {self.ip} from {self.ifname} (wait {self.timeout * 1000:.0f} ms)"


@dataclass(frozen=True, slots=True)
class DemoteRoutes:
    """Withdraw the failed NIC's connected and static routes so nothing leaves through it."""

    ifname: str

    def describe(self) -> str:
        return f"withdraw routes through {self.ifname} while it is failed"


@dataclass(frozen=True, slots=True)
class SaveRoutes:
    """Keep (durably) every route through ``ifname`` before its addresses go: the kernel itself
    deletes a NIC's IPv4 routes when its last IPv4 address is removed."""

    ifname: str

    def describe(self) -> str:
        return f"keep the routes through {self.ifname}"


@dataclass(frozen=True, slots=True)
class MoveRoutes:
    """Reinstall ``routes`` (as the kernel had them on ``source``: protocol, metric, preferred
    source) on ``target``, and take them off ``source``."""

    source: str
    target: str
    routes: tuple[Route, ...]

    def describe(self) -> str:
        def one(r: Route) -> str:
            via = f" via {r.gateway}" if r.gateway is not None else ""
            return f"{r.dst}{via} proto {r.proto}"

        shown = ", ".join(one(r) for r in self.routes[:3]) + (f" and {len(self.routes) - 3} more"
                                                               if len(self.routes) > 3 else "")
        return f"move routes {shown} from {self.source} to {self.target}"


@dataclass(frozen=True, slots=True)
class RestoreRoutes:
    """Undo :class:`SaveRoutes`, :class:`MoveRoutes` and :class:`DemoteRoutes` once the NIC is
    healthy again: its routes back as they were, the copies moved elsewhere gone."""

    ifname: str

    def describe(self) -> str:
        return f"restore routes through {self.ifname}"


@dataclass(frozen=True, slots=True)
class DelAddress:
    ifname: str
    interface: IPInterface

    def describe(self) -> str:
        return f"remove {self.interface} from {self.ifname}"


@dataclass(frozen=True, slots=True)
class DelRoute:
    dst: IPNetwork
    ifname: str
    via: IPAddress | None = None
    metric: int | None = None

    def describe(self) -> str:
        via = f" via {self.via}" if self.via is not None else ""
        return f"remove route {self.dst}{via} dev {self.ifname}"


@dataclass(frozen=True, slots=True)
class DelNeighbours:
    """Remove the neighbour entries of ``ifname`` whose address is in ``network``."""

    ifname: str
    network: IPNetwork

    def describe(self) -> str:
        return f"remove neighbour entries of {self.network} on {self.ifname}"


@dataclass(frozen=True, slots=True)
class AddMacvlan:
    """A macvlan device on ``parent`` carrying ``mac`` (the MAC that moves with the address)."""

    parent: str
    name: str
    mac: str

    def describe(self) -> str:
        return f"add macvlan {self.name} on {self.parent} with MAC {self.mac}"


@dataclass(frozen=True, slots=True)
class AddVlan:
    parent: str
    name: str
    vlan: int
    mac: str | None = None  # with ``mac: move``, the VLAN device carries the moved MAC

    def describe(self) -> str:
        mac = f" with MAC {self.mac}" if self.mac else ""
        return f"add VLAN device {self.name} (VLAN {self.vlan}) on {self.parent}{mac}"


@dataclass(frozen=True, slots=True)
class DelLink:
    """Remove a device ipshift created (a macvlan or VLAN device left without addresses); with
    ``if_empty``, only if it holds no global address when the step runs."""

    name: str
    if_empty: bool = False

    def describe(self) -> str:
        return f"remove device {self.name}" + (" (if it holds no address)" if self.if_empty else "")


@dataclass(frozen=True, slots=True)
class SetMac:
    """Give ``ifname`` the MAC ``mac``: a failed NIC whose own MAC now lives on a macvlan elsewhere
    gets a stand-in, so that it sends nothing from that MAC when it comes back (the switch would
    learn the MAC on the wrong port); failback gives it its own again."""

    ifname: str
    mac: str

    def describe(self) -> str:
        return f"set the MAC of {self.ifname} to {self.mac}"


def stand_in_mac(mac: str) -> str:
    """A locally administered MAC for a NIC whose own ``mac`` lives elsewhere (deterministic)."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] = (octets[0] | 0x02) & 0xFE
    octets[3:] = [o ^ 0x5A for o in octets[3:]]
    return ":".join(f"{o:02x}" for o in octets)


@dataclass(frozen=True, slots=True)
class AddAddress:
    ifname: str
    interface: IPInterface
    nodad: bool = False

    def describe(self) -> str:
        return f"add {self.interface} to {self.ifname}" + (" (nodad)" if self.nodad else "")


@dataclass(frozen=True, slots=True)
class AddRoute:
    dst: IPNetwork
    ifname: str
    via: IPAddress | None = None
    metric: int | None = None

    def describe(self) -> str:
        via = f" via {self.via}" if self.via is not None else ""
        return f"add route {self.dst}{via} dev {self.ifname}"


@dataclass(frozen=True, slots=True)
class FlushNeighbours:
    """Remove the gateway's neighbour entries of ``network`` on every NIC."""

    network: IPNetwork

    def describe(self) -> str:
        return f"flush neighbour entries of {self.network}"


@dataclass(frozen=True, slots=True)
class FlushRouteCache:
    version: int

    def describe(self) -> str:
        return f"flush the IPv{self.version} route cache"


@dataclass(frozen=True, slots=True)
class Announce:
    """Gratuitous ARP (IPv6: unsolicited neighbour advertisement) for ``ip`` from ``ifname``."""

    ifname: str
    ip: IPAddress
    count: int
    interval: float

    def describe(self) -> str:
        kind = "unsolicited NA" if self.ip.version == 6 else "gratuitous ARP"
        return f"{kind} for {self.ip} from {self.ifname}, {self.count}x every {self.interval * 1000:.0f} ms"


Step = (
    CheckConflict | SaveRoutes | MoveRoutes | DemoteRoutes | RestoreRoutes | DelAddress | DelRoute | DelNeighbours
    | AddMacvlan | AddVlan | DelLink | SetMac | AddAddress | AddRoute | FlushNeighbours | FlushRouteCache | Announce
)

class Conflict(str):
    """A step's error that is a conflict probe's answer: someone else uses the address (any other
    error of a probe -- a socket that cannot be opened -- is a plain ``str``)."""


StepOp = Literal[
    "CheckConflict", "SaveRoutes", "MoveRoutes", "DemoteRoutes", "SetMac", "RestoreRoutes", "DelAddress", "DelRoute", "DelNeighbours", "AddMacvlan",
    "AddVlan", "DelLink", "AddAddress", "AddRoute", "FlushNeighbours", "FlushRouteCache", "Announce",
]
STEP_OPS: frozenset[str] = frozenset(get_args(StepOp))


def op_of(step: Step) -> StepOp:
    """The step's kind as a name (its class name)."""
    name = type(step).__name__
    assert name in STEP_OPS, name
    return name  # type: ignore[return-value]


def inverse(step: Step) -> Step | None:
    """The step that reverses a completed ``step`` (None where nothing needs reversing:
    probes, announcements, flushes)."""
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
            return None  # SetMac too: the stand-in is harmless, and a NIC's own MAC returns at failback
