"""The crash-safe state file: its typed schema, and the atomic writer it shares with the history.

Theory of operation: the daemon keeps its durable state as one JSON document
under ``state_dir`` (``state.json``). Every write is atomic -- a temporary
file in the same directory, ``fsync``, ``rename`` over the old one, ``fsync``
of the directory -- so a reader (the next daemon after a SIGKILL) sees either
the old or the new document, never a torn one.

The state document's schema is :class:`DurableState`: what the kernel cannot
tell a restarted daemon -- the addresses ipshift moved away from home and
since when (``placements``), the move under way (``in_progress``), the routes
withdrawn from failed NICs that must come back (``withdrawn``), and the NICs an
operator drained. :class:`StateFile` is its one owner: it reads the file
(a document it cannot read is logged and ignored, field by field) and hands
new states to a :class:`Journal`.

The state document is kept small (it is written just before a move starts,
and its serialization competes with the failover for the interpreter); the
history of failover records goes to a second file, written after a record
ends. Writes happen on one background thread per file, in order, and coalesce: the failover
path hands the latest document over and goes on without waiting for the disk
(an fsync costs about half a millisecond, several times the cost of the
netlink request it would guard). :meth:`Journal.flush` waits until everything
handed over is on disk. Correctness after a crash does not rest on the journal
alone: the daemon's start re-reads the kernel and converges to the configured
placement (every configured address present exactly once); the journal adds
what the kernel cannot say -- routes withdrawn from a failed NIC that must come
back, NICs an operator drained, the move that was under way, and the history
of failovers.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipshift.model import IPAddress, Route

log = logging.getLogger("ipshift.journal")

STATE_FILE = "state.json"  # small: placements, the move under way, withdrawn routes, drained NICs
HISTORY_FILE = "history.json"  # the last failover records, written after each one ends
VERSION = 1


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_state(state_dir: str | Path, name: str = STATE_FILE) -> dict[str, Any]:
    """The last state written, or an empty one (a missing or unreadable file is logged, not fatal)."""
    path = Path(state_dir) / name
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return {}
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        log.warning("ignoring state file %s of an unknown version", path)
        return {}
    return doc


class Journal:
    """Ordered, coalescing, atomic writes of the state document on a background thread."""

    def __init__(self, state_dir: str | Path, name: str = STATE_FILE) -> None:
        self.path = Path(state_dir) / name
        self._cond = threading.Condition()
        self._pending: dict[str, Any] | Sequence[str] | None = None
        self._written = 0
        self._submitted = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._thread = threading.Thread(target=self._run, name="ipshift-journal", daemon=True)
        self._thread.start()

    def submit(self, doc: dict[str, Any]) -> None:
        """Hand over the latest document; it is serialized and written on the journal's thread.

        The caller must not mutate ``doc`` (or anything in it) afterwards: build a new one.
        """
        with self._cond:
            self._pending = doc
            self._submitted += 1
            self._cond.notify_all()

    def submit_text(self, parts: Sequence[str]) -> None:
        """Hand over a document already serialised, as text parts to be joined (the history file:
        its records are serialised once, when they end); the caller must not change ``parts``."""
        with self._cond:
            self._pending = parts
            self._submitted += 1
            self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is on disk."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._written >= target or self._closed, timeout)

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None and self._closed:
                    return
                doc, self._pending = self._pending, None
                upto = self._submitted
            try:
                if isinstance(doc, dict):
                    write_atomic(self.path, json.dumps({"version": VERSION, **doc}, sort_keys=True,
                                                       default=str).encode())
                elif doc is not None:
                    write_atomic(self.path, "".join(doc).encode())
            except OSError as exc:
                log.error("cannot write state file %s: %s", self.path, exc)
            with self._cond:
                self._written = upto
                self._cond.notify_all()


# --------------------------------------------------------------------------- the state document


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
class DurableState:
    pid: int = 0
    updated: float = 0.0
    in_progress: InProgress | None = None
    placements: Mapping[str, Placement] = field(default_factory=dict)  # address/prefix -> placement
    withdrawn: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)  # NIC -> its withdrawn routes
    drained: tuple[str, ...] = ()

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
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> DurableState:
        """The state in ``doc``; a part that does not parse is logged and left out."""
        def part(name: str, parse: Any, default: Any) -> Any:
            if doc.get(name) is None:
                return default
            try:
                return parse(doc[name])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("state file: ignoring %s: %s", name, exc)
                return default

        def in_progress(d: Mapping[str, Any]) -> InProgress:
            return InProgress(str(d.get("what", "a move")),
                              tuple((str(m[0]), str(m[1]), str(m[2])) for m in d.get("moves") or ()))

        def placements(d: Mapping[str, Any]) -> dict[str, Placement]:
            return {str(a): Placement(str(p["home"]), str(p["device"]), float(p["since"])) for a, p in d.items()
                    if isinstance(p, Mapping) and "device" in p}

        def withdrawn(d: Mapping[str, Any]) -> dict[str, tuple[Route, ...]]:
            return {str(nic): tuple(route_from_doc(r) for r in routes) for nic, routes in d.items()}

        return cls(pid=int(doc.get("pid") or 0), updated=float(doc.get("updated") or 0.0),
                   in_progress=part("in_progress", in_progress, None),
                   placements=part("placements", placements, {}),
                   # "demoted": what the first versions called the withdrawn routes
                   withdrawn=part("withdrawn" if "withdrawn" in doc else "demoted", withdrawn, {}),
                   drained=tuple(part("drained", lambda v: [str(n) for n in v], [])))


def route_to_doc(r: Route) -> dict[str, Any]:
    return {"dst": str(r.dst), "ifname": r.ifname, "gateway": None if r.gateway is None else str(r.gateway),
            "table": r.table, "proto": r.proto, "scope": r.scope, "type": r.type, "metric": r.metric,
            "linkdown": r.linkdown, "src": None if r.src is None else str(r.src)}


def route_from_doc(d: Mapping[str, Any]) -> Route:
    return Route(dst=ipaddress.ip_network(d["dst"]), ifname=d.get("ifname"),
                 gateway=ipaddress.ip_address(d["gateway"]) if d.get("gateway") else None,
                 table=int(d.get("table", 254)), proto=str(d.get("proto", "static")),
                 scope=str(d.get("scope", "universe")), type=str(d.get("type", "unicast")),
                 metric=None if d.get("metric") is None else int(d["metric"]),
                 linkdown=bool(d.get("linkdown", False)),
                 src=ipaddress.ip_address(d["src"]) if d.get("src") else None)


class StateFile:
    """The one owner of ``state.json``: read once at start, written through a :class:`Journal`."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self._journal = Journal(state_dir, STATE_FILE)
        self._last: dict[str, Any] = {}

    def start(self) -> None:
        self._journal.start()

    def read(self) -> DurableState:
        return DurableState.from_doc(read_state(self.state_dir))

    def write(self, state: DurableState) -> None:
        self._last = state.to_doc()
        self._journal.submit(self._last)

    def begin(self, in_progress: InProgress) -> None:
        """Just before a plan runs (the hot path): only ``in_progress`` changes."""
        doc = {**self._last, "updated": time.time(),
               "in_progress": {"what": in_progress.what, "moves": in_progress.moves}}
        self._journal.submit(doc)

    def flush(self) -> bool:
        return self._journal.flush()

    def close(self) -> None:
        self._journal.close()
