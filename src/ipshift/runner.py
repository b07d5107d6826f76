"""The plan runner: runs a plan's transactions, phase by phase, and records every step.

Theory of operation
-------------------
:meth:`PlanRunner.run` is the I/O driver of :mod:`ipshift.txn`. For one plan
it journals the move under way, runs the plan's NIC-level prelude, then asks
:class:`~ipshift.txn.Phases` for phase after phase and runs each as one call
of the executor (``run_batch``: one netlink batch for address and route
steps, one socket per survivor for conflict probes, one frame per address
for announcements), hands the results back, and notes what completed in the
kernel view at once. No task, queue or await sits between a link event and
the first netlink request of a one-move plan: the converge task calls this
inline and the executor's batch socket answers within the send.

While the runner changes the kernel (``idle`` clear), readers that could
compete for the loop -- the netlink monitor's decoding of our own
notifications, status, metrics, the history's serialiser -- wait; while it
only waits for conflict probes' answers, they may run.

Every step of every move is recorded with its phase's start and duration
(from the record's ``t0``: when the trigger reached ipshift), and the first
announcement of each move. After the plan, moves that succeeded are
verified in the background (:mod:`ipshift.verify`, one socket per device and
family) and the record ends in :meth:`ipshift.records.History.finish`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from ipshift.config import Config
from ipshift.journal import InProgress
from ipshift.model import IPAddress
from ipshift.nics import Trigger
from ipshift.plan import Move, Plan
from ipshift.policy import verify_targets
from ipshift.records import History, MoveRecord, Record, Refused, StepRecord, VerifyResult
from ipshift.steps import Announce, CheckConflict, RestoreRoutes, Step, op_of
from ipshift.tasks import Tasks
from ipshift.txn import ConflictMode, Phase, Phases, Reply, Run
from ipshift.kernel.withdraw import Withdrawn
from ipshift.view import KernelView, LinkListener

log = logging.getLogger("ipshift.runner")


class StepExecutor(Protocol):
    async def run_batch(self, steps: Sequence[Step]) -> list[str]: ...


class Executes(StepExecutor, LinkListener, Protocol):
    """What the daemon needs of an executor (:class:`ipshift.kernel.apply.Executor`)."""

    withdrawn: Withdrawn


class Verifier(Protocol):
    async def verify(self, device: str, mac: str, ips: Sequence[IPAddress], targets: Sequence[IPAddress],
                     reannounce: Callable[[Sequence[IPAddress]], None]
                     ) -> dict[IPAddress, tuple[float, IPAddress] | str]: ...


class Finding(Protocol):
    @property
    def at(self) -> float: ...

    @property
    def reason(self) -> str: ...


class Knowledge(Protocol):
    """Background conflict findings (:class:`ipshift.scout.ConflictScout`)."""

    def fresh(self, ip: IPAddress, nic: str) -> Finding | None: ...

    def in_use(self) -> dict[tuple[IPAddress, str], str]: ...

    def report(self) -> dict[str, Any]: ...

    async def run(self) -> None: ...


class Beginner(Protocol):
    def begin(self, in_progress: InProgress) -> None: ...


class PlanRunner:
    """Runs plans (see the module docstring). Owns ``findings`` (this round's refusals by a
    survivor, for the next round's planning), ``restored`` (the NICs whose routes it tried to put
    back this round) and ``arrived`` (where each address went, when)."""

    def __init__(self, executor: StepExecutor, view: KernelView, history: History, config: Config, *,
                 journal: Beginner | None = None, verifier: Verifier | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.executor = executor
        self.view = view
        self.history = history
        self.config = config
        self.journal = journal
        self.verifier = verifier
        self._clock = clock
        self._wall = wall
        self.idle = asyncio.Event()
        self.idle.set()
        self.findings: dict[tuple[IPAddress, str], str] = {}
        self.scout: Knowledge | None = None  # background conflict findings, when probing ahead
        self.restored: set[str] = set()  # NICs whose withdrawn routes were tried this round
        self.arrived: dict[str, tuple[str, float]] = {}
        self._tasks = Tasks()
        self._refresher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ plans

    async def run(self, plan: Plan, trigger: Trigger) -> Record:
        rec = Record(self.history.next_id(), plan.kind, plan.failed, trigger.text, trigger.kind, self._wall(),
                     trigger.at)
        rec.refused = [Refused(str(r.interface), tuple(sorted(r.codes())), r.reasons()) for r in plan.refusals]
        if self.journal is not None:
            self.journal.begin(InProgress(f"{plan.kind} of {plan.failed}",
                                          tuple((str(m.interface), m.source, m.target) for m in plan.moves)))
        rec.moves = [MoveRecord(str(m.interface), m.source, m.survivor, m.target) for m in plan.moves]
        postlude_ran = False

        async def postlude() -> None:  # once the moves are done, or only wait for their defence
            nonlocal postlude_ran
            postlude_ran = True
            for step in plan.postlude:
                rec.nic_steps.append(await self._lone(step, rec.t0))

        try:
            for step in plan.prelude:
                rec.nic_steps.append(await self._lone(step, rec.t0))
            await self._phases(plan, rec, postlude)
            if not postlude_ran and (any(m.ok for m in rec.moves) or not rec.moves):
                await postlude()
        finally:
            self.idle.set()
        rec.total_ms = (self._clock() - rec.t0) * 1000.0
        self._verify(plan.moves, rec)
        self.history.finish(rec)
        return rec

    def conflicts(self) -> dict[tuple[IPAddress, str], str]:
        """What the planner must know of conflicts: fresh background findings of someone else using
        an address, and this round's refusals by a survivor."""
        return {**(self.scout.in_use() if self.scout is not None else {}), **self.findings}

    def seen(self) -> dict[str, Any] | None:
        """The background conflict probes' report for status and metrics (None: not probing ahead)."""
        return None if self.scout is None else self.scout.report()

    def _modes(self, plan: Plan, rec: Record) -> list[ConflictMode]:
        """Each move's conflict mode: a fresh clear background finding for its survivor moves it at
        once (defended after the move, as in optimistic mode); else ``conflict_check.mode``."""
        mode, now = self.config.conflict_check.mode, self._clock()
        out: list[ConflictMode] = []
        for move, mr in zip(plan.moves, rec.moves):
            probe = next((s for s in move.steps if isinstance(s, CheckConflict)), None)
            known = self.scout.fresh(probe.ip, probe.ifname) if probe is not None and self.scout else None
            if probe is None:
                out.append(mode)
            elif known is not None and not known.reason:
                out.append("optimistic")
                mr.conflict_check = f"known: nobody else answered {now - known.at:.1f} s ago (background)"
            else:
                out.append(mode)
                mr.conflict_check = mode
        return out

    async def _phases(self, plan: Plan, rec: Record, postlude: Callable[[], Coroutine[Any, Any, None]]) -> None:
        phases = Phases([m.steps for m in plan.moves], self._modes(plan, rec))
        # transaction -> (its probe's task, when it started, its place in the task's steps)
        probes: dict[int, tuple[asyncio.Task[list[str]], float, int]] = {}
        before_defence: Callable[[], Coroutine[Any, Any, None]] | None = postlude
        while (phase := phases.next()) is not None:
            if before_defence is not None and phases.defending_only():
                # the moves are complete: the failed NIC's routes go now, not after the probes' wait
                await before_defence()
                before_defence = None
            replies: list[Reply]
            if phase.kind == "start-probe":  # the probes run while the moves that need not wait go on
                task = self._tasks.spawn(self.executor.run_batch(phase.steps))
                start = self._clock()
                probes.update({i: (task, start, k) for k, (i, _) in enumerate(phase.members)})
                replies = [None] * len(phase.members)
            elif phase.kind == "join-probe":
                self.idle.set()  # only waiting for answers: other work may run meanwhile
                mine = [probes.pop(i) for i, _ in phase.members]
                done = {id(t): await t for t in {id(t): t for t, _, _ in mine}.values()}
                errors = [done[id(t)][k] for t, _, k in mine]
                replies = self._record(phase, errors, min(s for _, s, _ in mine), self._clock(), rec)
            else:
                if phase.kind == "probe":
                    self.idle.set()  # only waiting for answers: other work may run meanwhile
                else:
                    self.idle.clear()
                start = self._clock()
                errors = await self.executor.run_batch(phase.steps)
                end = self._clock()
                self.view.note([st for st, e in zip(phase.steps, errors) if not e])
                replies = self._record(phase, errors, start, end, rec)
            phases.deliver(phase, replies)
        for move, mr, out in zip(plan.moves, rec.moves, phases.outcomes):
            assert out is not None
            mr.ok, mr.error, mr.conflict = out.ok, out.error, out.conflict
            if out.ok:
                self.arrived[str(move.interface.ip)] = (move.target, self._wall())
            else:
                self.findings[(move.interface.ip, move.survivor)] = out.reason
        await self._announce_again(rec)

    async def _announce_again(self, rec: Record) -> None:
        """A failed announcement does not undo a move that is otherwise complete: it is sent once
        more, and both tries are recorded."""
        again = [(m, st) for m in rec.moves if m.ok for st, _, _, err, undo in m.raw
                 if err and not undo and isinstance(st, Announce)]
        if not again:
            return
        start = self._clock()
        errors = await self.executor.run_batch([st for _, st in again])
        end = self._clock()
        for (m, st), err in zip(again, errors):
            m.raw.append((st, start, end, err, False))
            if not err and m.first_announce_ms is None:
                m.first_announce_ms = (end - rec.t0) * 1000.0

    def _record(self, phase: Phase, errors: Sequence[str], start: float, end: float, rec: Record) -> list[Reply]:
        replies: list[Reply] = []
        k = 0
        announce = phase.kind == "Announce" and not phase.undo
        for i, cmd in phase.members:
            steps = cmd.steps if isinstance(cmd, Run) else (cmd.step,)
            errs = tuple(errors[k:k + len(steps)])
            k += len(steps)
            raw = rec.moves[i].raw
            for st, err in zip(steps, errs):
                raw.append((st, start, end, err, phase.undo))
            if announce and rec.moves[i].first_announce_ms is None and not any(errs):  # sent, not failed
                rec.moves[i].first_announce_ms = (end - rec.t0) * 1000.0
            replies.append(errs)
        return replies

    async def _lone(self, step: Step, t0: float) -> StepRecord:
        if isinstance(step, RestoreRoutes):
            self.restored.add(step.ifname)
        start = self._clock()
        (err,) = await self.executor.run_batch([step])
        end = self._clock()
        if not err:
            self.view.note([step])
        return StepRecord(op_of(step), step.describe(), (start - t0) * 1000.0, (end - start) * 1000.0, not err, err)

    async def run_steps(self, steps: Sequence[Step], *, what: str = "") -> list[str]:
        """Steps outside a plan (start-up routes, re-announcements): one batch per kind, noted in
        the view; the error of each ("" = done). With ``what``, each is logged as that."""
        errors: list[str] = []
        i = 0
        while i < len(steps):
            j = i
            while j < len(steps) and type(steps[j]) is type(steps[i]):
                j += 1
            batch = list(steps[i:j])
            errs = await self.executor.run_batch(batch)
            self.view.note([st for st, e in zip(batch, errs) if not e])
            errors.extend(errs)
            i = j
        if what:
            for st, err in zip(steps, errors):
                if err:
                    log.warning("%s: %s failed: %s", what, st.describe(), err)
                else:
                    log.info("%s: %s", what, st.describe())
        return errors

    def scout_ahead(self, scout: Knowledge) -> None:
        """Take conflict findings from ``scout``, whose loop runs as long as the runner."""
        self.scout = scout
        self._tasks.spawn(scout.run())

    def refresh(self, steps: Callable[[], Sequence[Step]]) -> None:
        """``announce.refresh`` as configured now: ``steps()`` run every so often, in slices of 256,
        never while a plan runs (no task at all when it is off; a new call replaces the last)."""
        if self._refresher is not None:
            self._refresher.cancel()
        every = self.config.announce.refresh
        self._refresher = self._tasks.spawn(self._refresh(every, steps)) if every else None

    async def _refresh(self, every: float, steps: Callable[[], Sequence[Step]]) -> None:
        while True:
            await asyncio.sleep(every)
            todo = steps()
            for i in range(0, len(todo), 256):
                await self.idle.wait()
                await self.run_steps(todo[i:i + 256])

    # ------------------------------------------------------------------ verification

    def _verify(self, moves: Sequence[Move], rec: Record) -> None:
        """Ask the neighbours, from every moved address, whether they follow it (in the background)."""
        if self.verifier is None:
            return
        groups: dict[tuple[str, tuple[IPAddress, ...]], list[IPAddress]] = {}
        for move, mr in zip(moves, rec.moves):
            targets = verify_targets(self.config, move.interface.network) if mr.ok else ()
            if targets:
                groups.setdefault((move.target, targets), []).append(move.interface.ip)
        if not groups:
            return
        rec.verification = "checking"
        pending = [len(groups)]
        for (device, targets), ips in groups.items():
            self._tasks.spawn(self._verify_group(rec, device, targets, ips, pending))

    async def _verify_group(self, rec: Record, device: str, targets: tuple[IPAddress, ...],
                            ips: list[IPAddress], pending: list[int]) -> None:
        assert self.verifier is not None
        rounds = self.config.announce.verify_rounds
        link = self.view.link(device)
        results: dict[IPAddress, tuple[float, IPAddress] | str]
        if link is None or not link.mac:
            results = {ip: "the device's MAC is unknown" for ip in ips}
        else:
            def reannounce(again: Sequence[IPAddress]) -> None:
                self._tasks.spawn(self.executor.run_batch([Announce(device, ip, 1, 0.0) for ip in again]))

            try:
                results = await self.verifier.verify(device, link.mac, ips, targets, reannounce)
            except OSError as exc:
                results = {ip: str(exc) for ip in ips}
        by_ip = {ipaddress_key(m.address): m for m in rec.moves}
        for ip in ips:
            res = results.get(ip, f"no answer from {', '.join(map(str, targets))} after {rounds} rounds")
            m = by_ip[str(ip)]
            if isinstance(res, tuple):
                at, who = res
                rec.verified[m.address] = VerifyResult("confirmed", str(who), round((at - rec.t0) * 1000.0, 3))
            else:
                rec.verified[m.address] = VerifyResult("unconfirmed", None, None, res)
                log.warning("%s on %s: path unconfirmed: %s", m.address, device, res)
        pending[0] -= 1
        if pending[0] == 0:
            self.history.verified(rec)

    # ------------------------------------------------------------------ tasks

    async def close(self) -> None:
        await self._tasks.cancel()


def ipaddress_key(address: str) -> str:
    """The address of ``address/prefix``, as text."""
    return address.split("/", 1)[0]
