"""Per-NIC health: link observations in, smoothed verdicts and wake-up requests out.

Theory of operation
-------------------
Each configured NIC has a :class:`NicHealth` value. ``observe`` feeds it what
the kernel says of the link (or what path probes concluded); ``tick`` feeds it
the clock. Both are pure: they return the new value and a tuple of outputs --
:class:`Failed` (move this NIC's addresses away now), :class:`Recovered`
(the NIC may take its addresses back), :class:`Held` (it flaps and is held
down), and :class:`Wakeup` (call ``tick`` again at this time). Nothing here
sleeps or reads a clock: the daemon owns time and passes ``now`` in.

States and transitions (written as data in ``_TRANSITIONS``)::

    up --link lost--> down --link back--> returning --delay passed--> up
                        ^                      |
                        +------link lost-------+
    down/returning --link back, too many transitions in the window--> held
    held --link stable for the window--> returning

A failure is acted on at once (no smoothing on the way down: carrier loss is
unambiguous and every millisecond counts). Recovery waits ``failback.delay``;
a NIC that changed state ``flap_count`` times within ``flap_window`` is held
down until it has been stable for a whole window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

State = Literal["up", "down", "returning", "held"]

# (state, event) -> next state; events: "lost", "back", "settled", "flapping", "quiet"
_TRANSITIONS: dict[tuple[State, str], State] = {
    ("up", "lost"): "down",
    ("up", "back"): "up",
    ("down", "lost"): "down",
    ("down", "back"): "returning",
    ("down", "flapping"): "held",
    ("returning", "lost"): "down",
    ("returning", "back"): "returning",
    ("returning", "flapping"): "held",
    ("returning", "settled"): "up",
    ("held", "lost"): "held",
    ("held", "back"): "held",
    ("held", "quiet"): "returning",
}


@dataclass(frozen=True, slots=True)
class Failed:
    nic: str
    reason: str


@dataclass(frozen=True, slots=True)
class Recovered:
    nic: str


@dataclass(frozen=True, slots=True)
class Held:
    nic: str
    reason: str


@dataclass(frozen=True, slots=True)
class Wakeup:
    nic: str
    at: float


Output = Failed | Recovered | Held | Wakeup


@dataclass(frozen=True, slots=True)
class Timing:
    delay: float = 2.0
    flap_count: int = 4
    flap_window: float = 10.0


@dataclass(frozen=True, slots=True)
class NicHealth:
    nic: str
    state: State
    since: float
    link_ok: bool
    reason: str = ""
    transitions: tuple[float, ...] = ()  # times of recent link changes, newest last

    @property
    def usable(self) -> bool:
        """May carry addresses (its own or others')."""
        return self.state == "up"


def initial(nic: str, link_ok: bool, now: float) -> NicHealth:
    """At start a NIC with link is up at once (no failback delay before the first placement)."""
    return NicHealth(nic, "up" if link_ok else "down", now, link_ok, "" if link_ok else "no carrier at start")


def _go(h: NicHealth, event: str, now: float, reason: str) -> NicHealth:
    nxt = _TRANSITIONS.get((h.state, event))
    if nxt is None:
        raise ValueError(f"illegal health transition: {h.state} on {event}")
    if nxt == h.state:
        return h
    return replace(h, state=nxt, since=now, reason=reason)


def observe(h: NicHealth, link_ok: bool, now: float, timing: Timing,
            reason: str = "") -> tuple[NicHealth, tuple[Output, ...]]:
    """The link (carrier/admin/path) of ``h.nic`` is now ``link_ok``."""
    if link_ok == h.link_ok:
        return h, ()
    recent = tuple(t for t in h.transitions if now - t < timing.flap_window) + (now,)
    h = replace(h, link_ok=link_ok, transitions=recent)
    if not link_ok:
        was = h.state
        h = _go(h, "lost", now, reason or "link lost")
        if was == "up":
            return h, (Failed(h.nic, h.reason),)
        return h, ()
    if h.state == "held":
        return h, (Wakeup(h.nic, now + timing.flap_window),)
    if len(recent) >= timing.flap_count:
        why = f"flapping: {len(recent)} link changes in {timing.flap_window:g} s"
        h = _go(h, "flapping", now, why)
        return h, (Held(h.nic, why), Wakeup(h.nic, now + timing.flap_window))
    h = _go(h, "back", now, "link back, waiting for the failback delay")
    if h.state == "up":
        return h, ()
    return h, (Wakeup(h.nic, now + timing.delay),)


def tick(h: NicHealth, now: float, timing: Timing) -> tuple[NicHealth, tuple[Output, ...]]:
    """Time passed: settle a returning NIC, release a held one."""
    if h.state == "returning" and h.link_ok:
        if now - h.since >= timing.delay - 1e-9:
            h = _go(h, "settled", now, "")
            return h, (Recovered(h.nic),)
        return h, (Wakeup(h.nic, h.since + timing.delay),)
    if h.state == "held":
        if not h.link_ok:
            return h, ()  # nothing to wait for until the link is back (observe sets the next wake-up)
        last = h.transitions[-1] if h.transitions else h.since
        if h.link_ok and now - last >= timing.flap_window - 1e-9:
            h = replace(_go(h, "quiet", now, "stable again, waiting for the failback delay"), transitions=())
            return h, (Wakeup(h.nic, now + timing.delay),)
        return h, (Wakeup(h.nic, last + timing.flap_window),)
    return h, ()
