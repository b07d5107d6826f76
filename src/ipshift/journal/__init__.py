"""The crash-safe state directory: ``state.json``'s typed schema and the atomic writer.

Theory of operation
-------------------
:class:`StateFile` is the one owner of ``state.json``: it reads it once at
start (:class:`~ipshift.journal.schema.DurableState`, the schema) and hands new
states to a :class:`~ipshift.journal.writer.Journal`, which writes them
atomically on a background thread; :meth:`StateFile.write_now` writes on the
caller's thread when a state must be durable before the caller goes on.
``history.json`` (the failover records) shares the writer; ``withdrawn.json``
(the route ledger) is written with :func:`~ipshift.journal.writer.write_atomic`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ipshift.journal.schema import (
    DurableState, InProgress, NicRecord, Placement, route_from_doc, route_to_doc,
)
from ipshift.journal.writer import HISTORY_FILE, STATE_FILE, VERSION, Journal, read_state, write_atomic

__all__ = [
    "HISTORY_FILE", "STATE_FILE", "VERSION", "DurableState", "InProgress", "Journal", "NicRecord", "Placement",
    "StateFile", "boot_id", "read_state", "route_from_doc", "route_to_doc", "write_atomic",
]


def boot_id() -> str:
    """The kernel's id of this boot: monotonic times from another boot mean nothing ("" if unknown)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


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
