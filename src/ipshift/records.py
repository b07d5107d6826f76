"""Failover records: typed while a plan runs, serialised once when it ends, kept within bounds.

Theory of operation
-------------------
A :class:`Record` is built by the plan runner while a plan runs: one
:class:`MoveRecord` per move, each completed step noted as a cheap tuple
(the step, its phase's start and end, its error), and the plan-level steps.
When the plan ends the runner hands it to :meth:`History.finish`, which only
counts it (the metrics' :class:`~ipshift.metrics.Tally`) and queues it: the
failover path never waits for serialisation.

:meth:`History.worker` (a task of the daemon's) serialises each queued record
**once**, in slices of at most ``SLICE_S`` of work between which the event
loop runs other tasks, and only while no plan runs (``idle``); logs it; trims
what is kept (at most ``max_records`` records and ``max_moves`` moves in all,
oldest first, the newest always stays); and hands the history file
(``history.json``, the last ``max_file`` records) to the journal's writer
thread as text parts. ``status``, the operators' commands and the history file
all reuse the same text: nothing is serialised twice.

Path verification ends after the record: its results are a part of their own
(``"verification"``), serialised once when the last of them is in.

Memory: a record of more than ``COMPRESS_OVER`` moves is kept zlib-compressed
(:mod:`ipshift.recordtext`; 10,000 moves are 10 MiB of text), a serialised
record drops its raw steps (the text holds them), and after a large one the
worker returns the C heap's free pages to the system (``trim_heap``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ipshift.metrics import Tally
from ipshift.recordtext import Kept as _Kept, log_record, trim_heap
from ipshift.nics import TriggerKind
from ipshift.plan import Plan, PlanKind
from ipshift.steps import Step, StepOp, op_of

log = logging.getLogger("ipshift.records")

SLICE_S = 0.0005  # at most this much serialisation between two turns of the event loop
CHUNK_MOVES = 1000  # moves per text part
COMPRESS_OVER = 64  # records with more moves are kept compressed
VerifyState = Literal["none", "checking", "done"]
VerifyResultKind = Literal["confirmed", "unconfirmed"]


@dataclass(frozen=True, slots=True)
class StepRecord:
    op: StepOp
    text: str
    at_ms: float  # since the record's t0
    ms: float
    ok: bool
    error: str = ""
    undo: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "text": self.text, "at_ms": round(self.at_ms, 3), "ms": round(self.ms, 3),
                "ok": self.ok, "error": self.error, "undo": self.undo}


@dataclass(slots=True)
class MoveRecord:
    address: str
    source: str
    target: str  # the survivor NIC
    device: str  # the device the address went on
    ok: bool = False
    error: str = ""
    conflict: bool = False
    first_announce_ms: float | None = None
    # how the conflict check ran: "" (none), "strict", "optimistic", or "known" (a fresh clear background
    # finding: moved at once, defended after), with the finding's age
    conflict_check: str = ""
    # (step, phase start, phase end, error, undo), monotonic: turned into StepRecords when serialised
    raw: list[tuple[Step, float, float, str, bool]] = field(default_factory=list)

    def steps(self, t0: float) -> list[StepRecord]:
        """In the order they started (a probe that defends a move is recorded when it ends)."""
        return [StepRecord(op_of(st), st.describe(), (a - t0) * 1000.0, (b - a) * 1000.0, not err, err, undo)
                for st, a, b, err, undo in sorted(self.raw, key=lambda r: r[1])]


@dataclass(frozen=True, slots=True)
class Refused:
    address: str
    codes: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    result: VerifyResultKind
    by: str | None  # the neighbour that answered
    at_ms: float | None  # since the record's t0
    detail: str = ""


@dataclass(slots=True)
class Record:
    id: int
    kind: PlanKind
    nic: str
    trigger: str
    trigger_kind: TriggerKind
    started: float  # wall clock
    t0: float  # monotonic: when the trigger reached ipshift
    moves: list[MoveRecord] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    nic_steps: list[StepRecord] = field(default_factory=list)
    total_ms: float = 0.0
    verification: VerifyState = "none"
    verified: dict[str, VerifyResult] = field(default_factory=dict)  # address -> result

    def head(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "nic": self.nic, "trigger": self.trigger,
                "trigger_kind": self.trigger_kind, "started": self.started, "t0": self.t0,
                "total_ms": round(self.total_ms, 3),
                "refused": [{"address": r.address, "codes": list(r.codes), "reasons": list(r.reasons)}
                            for r in self.refused],
                "nic_steps": [s.as_dict() for s in self.nic_steps]}

    def move_dict(self, m: MoveRecord) -> dict[str, Any]:
        return {"address": m.address, "source": m.source, "target": m.target, "device": m.device, "ok": m.ok,
                "error": m.error, "conflict": m.conflict, "conflict_check": m.conflict_check,
                "first_announce_ms": None if m.first_announce_ms is None else round(m.first_announce_ms, 3),
                "steps": [s.as_dict() for s in m.steps(self.t0)]}

    def verification_dict(self) -> dict[str, Any]:
        return {"state": self.verification,
                "moves": {a: {"result": v.result, "by": v.by, "at_ms": v.at_ms, "detail": v.detail}
                          for a, v in self.verified.items()}}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class TextSink(Protocol):
    def submit_text(self, parts: Sequence[str | bytes]) -> None: ...


@runtime_checkable
class Closable(Protocol):
    def close(self) -> None: ...


class History:
    """The records of this run and the last ones of earlier runs (see the module docstring)."""

    def __init__(self, sink: TextSink | None = None, *, max_records: int = 50, max_moves: int = 50_000,
                 max_file: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self.max_records = max_records
        self.max_moves = max_moves
        self.max_file = max_file
        self._clock = clock
        self.tally = Tally()
        self._kept: deque[_Kept] = deque()
        self._queue: deque[tuple[str, Record]] = deque()  # ("record" | "verification", record)
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()
        self._last_id = 0
        self.encoded = 0  # records serialised (for tests: once each)
        self._large = False  # a record of more than COMPRESS_OVER moves was serialised since the last trim

    @classmethod
    def open(cls, state_dir: str) -> History:
        """The history of ``state_dir``'s history file, written there from now on."""
        from ipshift.journal import HISTORY_FILE, Journal, read_state

        sink = Journal(state_dir, HISTORY_FILE)
        sink.start()
        history = cls(sink)
        history.load(read_state(state_dir, HISTORY_FILE).get("history") or [])
        return history

    def close(self) -> None:
        """Serialise what is queued and close the history file."""
        self.flush()
        if isinstance(self._sink, Closable):
            self._sink.close()

    # ------------------------------------------------------------------ producers

    def next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def load(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Records an earlier run left in the history file (malformed ones are skipped)."""
        for item in items:
            try:
                rid = int(item["id"])
                moves = list(item["moves"])
                doc = {k: v for k, v in item.items() if k not in ("moves", "verification")}
                verification = item.get("verification", {"state": "none", "moves": {}})
            except (KeyError, TypeError, ValueError):
                continue
            core = _dumps(doc)[:-1] + ',"moves":' + _dumps(moves)
            kept: str | bytes = zlib.compress(core.encode(), 1) if len(moves) > COMPRESS_OVER else core
            self._kept.append(_Kept(rid, len(moves), [kept], _dumps(verification)))
            self._last_id = max(self._last_id, rid)
        self._trim()

    def finish(self, rec: Record) -> None:
        """A plan ended: count it now, serialise it when the loop is idle."""
        self.tally.record(rec.kind, rec.nic, rec.total_ms / 1000.0, sum(1 for m in rec.moves if m.ok),
                          sum(1 for m in rec.moves if not m.ok), len(rec.refused), time.time())
        self._enqueue("record", rec)

    def verified(self, rec: Record) -> None:
        """The record's path verification ended: its results get serialised (once)."""
        rec.verification = "done"
        self._enqueue("verification", rec)

    def _enqueue(self, what: str, rec: Record) -> None:
        self._queue.append((what, rec))
        self._settled.clear()
        self._wake.set()

    # ------------------------------------------------------------------ readers

    def parts(self, last: int | None = None) -> list[str]:
        """The kept records (the ``last`` ones only, when given) as the text of a JSON array's
        elements, comma-separated, oldest first."""
        out: list[str] = []
        kept = list(self._kept)[-last:] if last else self._kept
        for i, k in enumerate(kept):
            if i:
                out.append(",")
            out.extend(k.parts())
        return out

    def parts_of(self, ids: Sequence[int]) -> list[str]:
        wanted = set(ids)
        out: list[str] = []
        for k in self._kept:
            if k.id in wanted:
                if out:
                    out.append(",")
                out.extend(k.parts())
        return out

    @property
    def kept_ids(self) -> list[int]:
        return [k.id for k in self._kept]

    async def settled(self) -> None:
        """Wait until every finished record is serialised."""
        await self._settled.wait()

    # ------------------------------------------------------------------ the worker

    async def worker(self, idle: asyncio.Event) -> None:
        """Serialise queued records in slices, while ``idle`` (no plan runs). Runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                what, rec = self._queue[0]  # taken off once done: a flush after a cancel still has it
                if what == "record":
                    await self._encode(rec, idle)
                else:
                    await idle.wait()
                    self._update_verification(rec)
                self._queue.popleft()
                self._write_file()
            self._settled.set()
            if self._large:
                self._large = False
                trim_heap()

    def flush(self) -> None:
        """Serialise everything queued now, at once (at shutdown, and in tests without a loop task)."""
        while self._queue:
            what, rec = self._queue.popleft()
            if what == "record":
                for _ in self._encode_steps(rec):
                    pass
            else:
                self._update_verification(rec)
        self._write_file()
        self._settled.set()

    async def _encode(self, rec: Record, idle: asyncio.Event) -> None:
        for _ in self._encode_steps(rec):  # one yield per slice of work
            await idle.wait()
            await asyncio.sleep(0)

    def _encode_steps(self, rec: Record) -> Iterator[None]:
        deadline = self._clock() + SLICE_S
        head = _dumps(rec.head())
        chunks: list[str | bytes] = [head[:-1] + ',"moves":[']
        buf: list[str] = []
        packer = zlib.compressobj(1) if len(rec.moves) > COMPRESS_OVER else None
        packed: list[bytes] = []
        for i, m in enumerate(rec.moves):
            if i:
                buf.append(",")
            buf.append(_dumps(rec.move_dict(m)))
            if len(buf) >= 2 * CHUNK_MOVES:
                if packer is not None:
                    packed.append(packer.compress("".join(buf).encode()))
                else:
                    chunks.append("".join(buf))
                buf = []
            if i % 32 == 31 and self._clock() > deadline:
                yield
                deadline = self._clock() + SLICE_S
        buf.append("]")
        if packer is not None:
            packed.append(packer.compress("".join(buf).encode()))
            packed.append(packer.flush())
            chunks.append(b"".join(packed))
        else:
            chunks.append("".join(buf))
        verification = _dumps(rec.verification_dict()) if rec.verification != "checking" else \
            '{"state":"checking","moves":{}}'
        self._kept.append(_Kept(rec.id, len(rec.moves), chunks, verification))
        self.encoded += 1
        self._large = self._large or len(rec.moves) > COMPRESS_OVER
        self._trim()
        log_record(rec)
        for m in rec.moves:  # the text holds them now
            m.raw = []

    def _update_verification(self, rec: Record) -> None:
        for k in self._kept:
            if k.id == rec.id:
                k.verification = _dumps(rec.verification_dict())
                return

    def _trim(self) -> None:
        total = sum(k.moves for k in self._kept)
        while len(self._kept) > 1 and (total > self.max_moves or len(self._kept) > self.max_records):
            total -= self._kept.popleft().moves

    def _write_file(self) -> None:
        if self._sink is None:
            return
        last = list(self._kept)[-self.max_file:]
        parts: list[str | bytes] = ['{"version":1,"history":[']
        for i, k in enumerate(last):
            if i:
                parts.append(",")
            parts.extend(k.stored())
        parts.append("]}")
        self._sink.submit_text(parts)


class RefusalLog:
    """Logs an address that no NIC can take when its refusal starts, and again when it ends and
    comes back (not at every converge round in between)."""

    def __init__(self) -> None:
        self._logged: set[tuple[str, str, frozenset[str]]] = set()

    def seen(self, plans: Sequence[Plan], only: str | None = None) -> None:
        """The refusals of the plans without moves of one converge run (``only``: of that NIC's)."""
        now: set[tuple[str, str, frozenset[str]]] = set()
        for plan in plans:
            if plan.moves or (only is not None and plan.failed != only):
                continue
            for r in plan.refusals:
                key = (plan.failed, str(r.interface), r.codes())
                now.add(key)
                if key not in self._logged:
                    log.warning("%s stays on %s: no NIC can take it (%s)", r.interface, r.source,
                                "; ".join(r.reasons()))
        kept = {k for k in self._logged if k[0] != only} if only is not None else set()
        self._logged = kept | now
