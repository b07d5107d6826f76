"""Path probing and carrier polling as inputs of the NIC states: their lifecycle, following the devices.

Theory of operation: :class:`Probing` owns the :class:`~ipshift.pathprobe.PathProber`
(none when ``detect.probe`` is not configured). It starts one from the
configuration, tells it which device each configured NIC is now
(:meth:`Probing.follow`, on every link event of a NIC: a MAC changed, or the
device was made again), stops probing from a NIC that is gone or renamed
away, and has a NIC that lost its link judged afresh (its verdict from before
the loss says nothing of the path it comes back to). The verdicts of one probe
round go to :meth:`ipshift.nics.NicStates.paths_changed` together, as one
observation. A restart starts each NIC from the verdict the last run had; a
reload keeps every unchanged NIC's verdict, whatever it changes in
``detect.probe``.

It also owns the :class:`~ipshift.carrier.CarrierPoll` (``detect.carrier_poll``):
configured on start and on every reload (started, retimed or stopped), stopped
with the daemon. The daemon runs its :meth:`~ipshift.carrier.CarrierPoll.run`
task, which hands what the polls find to ``dispatch`` as link events; a link
event whose link came from a poll reaches the NIC states with its reason
marked "(polled)", so the failover record says how the loss was found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ipshift.carrier import CarrierPoll
from ipshift.config import Config
from ipshift.health import PathVerdict
from ipshift.nics import NicStates, link_reason
from ipshift.pathprobe import PathProber, PathState
from ipshift.view import KernelView

log = logging.getLogger("ipshift.probing")


class Probing:
    def __init__(self, view: KernelView, nics: NicStates) -> None:
        self._view = view
        self._nics = nics
        self.prober: PathProber | None = None
        self.carrier = CarrierPoll(view)
        self._config: Config | None = None
        self._round: list[tuple[str, PathVerdict | None, str, float]] = []  # verdicts of the round ending

    @property
    def active(self) -> bool:
        return self.prober is not None

    def start(self, config: Config, saved: Mapping[str, str | None] | None = None) -> None:
        """Probe as ``config`` says (stopping the prober there was); ``saved``: the verdicts the last
        run had, each NIC starts from its own."""
        self._stop_prober()
        self.carrier.configure(config)
        self._config = config
        probe = config.detect.probe
        if probe is None:
            for nic in config.interfaces:
                self._nics.path_changed(nic, None, "", time.monotonic())
            return
        self.prober = PathProber(probe.targets, probe.interval, probe.misses, probe.rises, probe.mode,
                                 self._verdict, self._view.probe_source, timeout=probe.reply_timeout,
                                 on_round_end=self._round_end)
        for nic in config.interfaces:
            link = self._view.link(nic)
            verdict = (saved or {}).get(nic)
            if link is not None and link.mac and verdict in ("up", "failed"):
                state = PathState(verdict="up" if verdict == "up" else "failed", ever_answered=True)
                self.prober.add(nic, link.index, link.mac, state)
            self.follow(nic)
        self._nics.paths_changed([(nic, self.prober.verdict(nic), "", time.monotonic()) for nic in config.interfaces])
        self.prober.start()
        log.info("path probing %s every %.0f ms from %s (%d misses fail a NIC, %d answers restore it)",
                 ", ".join(map(str, probe.targets)), probe.interval * 1000, ", ".join(sorted(self.prober.nics)),
                 probe.misses, probe.rises)

    def reconfigure(self, old: Config, new: Config) -> None:
        """A reload: the prober keeps every unchanged NIC's verdict, whatever changed in
        ``detect.probe`` (a path that died just before the reload is still failed after it)."""
        self._config = new
        self.carrier.configure(new)
        probe = new.detect.probe
        if probe is None or self.prober is None:
            if probe != old.detect.probe:
                self.start(new)
            return
        self.prober.reconfigure(probe.targets, probe.interval, probe.misses, probe.rises, probe.mode,
                                probe.reply_timeout)
        for nic in set(old.interfaces) - set(new.interfaces):
            self.gone(nic)
        for nic in new.interfaces:
            self.follow(nic)

    def link(self, nic: str, at: float, reason: str = "") -> None:
        """A link event of configured NIC ``nic`` (None in the view: gone): into the NIC states, and
        the prober follows the device."""
        link = self._view.link(nic)
        if not reason and link is not None and not link.healthy and self.carrier.made(link):
            reason = f"{link_reason(link)} (polled)"
        self._nics.link_changed(nic, link, at, reason if link is None or not link.healthy else "")
        self.follow(nic)

    def follow(self, nic: str) -> None:
        """``nic``'s device as the view has it now."""
        if self.prober is None:
            return
        link = self._view.link(nic)
        if link is None:
            self.prober.remove(nic)
            return
        self.prober.follow(nic, link.index, link.mac)
        if not link.healthy and (self._config is None or self._config.detect.link):
            self.prober.reset(nic, f"{nic} lost its link: its path is judged afresh when it is back")

    def gone(self, nic: str) -> None:
        if self.prober is not None:
            self.prober.remove(nic)

    def stop(self) -> None:
        self.carrier.stop()
        self._stop_prober()

    def _stop_prober(self) -> None:
        if self.prober is not None:
            self.prober.stop()
            self.prober = None

    def _verdict(self, nic: str, verdict: PathVerdict, why: str, at: float) -> None:
        log.info("%s path %s%s", nic, verdict, f": {why}" if why else "")
        if self.prober is not None and self.prober.judging:
            self._round.append((nic, verdict, why, at))  # the round's verdicts go in together
        else:
            self._nics.path_changed(nic, verdict, why, at)

    def _round_end(self) -> None:
        batch, self._round = self._round, []
        if batch:
            self._nics.paths_changed(batch)
