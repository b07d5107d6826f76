"""The transaction model, without a kernel: commands out, results in, phases batched."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from ipshift.steps import (
    AddAddress, AddMacvlan, AddRoute, Announce, CheckConflict, Conflict, DelAddress, DelNeighbours, DelRoute,
    FlushRouteCache, Step,
)
from ipshift.txn import JoinProbe, Phases, Run, StartProbe, transaction

IP = ipaddress.ip_interface("192.0.2.10/24")
NET = ipaddress.ip_network("198.51.100.0/24")
VIA = ipaddress.ip_address("192.0.2.1")
PROBE = CheckConflict("eth1", IP.ip, 0.01)
MOVE: tuple[Step, ...] = (PROBE, DelAddress("eth0", IP), AddAddress("eth1", IP), Announce("eth1", IP.ip, 1, 0.01),
                          DelRoute(NET, "eth0", VIA), AddRoute(NET, "eth1", VIA), FlushRouteCache(4))


def drive(steps: Sequence[Step], mode: str, fail: dict[Step, str]) -> tuple[list[object], object]:
    """Run one transaction to its end; ``fail``: the error each step gets. The commands it gave."""
    gen = transaction(steps, mode)  # type: ignore[arg-type]
    seen: list[object] = []
    reply = None
    try:
        cmd = next(gen)
        while True:
            seen.append(cmd)
            if isinstance(cmd, Run):
                reply = tuple(fail.get(s, "") for s in cmd.steps)
            elif isinstance(cmd, JoinProbe):
                reply = (fail.get(cmd.step, ""),)
            else:
                reply = None
            cmd = gen.send(reply)
    except StopIteration as stop:
        return seen, stop.value


def texts(cmds: list[object]) -> list[str]:
    out = []
    for c in cmds:
        if isinstance(c, Run):
            out += [("undo " if c.undo else "") + s.describe() for s in c.steps]
        elif isinstance(c, StartProbe):
            out.append("start " + c.step.describe())
        elif isinstance(c, JoinProbe):
            out.append("join " + c.step.describe())
    return out


@pytest.mark.parametrize(("mode", "fail", "ok", "expect"), [
    # strict: the probe is started and joined before anything changes
    ("strict", {}, True, ["start " + PROBE.describe(), "join " + PROBE.describe()] + [s.describe() for s in MOVE[1:]]),
    ("strict", {PROBE: Conflict("in use")}, False,  # nothing changes on a conflict
     ["start " + PROBE.describe(), "join " + PROBE.describe()]),
    ("strict", {MOVE[5]: "EEXIST"}, False,  # the route add fails: undo newest first
     ["start " + PROBE.describe(), "join " + PROBE.describe()] + [s.describe() for s in MOVE[1:6]] + ["undo add route 198.51.100.0/24 via 192.0.2.1 dev eth0",
                                          "undo remove 192.0.2.10/24 from eth1",
                                          "undo add 192.0.2.10/24 to eth0"]),
    # optimistic: the probe starts once the first announcement is out
    ("optimistic", {}, True,
     [s.describe() for s in MOVE[1:4]] + ["start " + PROBE.describe()] + [s.describe() for s in MOVE[4:]]
     + ["join " + PROBE.describe()]),
    ("optimistic", {PROBE: Conflict("in use")}, False,  # moved and announced first, then taken back
     [s.describe() for s in MOVE[1:4]] + ["start " + PROBE.describe()] + [s.describe() for s in MOVE[4:]]
     + ["join " + PROBE.describe()]
     + ["undo remove route 198.51.100.0/24 via 192.0.2.1 dev eth1", "undo add route 198.51.100.0/24 via 192.0.2.1 dev eth0",
        "undo remove 192.0.2.10/24 from eth1", "undo add 192.0.2.10/24 to eth0"]),
    ("optimistic", {MOVE[2]: "ENOBUFS"}, False,  # a failed step before the announcement: no probe at all
     [MOVE[1].describe(), MOVE[2].describe(), "undo add 192.0.2.10/24 to eth0"]),
])
def test_one_transaction(mode: str, fail: dict[Step, str], ok: bool, expect: list[str]) -> None:
    cmds, outcome = drive(MOVE, mode, fail)
    assert texts(cmds) == expect
    assert outcome.ok is ok  # type: ignore[attr-defined]
    if not ok:
        assert outcome.conflict is (PROBE in fail)  # type: ignore[attr-defined]


def test_consecutive_steps_of_one_kind_are_one_command() -> None:
    routes = (DelRoute(NET, "eth0", VIA), DelRoute(ipaddress.ip_network("203.0.113.0/24"), "eth0", VIA))
    cmds, _ = drive((DelAddress("eth0", IP), *routes, AddAddress("eth1", IP)), "strict", {})
    assert [len(c.steps) for c in cmds if isinstance(c, Run)] == [1, 2, 1]


def phases_of(moves: Sequence[Sequence[Step]], mode: str = "strict",
              fail: dict[Step, str] | None = None) -> tuple[list[tuple[str, bool, int]], Phases]:
    ph = Phases(moves, mode)  # type: ignore[arg-type]
    out = []
    while (p := ph.next()) is not None:
        out.append((p.kind, p.undo, len(p.members)))
        replies = []
        for _, cmd in p.members:
            if isinstance(cmd, Run):
                replies.append(tuple((fail or {}).get(s, "") for s in cmd.steps))
            elif isinstance(cmd, JoinProbe):
                replies.append(((fail or {}).get(cmd.step, ""),))
            else:
                replies.append(None)
        ph.deliver(p, replies)
    return out, ph


def move(n: int, mac: bool = False) -> tuple[Step, ...]:
    ip = ipaddress.ip_interface(f"192.0.2.{n}/24")
    dev = "ipsmv2" if mac else "eth1"
    return ((DelAddress("eth0", ip),) + ((AddMacvlan("eth1", dev, "02:00:00:00:00:10"),) if mac else ())
            + (AddAddress(dev, ip), Announce(dev, ip.ip, 1, 0.01), DelNeighbours("eth0", ip.network)))


def test_phases_batch_every_move_and_put_the_macvlan_before_any_address() -> None:
    moves = [move(10), move(11), move(12, mac=True), move(13)]
    phases, ph = phases_of(moves)
    assert phases == [("DelAddress", False, 4), ("AddMacvlan", False, 1), ("AddAddress", False, 4),
                      ("Announce", False, 4), ("DelNeighbours", False, 4)]
    assert all(o is not None and o.ok for o in ph.outcomes)


def test_a_failed_move_is_undone_before_the_others_go_on_and_only_it() -> None:
    moves = [move(10), move(11), move(12)]
    phases, ph = phases_of(moves, fail={moves[1][1]: "ENOBUFS"})  # the second move's add
    assert phases == [("DelAddress", False, 3), ("AddAddress", False, 3), ("AddAddress", True, 1),
                      ("Announce", False, 2), ("DelNeighbours", False, 2)]
    assert [o.ok for o in ph.outcomes if o is not None] == [True, False, True]


def test_optimistic_phases_start_every_probe_after_the_announcements_and_join_them_last() -> None:
    moves = [(CheckConflict("eth1", ipaddress.ip_address(f"192.0.2.{n}"), 0.01),) + move(n) for n in (10, 11)]
    phases, ph = phases_of(moves, mode="optimistic", fail={moves[0][0]: "in use"})
    assert phases == [("DelAddress", False, 2), ("AddAddress", False, 2), ("Announce", False, 2),
                      ("start-probe", False, 2), ("DelNeighbours", False, 2), ("join-probe", False, 2),
                      ("DelAddress", True, 1), ("AddAddress", True, 1)]
    assert [o.ok for o in ph.outcomes if o is not None] == [False, True]


def test_a_probe_that_cannot_run_fails_the_move_but_is_no_conflict() -> None:
    _, outcome = drive(MOVE, "strict", {PROBE: "Too many open files (errno 24)"})
    assert not outcome.ok and not outcome.conflict  # type: ignore[attr-defined]


def test_a_failed_announcement_does_not_undo_a_complete_move() -> None:
    cmds, outcome = drive(MOVE, "strict", {MOVE[3]: "Network is down (errno 100)"})
    assert outcome.ok and not any(isinstance(c, Run) and c.undo for c in cmds)  # type: ignore[attr-defined]


def test_each_move_has_its_own_mode_a_known_clear_one_moves_before_the_strict_probe_ends() -> None:
    moves = [(CheckConflict("eth1", ipaddress.ip_address(f"192.0.2.{n}"), 0.01),) + move(n) for n in (10, 11)]
    phases, ph = phases_of(moves, mode=["optimistic", "strict"])  # type: ignore[arg-type]
    # the strict move waits for its probe; the known one moves at once and starts its probe after
    # its announcement; the join comes last
    kinds = [k for k, _, _ in phases]
    assert kinds[0] == "start-probe" and kinds.index("join-probe") > kinds.index("Announce"), phases
    assert kinds.index("start-probe", 1) > kinds.index("Announce"), phases
    # the strict move's own steps come after the join, when the known move is done
    assert phases[kinds.index("join-probe") + 1:] == [("DelAddress", False, 1), ("AddAddress", False, 1),
                                                     ("Announce", False, 1), ("DelNeighbours", False, 1)], phases
    assert [o.ok for o in ph.outcomes if o is not None] == [True, True]
    with pytest.raises(ValueError):
        Phases(moves, ["strict"])  # one mode per move


def test_only_defending_probes_left_means_the_postlude_may_run() -> None:
    moves = [(CheckConflict("eth1", ipaddress.ip_address(f"192.0.2.{n}"), 0.01),) + move(n) for n in (10, 11)]

    def walk(modes: list[str]) -> list[tuple[str, bool]]:
        ph = Phases(moves, modes)  # type: ignore[arg-type]
        seen = []
        while (p := ph.next()) is not None:
            seen.append((p.kind, ph.defending_only()))
            ph.deliver(p, [tuple("" for _ in cmd.steps) if isinstance(cmd, Run) else
                           (("",) if isinstance(cmd, JoinProbe) else None) for _, cmd in p.members])
        return seen

    known = walk(["optimistic", "optimistic"])  # both moves done: only their defence is left
    assert known[-1] == ("join-probe", True) and not any(d for _, d in known[:-1]), known
    strict = walk(["strict", "strict"])  # a strict join comes before its move: no defence
    assert not any(d for _, d in strict), strict
