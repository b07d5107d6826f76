"""Per-NIC state: health with its link, path and operator inputs, triggers, timers, failback asks.

Theory of operation
-------------------
:class:`NicStates` is the one owner of everything the daemon knows about its
configured NICs as carriers of addresses. Its inputs are plain method calls
-- :meth:`~NicStates.link_changed` from the kernel view's events,
:meth:`~NicStates.path_changed` from the path prober,
:meth:`~NicStates.drain` / :meth:`~NicStates.undrain` /
:meth:`~NicStates.ask_failback` from operator commands -- and each goes
straight into the pure machine of :mod:`ipshift.health`. What the machine
returns is acted on here: a failure or recovery records the *trigger* (what
happened and when its news reached ipshift: the first plan it causes is timed
from then) and calls ``on_change`` (the daemon wakes its converge loop);
a wake-up request becomes a timer on the running loop, owned and cancelled
here.

An address placed on a NIC whose path is not verified (allowed while no NIC's
path is) was announced into a path nobody answered on: :meth:`placed` keeps
it, and once that NIC's path is confirmed :meth:`take_confirmed` hands it to
the daemon to be announced again (the network may not have heard the first
announcement at all).

The planner reads :meth:`usable`, :meth:`unhealthy` and :meth:`bring_back`;
``status`` and metrics read :meth:`health`. With ``detect.link: false`` only
the device's existence is a link input: carrier and admin state are left to
the path probes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ipshift import health as hl
from ipshift.config import Config
from ipshift.journal import NicRecord
from ipshift.model import IPAddress, Link

log = logging.getLogger("ipshift.nics")

TriggerKind = Literal["link", "path", "operator", "recovered", "placement", "converge"]


@dataclass(frozen=True, slots=True)
class Trigger:
    """What caused a plan, and when the news reached ipshift (monotonic)."""

    kind: TriggerKind
    text: str
    at: float


def link_reason(link: Link | None) -> str:
    """Why a link cannot carry traffic, in an operator's words ("" when it can)."""
    if link is None:
        return "device removed"
    if not link.admin_up:
        return "administratively down"
    if not link.carrier:
        return "carrier lost"
    if not link.healthy:
        return f"operstate {link.operstate}"
    return ""


