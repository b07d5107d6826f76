"""One transaction model for every plan: per-move generators and the phases that batch them (pure).

Theory of operation
-------------------
Every move of a plan is a :func:`transaction`: a generator that *yields
commands* and *receives their results*, the way mitmproxy's sans-I/O layers
do. It never touches the kernel, never sleeps, never reads a clock:

* :class:`Run` -- run these steps (consecutive steps of one kind), send back
  one error text per step ("" = done). The first error ends the forward
  steps: the transaction yields the inverse of every completed step, newest
  first (``undo=True``), and ends failed;
* :class:`StartProbe` -- optimistic conflict mode: start this RFC 5227 / DAD
  probe and do not wait for it (IPv6 optimistic DAD moves the same way); it is
  started once the move's first announcement is out, so that opening its
  sockets never delays the address or the announcement;
* :class:`JoinProbe` -- wait for that probe's verdict; an answer means the
  address is someone else's after all, and the move is undone.

In strict mode the probe is started and joined before any forward step:
nothing changes until the probe's timeout passed unanswered (a join is the
last phase of its round, so the moves of the plan that do not wait -- no probe,
or optimistic -- are done by then). Each move has its own mode: the
runner moves an address with a fresh clear background finding
(:mod:`ipshift.scout`) optimistically whatever ``conflict_check.mode`` says.

A :class:`Phases` scheduler runs the transactions of a plan in lockstep: each
*phase* takes, among the commands the live transactions are waiting on, those
of the kind that comes first in the plan's order (undo before anything, then
the order of the step kinds in a single move), so that all of a plan's
"remove address" steps go in one batch, then all its "add macvlan", then all
"add address"... A plan of one move runs exactly its own steps in its own
order; a plan of 10,000 runs the same steps, in a few batches. Bulk changes
how steps are batched, never what happens. The driver (``runner.py``) does
the I/O of each phase and hands the results back.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Literal

from ipshift.steps import (
    AddAddress, AddMacvlan, AddRoute, AddVlan, Announce, CheckConflict, Conflict, DelAddress, DelLink,
    DelNeighbours, DelRoute, DemoteRoutes, FlushNeighbours, FlushRouteCache, MoveRoutes, RestoreRoutes, SaveRoutes,
    SetMac, Step, inverse,
)

ConflictMode = Literal["strict", "optimistic"]


@dataclass(frozen=True, slots=True)
class Run:
    steps: tuple[Step, ...]  # consecutive steps of one kind
    undo: bool = False


@dataclass(frozen=True, slots=True)
class StartProbe:
    step: CheckConflict


@dataclass(frozen=True, slots=True)
class JoinProbe:
    step: CheckConflict
    defend: bool = True  # after the move (optimistic); False: before it (strict)


Command = Run | StartProbe | JoinProbe
Reply = tuple[str, ...] | None  # one error per step of a Run ("" = done); a probe's verdict as (error,)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    step: Step | None = None  # the step that failed
    reason: str = ""  # why it failed
    conflict: bool = False  # the failure was a conflict probe's answer

    @property
    def error(self) -> str:
        return "" if self.step is None else f"{self.step.describe()}: {self.reason}"


def _runs(steps: Sequence[Step]) -> list[tuple[Step, ...]]:
    """``steps`` cut into runs of consecutive steps of one kind."""
    out: list[list[Step]] = []
    for st in steps:
        if out and type(out[-1][0]) is type(st):
            out[-1].append(st)
        else:
            out.append([st])
    return [tuple(r) for r in out]


def transaction(steps: Sequence[Step], mode: ConflictMode) -> Generator[Command, Reply, Outcome]:
    """One move's transaction (see the module docstring)."""
    probe = next((s for s in steps if isinstance(s, CheckConflict)), None)
    forward = [s for s in steps if not isinstance(s, CheckConflict)]
    done: list[Step] = []
    failure: Outcome | None = None
    started = False
    if probe is not None and mode == "strict":
        yield StartProbe(probe)  # joined before anything changes: the moves of other modes go on meanwhile
        (err,) = (yield JoinProbe(probe, defend=False)) or ("",)
        if err:
            return Outcome(False, probe, err, conflict=isinstance(err, Conflict))
    for run in _runs(forward):
        errors = (yield Run(run)) or ("",) * len(run)
        for st, err in zip(run, errors):
            if err and not isinstance(st, Announce):
                failure = Outcome(False, st, err)
                break
            done.append(st)
        if failure is not None:
            break
        if probe is not None and mode == "optimistic" and not started and isinstance(run[0], Announce):
            started = True  # the first announcement is out: now the probe that defends the address
            yield StartProbe(probe)
    if failure is None and probe is not None and mode == "optimistic" and not started:
        started = True
        yield StartProbe(probe)
    if failure is None and probe is not None and mode == "optimistic":
        (err,) = (yield JoinProbe(probe)) or ("",)
        if err:
            failure = Outcome(False, probe, err, conflict=isinstance(err, Conflict))
    if failure is None:
        return Outcome(True)
    for st in reversed(done):
        undo = inverse(st)
        if undo is not None:
            yield Run((undo,), undo=True)  # an undo that fails is recorded; the rest still runs
    return failure


