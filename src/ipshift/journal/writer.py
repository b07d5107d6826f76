"""The atomic writer of the state directory's files, and their reader.

Theory of operation
-------------------
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
* :func:`read_state` never raises: a missing, unreadable or unparsable file, a
  document not a JSON object or of an unknown version, reads as empty. A
  ``history`` not a list, or entries of it not objects, are dropped (logged).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import secrets
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ipshift.journal.schema import _show

log = logging.getLogger("ipshift.journal")

STATE_FILE = "state.json"  # small: placements, the move under way, withdrawn routes, drained NICs
HISTORY_FILE = "history.json"  # the last failover records, written after each one ends
VERSION = 1
_tmp_seq = itertools.count()


def write_atomic(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Replace ``path`` by a file of exactly ``data`` (bytes, or pieces of bytes written one after the
    other: a large document is never joined in memory), or raise and leave it as it was (see above)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_seq)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)  # never reused
    try:
        try:
            for piece in (data,) if isinstance(data, bytes) else data:
                view = memoryview(piece)
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
        self._pending: dict[str, Any] | Sequence[str | bytes] | None = None
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

    def submit_text(self, parts: Sequence[str | bytes]) -> None:
        """Hand over a document serialised already, as text parts written one after the other; not to
        be changed after. A part that is bytes is zlib-compressed UTF-8 text (the history keeps its
        large records so): it is written decompressed, a piece at a time."""
        self._hand_over(parts)

    def _hand_over(self, doc: dict[str, Any] | Sequence[str | bytes] | None) -> int:
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

    def _write(self, seq: int, doc: dict[str, Any] | Sequence[str | bytes], on_thread: bool = False) -> None:
        try:
            data = (json.dumps({"version": VERSION, **doc}, sort_keys=True, default=str).encode()
                    if isinstance(doc, dict) else _pieces(doc))
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


def _pieces(parts: Sequence[str | bytes], piece: int = 1 << 20) -> Iterator[bytes]:
    """The document's bytes, a part at a time (a compressed part in pieces of at most ``piece``)."""
    for part in parts:
        if isinstance(part, str):
            yield part.encode()
            continue
        unz = zlib.decompressobj()
        tail = part
        while tail:
            yield unz.decompress(tail, piece)
            tail = unz.unconsumed_tail
        yield unz.flush()


# --------------------------------------------------------------------------- the state document

