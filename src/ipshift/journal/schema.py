"""The state file's typed schema: :class:`DurableState` and the parts it is made of.

Theory of operation
-------------------
``state.json`` keeps what the kernel cannot tell a restarted daemon (which
converges from the kernel's state): the addresses ipshift moved away from
home and since when, the move under way, the NICs an operator drained, and
each NIC's health as the last run knew it -- path verdict, hold-down, the
failback delay under way -- with the boot it was read in (monotonic times
mean nothing after a reboot). :meth:`DurableState.from_doc` reads any JSON
value and never raises: a part or entry of the wrong shape (a route,
placement, move, drained NIC, NIC record) is left out, and all left out
reported in one warning naming the file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ipshift.config import AddressConfig
from ipshift.model import IPAddress, Link, Route

log = logging.getLogger("ipshift.journal")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Placement:
    """An address ipshift moved away from its home NIC: where it went, and when (wall clock)."""

    home: str
    device: str
    since: float


@dataclass(frozen=True, slots=True)
class InProgress:
    """The plan under way: ``what`` in words, and (address/prefix, source, target device) per move."""

    what: str
    moves: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NicRecord:
    """A NIC's health as the last run knew it (its monotonic times belong to ``DurableState.boot_id``)."""

    state: str  # up | down | returning | held
    since: float
    ok: bool
    reason: str = ""
    transitions: tuple[float, ...] = ()
    path: str | None = None  # unverified | up | failed; None: not probed


NIC_STATES = ("up", "down", "returning", "held")
PATH_VERDICTS = ("unverified", "up", "failed")


@dataclass(frozen=True, slots=True)
class DurableState:
    pid: int = 0
    updated: float = 0.0
    in_progress: InProgress | None = None
    placements: Mapping[str, Placement] = field(default_factory=dict)  # address/prefix -> placement
    withdrawn: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)  # NIC -> routes (first versions)
    drained: tuple[str, ...] = ()
    boot_id: str = ""  # the kernel's boot id when ``nics`` was written
    nics: Mapping[str, NicRecord] = field(default_factory=dict)
    # addresses that left the configuration, on their way home: address/prefix -> (home, mac, vlan)
    leaving: Mapping[str, tuple[str, str, int | None]] = field(default_factory=dict)
    seen: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # NIC -> (ifindex, MAC) last seen

    def seen_links(self) -> dict[str, Link]:
        """``seen`` as links that are gone (what a deleted NIC's ``mac: move`` addresses need)."""
        return {nic: Link(nic, index, mac, False, False, "NOTPRESENT") for nic, (index, mac) in self.seen.items()}

    def arrived(self) -> dict[str, tuple[str, float]]:
        """address -> (device, since) of the placements, as the plan runner keeps them."""
        return {a.split("/")[0]: (p.device, p.since) for a, p in self.placements.items()}

    def interrupted(self) -> set[IPAddress]:
        """The addresses of the move the previous run stopped in the middle of (logged)."""
        if self.in_progress is None:
            return set()
        log.warning("the previous run stopped in the middle of: %s; converging from the kernel's state",
                    self.in_progress.what)
        return {ipaddress.ip_interface(m[0]).ip for m in self.in_progress.moves}

    def leaving_addresses(self) -> dict[str, tuple[str, AddressConfig]]:
        """``leaving`` as the daemon keeps it: address/prefix -> (home, its configuration)."""
        from pydantic import ValidationError

        out: dict[str, tuple[str, AddressConfig]] = {}
        for a, (home, mac, vlan) in self.leaving.items():
            try:
                out[a] = (home, AddressConfig.model_validate({"address": a, "mac": mac, "vlan": vlan}))
            except ValidationError:
                log.warning("state file: ignoring leaving %s: not an address of a configuration", _show(a))
        return out

    def to_doc(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "updated": self.updated,
            "in_progress": None if self.in_progress is None else {
                "what": self.in_progress.what, "moves": [list(m) for m in self.in_progress.moves]},
            "placements": {a: {"home": p.home, "device": p.device, "since": p.since}
                           for a, p in self.placements.items()},
            "withdrawn": {nic: [route_to_doc(r) for r in routes] for nic, routes in self.withdrawn.items()},
            "drained": list(self.drained),
            "boot_id": self.boot_id,
            "nics": {nic: {"state": r.state, "since": r.since, "ok": r.ok, "reason": r.reason,
                           "transitions": list(r.transitions), "path": r.path} for nic, r in self.nics.items()},
            "leaving": {a: {"home": h, "mac": m, "vlan": v} for a, (h, m, v) in self.leaving.items()},
            "seen": {nic: {"index": i, "mac": m} for nic, (i, m) in self.seen.items()},
        }

    @classmethod
    def from_doc(cls, doc: object, source: str = "state file") -> DurableState:
        """The state in ``doc``, any JSON value; never raises. What is not of the schema's shape is
        left out (the part, or only the entry) and reported in one warning naming ``source``."""
        if not isinstance(doc, Mapping):
            log.warning("ignoring %s: not a JSON object: %s", source, _show(doc))
            return cls()
        bad: list[str] = []

        def part(key: str, kind: type, default: Any, parse: Callable[[Any], Any] | None = None) -> Any:
            try:
                return _field(doc, key, kind, default, parse)
            except ValueError as exc:
                bad.append(str(exc))
                return default

        def routes(nic: str, v: Any) -> tuple[Route, ...]:
            return tuple(_keep(f"{name} {nic} route", _of(v, list), lambda _, r: route_from_doc(r), bad).values())

        # "demoted": what the first versions called the withdrawn routes
        name = "withdrawn" if "withdrawn" in doc else "demoted"
        state = cls(pid=part("pid", int, 0), updated=part("updated", float, 0.0),
                    in_progress=part("in_progress", dict, None, lambda d: _in_progress(d, bad)),
                    placements=part("placements", dict, {}, lambda d: _keep("placements", d, _placement, bad)),
                    withdrawn=part(name, dict, {}, lambda d: _keep(name, d, routes, bad)),
                    drained=part("drained", list, (), lambda v: tuple(_keep("drained", v, lambda _, n: _of(n, str),
                                                                            bad).values())),
                    boot_id=part("boot_id", str, ""),
                    nics=part("nics", dict, {}, lambda d: _keep("nics", d, _nic_record, bad)),
                    leaving=part("leaving", dict, {}, lambda d: _keep("leaving", d, _leaving, bad)),
                    seen=part("seen", dict, {}, lambda d: _keep("seen", d, _seen, bad)))
        if bad:
            log.warning("%s: ignoring %s", source, "; ".join(bad))
        return state