# The order of step kinds within any move (failover, failback, settling): a phase runs the earliest
# kind any move waits on. Make before break: an address is added and announced before it leaves.
ORDER: tuple[type, ...] = (
    CheckConflict, AddVlan, AddMacvlan, SetMac, AddAddress, Announce, SaveRoutes, DelAddress, DelRoute, AddRoute,
    DelNeighbours, FlushNeighbours, FlushRouteCache, MoveRoutes, DelLink, DemoteRoutes, RestoreRoutes,
)


@dataclass(frozen=True, slots=True)
class Phase:
    """One batch: the commands of some transactions, all of one kind."""

    kind: str  # "probe", "start-probe", "join-probe", or a step class name
    undo: bool
    members: tuple[tuple[int, Command], ...]  # (transaction number, its command)

    @property
    def steps(self) -> tuple[Step, ...]:
        """Every step of the phase (a probe command counts as its probe step)."""
        out: list[Step] = []
        for _, cmd in self.members:
            out.extend(cmd.steps if isinstance(cmd, Run) else (cmd.step,))
        return tuple(out)


class Phases:
    """Runs transactions in lockstep, phase by phase (pure; see the module docstring)."""

    def __init__(self, moves: Sequence[Sequence[Step]], mode: ConflictMode | Sequence[ConflictMode],
                 order: Sequence[type] = ORDER) -> None:
        self._rank = {kind: i for i, kind in enumerate(order)}
        modes = [mode] * len(moves) if isinstance(mode, str) else list(mode)
        self._gens = [transaction(steps, m) for steps, m in zip(moves, modes, strict=True)]
        self._pending: dict[int, Command] = {}
        self._keys: dict[int, tuple[int, int, str]] = {}  # the phase each pending command belongs to
        self.outcomes: list[Outcome | None] = [None] * len(self._gens)
        for i in range(len(self._gens)):
            self._advance(i, None, first=True)

    def _advance(self, i: int, reply: Reply, first: bool = False) -> None:
        gen = self._gens[i]
        try:
            cmd = next(gen) if first else gen.send(reply)
        except StopIteration as stop:
            self._pending.pop(i, None)
            self._keys.pop(i, None)
            self.outcomes[i] = stop.value
            return
        self._pending[i] = cmd
        self._keys[i] = self._key(cmd)

    def _key(self, cmd: Command) -> tuple[int, int, str]:
        if isinstance(cmd, StartProbe):
            return (1, -1, "start-probe")
        if isinstance(cmd, JoinProbe):
            return (1, len(self._rank) + 1, "join-probe")
        kind = type(cmd.steps[0])
        name = "probe" if kind is CheckConflict else kind.__name__
        return (0 if cmd.undo else 1, self._rank.get(kind, len(self._rank)), name)

    def next(self) -> Phase | None:
        """The next phase to run, or None when every transaction has ended."""
        if not self._pending:
            return None
        keys = self._keys
        best = min(keys.values())
        members = tuple((i, self._pending[i]) for i in sorted(keys) if keys[i] == best)
        return Phase(best[2], best[0] == 0, members)

    def defending_only(self) -> bool:
        """Every live transaction waits only for the probe that defends its completed move: what
        follows the moves (the plan's postlude) may run now, before those answers are in."""
        return bool(self._pending) and all(isinstance(c, JoinProbe) and c.defend for c in self._pending.values())

    def deliver(self, phase: Phase, replies: Sequence[Reply]) -> None:
        """The results of ``phase``: one reply per member, in order."""
        for (i, _), reply in zip(phase.members, replies):
            self._advance(i, reply)
