"""The crash-safe state file: its typed schema, and the atomic writer it shares with the history.

``state.json`` under ``state_dir`` keeps, as :class:`DurableState` (owned by
:class:`StateFile`), what the kernel cannot tell a restarted daemon (which
converges from the kernel's state): addresses moved away from home and since
when, the move under way, routes withdrawn from failed NICs that must come
back, NICs an operator drained. Failover records go to ``history.json``.

* :func:`write_atomic` leaves the file as it was or holding exactly the new
  bytes, never torn or truncated: every byte (short writes continued; one
  without progress is an error) goes to a new temporary file in the same
  directory -- ``O_EXCL|O_NOFOLLOW|O_CLOEXEC``, mode 0600, named afresh by
  pid, counter and random suffix, so no stale file or planted symlink is
  reused or followed -- then ``fsync``, rename over the file, ``fsync`` of
  the directory. An error before the rename (ENOSPC, EDQUOT, EIO, ...)
  removes the temporary file, keeps the old one, and is raised; so is one of
  the directory's ``fsync`` (the new file is in place, maybe not durably).
* :class:`Journal` writes on one background thread per file, in order,
  coalescing: the failover path hands the latest document over and goes on.
  A failed write is logged; the next document is written as usual.
  :meth:`~Journal.flush` waits for all handed over and says whether the
  newest is on disk (False after a failed write or on timeout).
  :meth:`~Journal.write_now` writes on the caller's thread and raises on
  failure. Documents are numbered and the file only moves forward: no
  document older than the one on disk is written afterwards.
* Reading never raises: a missing, unreadable or unparsable file, a document
  not a JSON object or of an unknown version, reads as empty. A part or entry
  of a state document (a route, placement, move, drained NIC) of the wrong
  shape is left out, and all left out reported in one warning naming the file.
  A ``history`` not a list, or entries of it not objects, are dropped (logged).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import json
import logging
import math
import os
import reprlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ipshift.model import IPAddress, Route

log = logging.getLogger("ipshift.journal")
T = TypeVar("T")

STATE_FILE = "state.json"  # small: placements, the move under way, withdrawn routes, drained NICs
HISTORY_FILE = "history.json"  # the last failover records, written after each one ends
VERSION = 1
_tmp_seq = itertools.count()


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by a file of exactly ``data``, or raise and leave it as it was (see above)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_seq)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)  # never reused
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError(errno.EIO, f"write made no progress, {len(view)} bytes left", str(tmp))
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)  # may report a delayed write error (NFS): still before the rename
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_state(state_dir: str | Path, name: str = STATE_FILE) -> dict[str, Any]:
    """The last document written, or ``{}``; what is wrong is logged, never raised (see above)."""
    path = Path(state_dir) / name
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return {}
    if not isinstance(doc, dict):
        log.warning("ignoring state file %s: not a JSON object: %s", path, _show(doc))
        return {}
    if type(doc.get("version")) is not int or doc["version"] != VERSION:
        log.warning("ignoring state file %s of an unknown version", path)
        return {}
    if name == HISTORY_FILE and not isinstance(history := doc.get("history", []), list):
        log.warning("state file %s: ignoring history: not a list: %s", path, _show(doc.pop("history")))
    elif name == HISTORY_FILE and not all(isinstance(item, dict) for item in history):
        log.warning("state file %s: ignoring history entries that are not objects", path)
        doc["history"] = [item for item in history if isinstance(item, dict)]
    return doc


class Journal:
    """Ordered, coalescing, atomic writes of one file's document (see the module docstring)."""

    def __init__(self, state_dir: str | Path, name: str = STATE_FILE) -> None:
        self.path = Path(state_dir) / name
        self._cond = threading.Condition()
        self._io = threading.Lock()  # held around each write_atomic; taken before _cond, never inside it
        self._pending: dict[str, Any] | Sequence[str] | None = None
        self._submitted = 0  # documents are numbered 1, 2, ... as they are handed over
        self._written = 0  # the newest one whose write is done (or skipped as obsolete, or failed)
        self._durable = 0  # the one on disk
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._thread = threading.Thread(target=self._run, name="ipshift-journal", daemon=True)
        self._thread.start()

    def submit(self, doc: dict[str, Any]) -> None:
        """Hand over the latest document, written on the journal's thread; not to be mutated after."""
        self._hand_over(doc)

    def submit_text(self, parts: Sequence[str]) -> None:
        """Hand over a document serialised already, as text parts to join; not to be changed after."""
        self._hand_over(parts)

    def _hand_over(self, doc: dict[str, Any] | Sequence[str] | None) -> int:
        with self._cond:
            self._pending = doc
            self._submitted += 1
            self._cond.notify_all()
            return self._submitted

    def write_now(self, doc: dict[str, Any]) -> None:
        """Write ``doc`` on the caller's thread: on disk when this returns, or raises. A document submitted
        before and not yet taken by the thread is obsolete; a write the thread has begun is waited for."""
        self._write(self._hand_over(None), doc)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until all submitted so far is written; whether the newest of it is on disk (see above)."""
        with self._cond:
            target = self._submitted
            self._cond.wait_for(lambda: self._written >= target or self._closed, timeout)
            return self._durable >= target

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _write(self, seq: int, doc: dict[str, Any] | Sequence[str], on_thread: bool = False) -> None:
        try:
            data = (json.dumps({"version": VERSION, **doc}, sort_keys=True, default=str) if isinstance(doc, dict)
                    else "".join(doc)).encode()
            with self._io:
                with self._cond:
                    if self._durable >= seq:
                        return  # a newer document is on disk already
                write_atomic(self.path, data)
                with self._cond:
                    self._durable = seq
        except Exception as exc:
            if not on_thread:
                raise
            log.error("cannot write state file %s: %s", self.path, exc)  # and goes on: the next may succeed
        finally:  # after the log: flush() returns once the failure is told
            with self._cond:
                self._written = max(self._written, seq)
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                doc, self._pending, seq = self._pending, None, self._submitted
            if doc is None:
                return  # closed, and all written
            self._write(seq, doc, on_thread=True)


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
                                                                            bad).values())))
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


class StateFile:
    """The one owner of ``state.json``: read once at start, written through a :class:`Journal`."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self._journal = Journal(state_dir, STATE_FILE)
        self._last: dict[str, Any] = {}

    def start(self) -> None:
        self._journal.start()

    def read(self) -> DurableState:
        return DurableState.from_doc(read_state(self.state_dir), str(self.state_dir / STATE_FILE))

    def write(self, state: DurableState) -> None:
        self._last = state.to_doc()
        self._journal.submit(self._last)

    def write_now(self, state: DurableState) -> None:
        """Write ``state`` before returning; raises on failure (see :meth:`Journal.write_now`)."""
        self._last = state.to_doc()
        self._journal.write_now(self._last)

    def begin(self, in_progress: InProgress) -> None:
        """Just before a plan runs (the hot path): only ``in_progress`` changes."""
        doc = {**self._last, "updated": time.time(),
               "in_progress": {"what": in_progress.what, "moves": in_progress.moves}}
        self._journal.submit(doc)

    def flush(self) -> bool:
        return self._journal.flush()

    def close(self) -> None:
        self._journal.close()
