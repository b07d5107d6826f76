"""The crash-safe state file: where every address is, what move is under way.

Theory of operation: the daemon keeps its durable state as one JSON document
under ``state_dir`` (``state.json``). Every write is atomic -- a temporary
file in the same directory, ``fsync``, ``rename`` over the old one, ``fsync``
of the directory -- so a reader (the next daemon after a SIGKILL) sees either
the old or the new document, never a torn one.

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

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

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
        self._pending: dict[str, Any] | None = None
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
                if doc is not None:
                    data = json.dumps({"version": VERSION, **doc}, sort_keys=True, default=str).encode()
                    write_atomic(self.path, data)
            except OSError as exc:
                log.error("cannot write state file %s: %s", self.path, exc)
            with self._cond:
                self._written = upto
                self._cond.notify_all()
