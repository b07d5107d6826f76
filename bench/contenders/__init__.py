"""Failover contenders: the same lab, the same trigger, different movers.

Every contender implements :class:`Contender`. The orchestrator (bench/run.py)
builds a fresh lab from :meth:`Contender.lab_spec`, then calls ``setup(lab,
spec)``, ``start()``, ``ready()``, runs its trials, and ``stop()`` in a
``finally``. Each process a contender starts is put in its own process group
and ended by that group's id (the PID it was started with), never by name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from benchlab import BenchLab, LabSpec

HOME = "eth0"
SURVIVOR = "eth1"
HOME_BASE = "192.0.2.10/24"
SURVIVOR_BASE = "192.0.2.11/24"
PEER_BASE = "192.0.2.12/24"
SERVICE_ADDR = "192.0.2.50/24"
ROUTE_VIA = "192.0.2.1"
PROBE_TARGET = "192.0.2.100"  # the client: on the far side of the switch
# Scenario (g), IPv6 carrier loss: the same lab with 2001:db8::/64 beside 192.0.2.0/24.
HOME_BASE6 = "2001:db8::10/64"
SURVIVOR_BASE6 = "2001:db8::11/64"
PEER_BASE6 = "2001:db8::12/64"
SERVICE_ADDR6 = "2001:db8::50/64"
CLIENT_ADDRS6 = ["192.0.2.100/24", "2001:db8::100/64"]


@dataclass(frozen=True)
class MoveSpec:
    """What must move when the home NIC fails."""

    addresses: tuple[str, ...] = (SERVICE_ADDR,)
    routes: tuple[str, ...] = ()  # "DEST via GW", device added by the mover
    home: str = HOME
    survivor: str = SURVIVOR
    failback: bool = True
    probe: bool = False  # scenarios (c)/(c'): detect path loss by probing, `probe_interval` x 3 misses
    probe_interval: str = "10ms"  # (c) 10ms; (c') 5ms and 2ms; (f) all three
    status_poll: bool = False  # scenario (i): `ipshift status` polled in a loop, 50,000 kept moves
    # Scenario (h): the lab's carrier changes are not urgent for the kernel's linkwatch (as on a
    # physical NIC), and each trial flips an unused veth (lw0) 200 ms before the trigger.
    batched_carrier: bool = False
    carrier_poll: str | None = None  # ipshift's `detect.carrier_poll` (None: not set, ipshift's default)
    busy: int = 0  # scenario (a''): this many more addresses on eth2 (backups: eth3), a 4-NIC gateway

    @property
    def target(self) -> str:
        """The address the client probes."""
        return str(ipaddress.ip_interface(self.addresses[0]).ip)

    @property
    def ipv6(self) -> bool:
        """Does anything that moves have an IPv6 address? (The lab then gets 2001:db8::/64 too.)"""
        return any(":" in a for a in self.addresses)

    @property
    def ips(self) -> list[str]:
        return [str(ipaddress.ip_interface(a).ip) for a in self.addresses]


BUSY_HOME, BUSY_SURVIVOR = "eth2", "eth3"


def busy_addresses(n: int) -> tuple[str, ...]:
    """Scenario (a''): the addresses the other NIC pair carries, 198.18.0.1/16 onwards."""
    base = int(ipaddress.IPv4Address("198.18.0.1"))
    return tuple(f"{ipaddress.IPv4Address(base + i)}/16" for i in range(n))


def ipv6_spec() -> MoveSpec:
    """Scenario (g): the service address is 2001:db8::50/64 instead of 192.0.2.50/24."""
    return MoveSpec(addresses=(SERVICE_ADDR6,))


SCALE_SUBNET = "198.18.0.0/16"
SCALE_SURVIVOR_BASE = "198.18.255.254/16"  # the survivor is on the scale subnet too (ipshift requires it)


def scale_spec(n: int) -> MoveSpec:
    """N addresses of the lab subnet 198.18.0.0/16 on the home NIC (the first is its primary there,
    the others secondaries; the lab sets promote_secondaries=1) and one route per 10 addresses,
    to /32s of 198.19.0.0/16 via 192.0.2.1. The survivor has 198.18.255.254/16."""
    if not 1 <= n <= 60_000:
        raise ValueError("scale N must be between 1 and 60,000")
    base = int(ipaddress.IPv4Address("198.18.0.1"))
    rbase = int(ipaddress.IPv4Address("198.19.0.1"))
    addrs = tuple(f"{ipaddress.IPv4Address(base + i)}/16" for i in range(n))
    routes = tuple(f"{ipaddress.IPv4Address(rbase + i)}/32 via {ROUTE_VIA}" for i in range(max(1, n // 10)))
    return MoveSpec(addresses=addrs, routes=routes, failback=False)


@dataclass
class Step:
    """One step of a failover, CLOCK_MONOTONIC seconds."""

    name: str
    t: float
    detail: str = ""


@dataclass
class Timeline:
    """The steps a contender reports for its last failover (see :meth:`Contender.steps`)."""

    steps: list[Step] = field(default_factory=list)
    source: str = ""


@runtime_checkable
class Contender(Protocol):
    """A failover mechanism under test."""

    name: str  # short id used on the command line and in the JSON
    label: str  # what the table prints
    failover_timeout: float  # how long a trial waits for traffic to come back
    failback_timeout: float
    path_detection: str | None  # None: detects path loss with carrier up; else why not

    def unavailable(self) -> str | None:
        """None when the contender can run here, else a one-line reason."""

    def lab_spec(self, spec: MoveSpec) -> LabSpec:
        """The lab this contender needs for ``spec``."""

    def survivor_mac(self, lab: BenchLab) -> str:
        """The MAC that announces the moved address after a failover."""

    def home_mac(self, lab: BenchLab) -> str:
        """The MAC that announces it after failback."""

    def setup(self, lab: BenchLab, spec: MoveSpec) -> None:
        """Write configuration files; start nothing yet."""

    def start(self) -> None:
        """Start the contender's processes."""

    def ready(self, timeout: float = 10.0) -> bool:
        """True once it would react to a failure (waits at most ``timeout``)."""

    def home_ok(self) -> bool:
        """True when the moved addresses are at home (and only there)."""

    def idle(self) -> bool:
        """True when it is not in the middle of a move (a trial starts only then)."""

    def stop(self) -> None:
        """End every process it started (by PID / own process group); idempotent."""

    def steps(self, since: float) -> Timeline:
        """Step timings of the failover that started at ``since``: the timeline hook."""

    def pids(self) -> list[int]:
        """The PIDs of its running processes (for the idle-cost scenario)."""


def all_contenders() -> dict[str, type[Any]]:
    from contenders.ipaddr2 import IPaddr2Contender
    from contenders.ipshift import IpshiftContender, IpshiftNocheckContender
    from contenders.keepalived import KeepalivedContender, KeepalivedFastContender
    from contenders.shell import ShellContender

    classes: list[type[Any]] = [IpshiftContender, IpshiftNocheckContender, ShellContender, IPaddr2Contender,
                                KeepalivedFastContender, KeepalivedContender]
    return {str(getattr(c, "name")): c for c in classes}