_KINDS = {dict: "an object", list: "a list", str: "text", bool: "a boolean", int: "a u32", float: "a number"}


def _show(value: object) -> str:
    try:
        return reprlib.repr(value)  # bounded in length and depth
    except ValueError:  # an int too long to print
        return type(value).__name__


def _of(v: Any, kind: type, default: Any = ...) -> Any:
    """``v``, a ``kind`` (float: a finite number, int: a u32), or ``default`` for null; or a ValueError."""
    if v is None and default is not ...:  # ...: required
        return default
    if kind is float:
        ok = type(v) is float and math.isfinite(v) or type(v) is int and abs(v) < 2**63
    else:
        ok = type(v) is kind and (kind is not int or type(v) is int and 0 <= v < 2**32)
    if not ok:
        raise ValueError("missing" if v is None else f"not {_KINDS[kind]}: {_show(v)}")
    return float(v) if kind is float else v


def _field(d: Mapping[str, Any], key: str, kind: type, default: Any = ..., parse: Any = None) -> Any:
    """``d[key]`` checked (see :func:`_of`) and parsed (unless null); a ValueError naming ``key``."""
    try:
        v = _of(d.get(key), kind, default)
        return v if v is None or parse is None else parse(v)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _keep(name: str, items: Any, parse: Callable[[Any, Any], T], bad: list[str]) -> dict[str, T]:
    """key (or index) -> parse(key, item) of the items that parse; the others are noted in ``bad``."""
    out: dict[str, T] = {}
    for key, item in items.items() if isinstance(items, dict) else enumerate(items):
        try:
            out[str(key)] = parse(str(key), item)
        except ValueError as exc:
            bad.append(f"{name} {key}: {exc}")
    return out


def _placement(address: str, p: Any) -> Placement:
    ipaddress.ip_interface(address)  # a ValueError naming it
    d = _of(p, dict)
    return Placement(_field(d, "home", str), _field(d, "device", str), _field(d, "since", float))


def _nic_record(nic: str, v: Any) -> NicRecord:
    d = _of(v, dict)
    state = _field(d, "state", str)
    path = _field(d, "path", str, None)
    if state not in NIC_STATES or (path is not None and path not in PATH_VERDICTS):
        raise ValueError(f"state {_show(state)} or path {_show(path)} unknown")
    transitions = tuple(_of(t, float) for t in _field(d, "transitions", list, []))
    return NicRecord(state, _field(d, "since", float), _field(d, "ok", bool), _field(d, "reason", str, ""),
                     transitions, path)


def _seen(nic: str, v: Any) -> tuple[int, str]:
    d = _of(v, dict)
    return (_field(d, "index", int), _field(d, "mac", str))


def _leaving(address: str, v: Any) -> tuple[str, str, int | None]:
    ipaddress.ip_interface(address)  # a ValueError naming it
    d = _of(v, dict)
    mac = _field(d, "mac", str, "stay")
    if mac not in ("stay", "move"):
        raise ValueError(f"mac: {_show(mac)}")
    return (_field(d, "home", str), mac, _field(d, "vlan", int, None))


def _in_progress(d: dict[str, Any], bad: list[str]) -> InProgress:
    def move(_: str, m: Any) -> tuple[str, str, str]:
        if type(m) is list and len(m) == 3 and all(type(x) is str for x in m):
            with contextlib.suppress(ValueError):
                ipaddress.ip_interface(m[0])
                return (m[0], m[1], m[2])
        raise ValueError(f"not [address/prefix, source, target]: {_show(m)}")
    moves = _keep("move", _field(d, "moves", list, []), move, bad)
    return InProgress(_field(d, "what", str, "a move"), tuple(moves.values()))


def route_to_doc(r: Route) -> dict[str, Any]:
    return {"dst": str(r.dst), "ifname": r.ifname, "gateway": None if r.gateway is None else str(r.gateway),
            "table": r.table, "proto": r.proto, "scope": r.scope, "type": r.type, "metric": r.metric,
            "linkdown": r.linkdown, "src": None if r.src is None else str(r.src)}


def route_from_doc(d: object) -> Route:
    """The route in ``d``; a ValueError naming the field when ``d`` is not a route's document."""
    r = _of(d, dict)

    def ip(v: str) -> IPAddress | None:
        return ipaddress.ip_address(v) if v else None
    proto = r.get("proto")
    return Route(dst=_field(r, "dst", str, parse=ipaddress.ip_network), ifname=_field(r, "ifname", str, None),
                 gateway=_field(r, "gateway", str, None, ip), table=_field(r, "table", int, 254),
                 proto=str(proto) if type(proto) is int else _field(r, "proto", str, "static"),
                 scope=_field(r, "scope", str, "universe"), type=_field(r, "type", str, "unicast"),
                 metric=_field(r, "metric", int, None), linkdown=_field(r, "linkdown", bool, False),
                 src=_field(r, "src", str, None, ip))

