"""Per-NIC health: link, path and operator inputs in, smoothed verdicts and wake-up requests out.

Theory of operation
-------------------
Each configured NIC has a :class:`NicHealth` value, and everything that decides
whether the NIC may carry addresses lives in it (h11's rule: one place for
all that affects the state machine). Its inputs:

* :func:`link` -- what the kernel says of the link (admin up, carrier,
  operstate; the device may be gone). With ``detect.link: false`` the caller
  passes ``True`` for an existing device: only the path probes judge it;
* :func:`path` -- the path probes' verdict (``unverified``, ``up``,
  ``failed``; None when the NIC is not probed);
* :func:`drain` -- an operator's ``ipshift failover`` (drained) and
  ``ipshift failback`` (no longer drained);
* :func:`tick` -- the clock.

Link and path combine into one observation that drives the states below:
``ok`` is link up and a path that is verified ``up`` -- or not probed, or
``unverified`` while the caller trusts unverified paths (:func:`trust`: the
NIC states do while no NIC's path is verified at all, so that a silent probe
target at boot does not take the whole gateway down); a drain does not change the state, it
makes the NIC unusable while it lasts. Every function is pure: it returns the
new value and a tuple of outputs --
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
PathVerdict = Literal["unverified", "up", "failed"]

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


Cause = Literal["link", "path", "operator"]


@dataclass(frozen=True, slots=True)
class Failed:
    nic: str
    reason: str
    cause: Cause = "link"


@dataclass(frozen=True, slots=True)
class Recovered:
    nic: str
    cause: Literal["health", "operator"] = "health"


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
    ok: bool  # the observation the states follow: link up and path not failed
    reason: str = ""
    transitions: tuple[float, ...] = ()  # times of recent changes of ``ok``, newest last
    link_up: bool = True  # input: the link as the kernel reports it
    path: PathVerdict | None = None  # input: the path probes' verdict (None: not probed)
    drained: bool = False  # input: an operator moved the NIC's addresses away
    trust_unverified: bool = True  # input: an unverified path counts as up (no NIC's path is verified)

    def observation(self) -> bool:
        """What the inputs say now: link up and a path that is up (or not judged against it)."""
        path_ok = self.path is None or self.path == "up" or (self.path == "unverified" and self.trust_unverified)
        return self.link_up and path_ok

    @property
    def usable(self) -> bool:
        """May carry addresses (its own or others')."""
        return self.state == "up" and not self.drained

    @property
    def why_not(self) -> str:
        """Why it may not carry addresses ("" when usable)."""
        if self.drained:
            return "drained by the operator (ipshift failover)"
        if self.state != "up":
            return self.reason or self.state
        return ""


def initial(nic: str, link_ok: bool, now: float, *, path: PathVerdict | None = None,
            drained: bool = False, trust_unverified: bool = True) -> NicHealth:
    """At start a NIC with link is up at once (no failback delay before the first placement)."""
    h = NicHealth(nic, "down", now, False, "", (), link_ok, path, drained, trust_unverified)
    ok = h.observation()
    reason = "" if ok else ("no carrier at start" if not link_ok else f"path {path} at start")
    return replace(h, state="up" if ok else "down", ok=ok, reason=reason)


def restored(saved: NicHealth, link_ok: bool, now: float, timing: Timing, *,
             trust_unverified: bool) -> tuple[NicHealth, tuple[Output, ...]]:
    """What a previous run of the daemon knew (``saved``: its state, hold-down and path verdict),
    then what the link says now; the outputs include the wake-ups a returning or held NIC needs."""
    h = replace(saved, link_up=link_ok, trust_unverified=trust_unverified)
    h, outputs = observe(h, h.observation(), now, timing, "link lost" if not link_ok else f"path {h.path}")
    h, more = tick(h, now, timing)
    return h, outputs + more


def link(h: NicHealth, up: bool, now: float, timing: Timing, reason: str = "") -> tuple[NicHealth, tuple[Output, ...]]:
    """The kernel reports the link of ``h.nic`` as ``up`` (``reason`` says why when it is not)."""
    h = replace(h, link_up=up)
    return observe(h, h.observation(), now, timing, reason or ("link back" if up else "link lost"), cause="link")


def path(h: NicHealth, verdict: PathVerdict | None, now: float, timing: Timing,
         reason: str = "") -> tuple[NicHealth, tuple[Output, ...]]:
    """The path probes of ``h.nic`` now say ``verdict``."""
    h = replace(h, path=verdict)
    return observe(h, h.observation(), now, timing, reason or f"path {verdict}", cause="path")


def trust(h: NicHealth, unverified_ok: bool, now: float, timing: Timing) -> tuple[NicHealth, tuple[Output, ...]]:
    """Whether an unverified path counts as up changed (another NIC's path was verified, or none is)."""
    if unverified_ok == h.trust_unverified:
        return h, ()
    h = replace(h, trust_unverified=unverified_ok)
    why = "path not verified yet (another NIC's is)" if not unverified_ok else "path not verified (no NIC's is)"
    return observe(h, h.observation(), now, timing, why, cause="path", flap=False)


def drain(h: NicHealth, drained: bool) -> tuple[NicHealth, tuple[Output, ...]]:
    """An operator drained the NIC (``ipshift failover``) or gave it back (``ipshift failback``)."""
    if drained == h.drained:
        return h, ()
    was = h.usable
    h = replace(h, drained=drained)
    if was and not h.usable:
        return h, (Failed(h.nic, "operator: ipshift failover", "operator"),)
    if h.usable and not was:
        return h, (Recovered(h.nic, "operator"),)
    return h, ()


def _go(h: NicHealth, event: str, now: float, reason: str) -> NicHealth:
    nxt = _TRANSITIONS.get((h.state, event))
    if nxt is None:
        raise ValueError(f"illegal health transition: {h.state} on {event}")
    if nxt == h.state:
        return h
    return replace(h, state=nxt, since=now, reason=reason)


def observe(h: NicHealth, ok: bool, now: float, timing: Timing,
            reason: str = "", cause: Cause = "link", flap: bool = True) -> tuple[NicHealth, tuple[Output, ...]]:
    """The combined observation of ``h.nic`` (link up and path not failed) is now ``ok``. ``flap``:
    the change counts towards the flap hold-down (a change of policy, :func:`trust`, does not)."""
    if ok == h.ok:
        return h, ()
    recent = tuple(t for t in h.transitions if now - t < timing.flap_window) + ((now,) if flap else ())
    h = replace(h, ok=ok, transitions=recent)
    if not ok:
        was = h.usable
        h = _go(h, "lost", now, reason or "link lost")
        if was:
            return h, (Failed(h.nic, h.reason, cause),)
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
    if h.state == "returning" and h.ok:
        if now - h.since >= timing.delay - 1e-9:
            h = _go(h, "settled", now, "")
            return h, (Recovered(h.nic),) if not h.drained else ()
        return h, (Wakeup(h.nic, h.since + timing.delay),)
    if h.state == "held":
        if not h.ok:
            return h, ()  # nothing to wait for until the link is back (observe sets the next wake-up)
        last = h.transitions[-1] if h.transitions else h.since
        if now - last >= timing.flap_window - 1e-9:
            h = replace(_go(h, "quiet", now, "stable again, waiting for the failback delay"), transitions=())
            return h, (Wakeup(h.nic, now + timing.delay),)
        return h, (Wakeup(h.nic, last + timing.flap_window),)
    return h, ()
