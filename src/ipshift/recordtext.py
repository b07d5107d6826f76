"""A serialised failover record as the history keeps it, and the heap trim after a large one.

Theory of operation: :class:`Kept` holds a record's text in parts (see
:mod:`ipshift.records`); a part that is bytes is zlib-compressed UTF-8 text,
which is how records of many moves are kept. :meth:`Kept.parts` gives the
text (for ``status`` and the commands), :meth:`Kept.stored` the parts as kept
(for the history file's writer, which decompresses a piece at a time).
:func:`trim_heap` returns the C heap's free pages to the system, and
:func:`log_record` writes a record to the log.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ipshift.records import Record

log = logging.getLogger("ipshift.records")
SUMMARY_OVER = 16  # records with more moves are logged as a summary


PIECE = 1 << 16


def _utf8_cut(data: bytes) -> int:
    """Where ``data`` may be cut without splitting a UTF-8 character."""
    cut = len(data)
    while cut > 0 and cut > len(data) - 4 and (data[cut - 1] & 0xC0) == 0x80:
        cut -= 1
    if cut > 0 and data[cut - 1] >= 0xC0:  # a lead byte whose continuation is not all here
        cut -= 1
    return cut


@dataclass(slots=True)
class Kept:
    """A serialised record: its text without the verification part, and that part."""

    id: int
    moves: int
    core: list[str | bytes]  # '{"id":...,"moves":[...]' -- no closing brace; bytes: zlib-compressed text
    verification: str

    def parts(self) -> list[str]:
        """The text (what is kept compressed, decompressed in pieces of at most ``PIECE`` characters:
        a status read of a 10 MiB record makes no 10 MiB string)."""
        core: list[str] = []
        for p in self.core:
            if isinstance(p, str):
                core.append(p)
                continue
            unz = zlib.decompressobj()
            tail = p
            rest = b""
            while tail:
                data = rest + unz.decompress(tail, PIECE)
                tail = unz.unconsumed_tail
                cut = _utf8_cut(data) if tail else len(data)
                core.append(data[:cut].decode())
                rest = data[cut:]
            core.append((rest + unz.flush()).decode())
        return [*core, ',"verification":', self.verification, "}"]

    def stored(self) -> list[str | bytes]:
        """The parts as kept (compressed ones compressed: for the history file's writer)."""
        return [*self.core, ',"verification":', self.verification, "}"]


def trim_heap() -> bool:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``); False where there is none."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


def log_record(rec: Record) -> None:
    """A record in the log, once it ends: each move and its steps (a large one as a summary)."""
    ok = sum(1 for m in rec.moves if m.ok)
    if len(rec.moves) > SUMMARY_OVER:
        log.info("%s of %s: %d of %d addresses moved in %.2f ms (record #%d)", rec.kind, rec.nic, ok,
                 len(rec.moves), rec.total_ms, rec.id)
        for m in [m for m in rec.moves if not m.ok][:SUMMARY_OVER]:
            log.warning("%s of %s: %s not moved to %s: %s", rec.kind, rec.nic, m.address, m.device, m.error)
        return
    for m in rec.moves:
        if m.ok:
            log.info("%s of %s: %s -> %s in %.2f ms (first announcement at %.2f ms)", rec.kind, rec.nic,
                     m.address, m.device, sum((b - a) for _, a, b, _, _ in m.raw) * 1000.0,
                     m.first_announce_ms if m.first_announce_ms is not None else float("nan"))
        else:
            log.warning("%s of %s: %s not moved to %s: %s", rec.kind, rec.nic, m.address, m.device, m.error)
        for s in m.steps(rec.t0):
            log.info("    %-14s %8.3f ms  %s%s%s", s.op, s.ms, "undo: " if s.undo else "", s.text,
                     f"  FAILED: {s.error}" if not s.ok else "")
    for s in rec.nic_steps:
        log.info("    %-14s %8.3f ms  %s", s.op, s.ms, s.text)