class NicStates:
    """The configured NICs' health and what the operator asked of them (see the module docstring)."""

    def __init__(self, config: Config, *, on_change: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._on_change = on_change
        self._clock = clock
        self._health: dict[str, hl.NicHealth] = {}
        self._triggers: dict[str, Trigger] = {}
        self._failback_asked: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._unconfirmed: dict[str, set[IPAddress]] = {}  # placed while the NIC's path was unverified
        self._confirmed: dict[str, set[IPAddress]] = {}  # ... and its path has answered since

    # ------------------------------------------------------------------ set-up

    @property
    def timing(self) -> hl.Timing:
        fb = self._config.failback
        return hl.Timing(delay=fb.delay, flap_count=fb.flap_count, flap_window=fb.flap_window)

    def start(self, links: Mapping[str, Link], *, drained: Iterable[str] = (),
              saved: Mapping[str, NicRecord] | None = None) -> None:
        """Every configured NIC's first health: what the last run knew of it (``saved``: path
        verdict, hold-down, failback delay under way; only from this boot), then the links the
        kernel has now."""
        now = self._clock()
        drained = set(drained)
        for nic in self._config.interfaces:
            link_ok = self._link_input(links.get(nic))
            r = (saved or {}).get(nic)
            if r is None:
                self._health[nic] = hl.initial(nic, link_ok, now, drained=nic in drained)
            else:
                path = r.path if r.path in ("unverified", "up", "failed") else None
                prior = hl.NicHealth(nic, r.state, r.since, r.ok, r.reason, r.transitions,  # type: ignore[arg-type]
                                     r.ok, path, nic in drained)  # type: ignore[arg-type]
                self._apply(*hl.restored(prior, link_ok, now, self.timing, trust_unverified=True), at=now)
            h = self._health[nic]
            log.info("%s: %s%s", nic, h.state, f" ({h.reason})" if h.reason else "")
        self._recheck(now)

    def records(self) -> dict[str, NicRecord]:
        """What a restart needs of each NIC's health (see :meth:`start`)."""
        return {nic: NicRecord(h.state, h.since, h.ok, h.reason, h.transitions, h.path)
                for nic, h in self._health.items()}

    def reconfigure(self, config: Config, links: Mapping[str, Link]) -> None:
        """A new configuration: NICs it adds start fresh, NICs it removes are forgotten, the others
        keep their state."""
        self._config = config
        now = self._clock()
        for nic in list(self._health):
            if nic not in config.interfaces:
                del self._health[nic]
                self._triggers.pop(nic, None)
                self._unconfirmed.pop(nic, None)
                self._confirmed.pop(nic, None)
                self._failback_asked.discard(nic)
                timer = self._timers.pop(nic, None)
                if timer is not None:
                    timer.cancel()
        for nic in config.interfaces:
            if nic not in self._health:
                self._health[nic] = hl.initial(nic, self._link_input(links.get(nic)), now)
        self._recheck(now)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # ------------------------------------------------------------------ inputs

    def link_changed(self, nic: str, link: Link | None, at: float, reason: str = "") -> None:
        """The kernel reports ``nic``'s link (None: the device is gone; ``reason`` may say more)."""
        h = self._health.get(nic)
        if h is None:
            return
        up = self._link_input(link)
        why = reason or ("link back" if up else link_reason(link) or "link lost")
        self._apply(*hl.link(h, up, self._clock(), self.timing, why), at=at)

    def path_changed(self, nic: str, verdict: hl.PathVerdict | None, why: str, at: float) -> None:
        """The path prober's verdict for ``nic`` changed (None: no longer probed)."""
        self.paths_changed([(nic, verdict, why, at)])

    def paths_changed(self, verdicts: Iterable[tuple[str, hl.PathVerdict | None, str, float]]) -> None:
        """The verdicts of one probe round, taken as one observation: a NIC whose path was just
        verified does not make another one, verified in the same round, look unverified first."""
        at = self._clock()
        for nic, verdict, why, at in verdicts:
            h = self._health.get(nic)
            if h is not None and h.path != verdict:
                self._apply(*hl.path(h, verdict, self._clock(), self.timing, why or f"path {verdict}"), at=at)
                if verdict == "up" and self._unconfirmed.get(nic):
                    self._confirmed.setdefault(nic, set()).update(self._unconfirmed.pop(nic))
                    self._on_change()
        self._recheck(at)

    def placed(self, moves: Iterable[tuple[str, IPAddress]]) -> None:
        """Addresses just moved onto these NICs (and announced there): those on a NIC whose path is
        probed but not verified are announced again once it is (:meth:`take_confirmed`)."""
        for nic, ip in moves:
            h = self._health.get(nic)
            if h is not None and h.path in ("unverified", "failed"):
                self._unconfirmed.setdefault(nic, set()).add(ip)
            elif nic in self._unconfirmed:
                self._unconfirmed[nic].discard(ip)

    def take_confirmed(self) -> dict[str, set[IPAddress]]:
        """NIC -> the addresses placed on it while its path was unverified, now that it answers."""
        out, self._confirmed = self._confirmed, {}
        return out

    def _recheck(self, at: float) -> None:
        """An unverified path counts as up only while no NIC's path is verified at all: a silent
        target at boot does not take the gateway down, and a NIC back from a failure (its path
        judged afresh) takes no address before its path answers."""
        trust = not any(h.path == "up" for h in self._health.values())
        for nic, h in list(self._health.items()):
            if h.trust_unverified != trust:
                self._apply(*hl.trust(h, trust, self._clock(), self.timing), at=at)

    def drain(self, nic: str) -> None:
        """``ipshift failover NIC``: its addresses leave, and stay away until :meth:`undrain`."""
        h = self._health.get(nic)
        if h is not None:
            self._apply(*hl.drain(h, True), at=self._clock())

    def undrain(self, nic: str) -> str:
        """``ipshift failback NIC``: no longer drained; "" or why it cannot take addresses yet."""
        h = self._health.get(nic)
        if h is None:
            return f"{nic} is not a configured interface"
        self._apply(*hl.drain(h, False), at=self._clock())
        h = self._health[nic]
        return "" if h.usable else f"{nic} is {h.state}: {h.reason}; its addresses come back when it is up"

    def ask_failback(self, nic: str) -> None:
        """Bring ``nic``'s addresses home in the next plan even in failback mode manual."""
        self._failback_asked.add(nic)
        self._triggers[nic] = Trigger("operator", "operator: ipshift failback", self._clock())

    def failback_done(self, nic: str | None = None) -> None:
        """The failback request of ``nic`` (None: every one) has been served."""
        if nic is None:
            self._failback_asked.clear()
        else:
            self._failback_asked.discard(nic)

    # ------------------------------------------------------------------ reads

    def usable(self) -> dict[str, bool]:
        return {nic: h.usable for nic, h in self._health.items()}

    def unhealthy(self) -> dict[str, str]:
        return {nic: h.why_not for nic, h in self._health.items() if not h.usable}

    def bring_back(self) -> frozenset[str]:
        auto = self._config.failback.mode == "auto"
        return frozenset(n for n, h in self._health.items() if h.usable and (auto or n in self._failback_asked))

    def health(self) -> Mapping[str, hl.NicHealth]:
        """Every configured NIC's health (read-only values)."""
        return dict(self._health)

    def drained(self) -> tuple[str, ...]:
        return tuple(sorted(n for n, h in self._health.items() if h.drained))

    def take_trigger(self, nic: str, kind: str = "failover") -> Trigger:
        """What caused the plan of ``kind`` for ``nic`` now: a trigger is used by the first plan it
        causes; a plan without one is a later round (``converge``) or, for a failback, a placement."""
        t = self._triggers.pop(nic, None)
        if kind == "failback" and (t is None or t.kind == "converge"):
            return Trigger("placement", "placement", t.at if t else self._clock())
        return t or Trigger("converge", "converge", self._clock())

    # ------------------------------------------------------------------ the machine's outputs

    def _link_input(self, link: Link | None) -> bool:
        if link is None:
            return False
        return link.healthy if self._config.detect.link else True

    def _apply(self, h: hl.NicHealth, outputs: tuple[hl.Output, ...], *, at: float) -> None:
        self._health[h.nic] = h
        for out in outputs:
            match out:
                case hl.Failed(nic=nic, reason=reason, cause=cause):
                    log.warning("%s failed: %s", nic, reason)
                    self._triggers[nic] = Trigger(cause, reason, at)
                    self._on_change()
                case hl.Recovered(nic=nic, cause=cause):
                    if cause == "operator":
                        self._triggers[nic] = Trigger("operator", "operator: ipshift failback", at)
                    else:
                        log.info("%s is healthy again", nic)
                        self._triggers[nic] = Trigger("recovered", "recovered", self._clock())
                    self._on_change()
                case hl.Held(nic=nic, reason=reason):
                    log.warning("%s held down: %s", nic, reason)
                case hl.Wakeup(nic=nic, at=when):
                    self._wake(nic, when)
                case _:
                    raise AssertionError(f"unknown health output {out!r}")

    def _wake(self, nic: str, when: float) -> None:
        old = self._timers.pop(nic, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, when - self._clock())
        self._timers[nic] = asyncio.get_running_loop().call_later(delay, self.tick, nic)

    def tick(self, nic: str) -> None:
        """Time passed for ``nic`` (its timer fired): a returning NIC may be up, a held one released."""
        timer = self._timers.pop(nic, None)
        if timer is not None:
            timer.cancel()
        h = self._health.get(nic)
        if h is not None:
            now = self._clock()
            self._apply(*hl.tick(h, now, self.timing), at=now)
