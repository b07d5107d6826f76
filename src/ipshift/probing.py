"""Path probing as an input of the NIC states: the prober's lifecycle, following the devices.

Theory of operation: :class:`Probing` owns the :class:`~ipshift.pathprobe.PathProber`
(none when ``detect.probe`` is not configured). It starts one from the
configuration, tells it which device each configured NIC is now
(:meth:`Probing.follow`, on every link event of a NIC: a MAC changed, or the
device was made again), stops probing from a NIC that is gone or renamed
away, and hands every verdict change to :meth:`ipshift.nics.NicStates.path_changed`.
A reload that leaves ``detect.probe`` as it was keeps the prober, and with it
every verdict; one that changes it starts a new prober.
"""

from __future__ import annotations

import logging
import time

from ipshift.config import Config
from ipshift.health import PathVerdict
from ipshift.nics import NicStates
from ipshift.pathprobe import PathProber
from ipshift.view import KernelView

log = logging.getLogger("ipshift.probing")


class Probing:
    def __init__(self, view: KernelView, nics: NicStates) -> None:
        self._view = view
        self._nics = nics
        self.prober: PathProber | None = None

    @property
    def active(self) -> bool:
        return self.prober is not None

    def start(self, config: Config) -> None:
        """Probe as ``config`` says (stopping the prober there was)."""
        self.stop()
        probe = config.detect.probe
        if probe is None:
            for nic in config.interfaces:
                self._nics.path_changed(nic, None, "", time.monotonic())
            return
        self.prober = PathProber(probe.targets, probe.interval, probe.misses, probe.rises, probe.mode,
                                 self._verdict, self._view.probe_source, timeout=probe.reply_timeout)
        for nic in config.interfaces:
            self.follow(nic)
            self._nics.path_changed(nic, self.prober.verdict(nic), "", time.monotonic())
        self.prober.start()
        log.info("path probing %s every %.0f ms from %s (%d misses fail a NIC, %d answers restore it)",
                 ", ".join(map(str, probe.targets)), probe.interval * 1000, ", ".join(sorted(self.prober.nics)),
                 probe.misses, probe.rises)

    def reconfigure(self, old: Config, new: Config) -> None:
        if new.detect.probe != old.detect.probe:
            self.start(new)
            return
        for nic in set(old.interfaces) - set(new.interfaces):
            self.gone(nic)
        for nic in new.interfaces:
            self.follow(nic)

    def follow(self, nic: str) -> None:
        """``nic``'s device as the view has it now."""
        if self.prober is None:
            return
        link = self._view.link(nic)
        if link is None:
            self.prober.remove(nic)
        else:
            self.prober.follow(nic, link.index, link.mac)

    def gone(self, nic: str) -> None:
        if self.prober is not None:
            self.prober.remove(nic)

    def stop(self) -> None:
        if self.prober is not None:
            self.prober.stop()
            self.prober = None

    def _verdict(self, nic: str, verdict: PathVerdict, why: str, at: float) -> None:
        log.info("%s path %s%s", nic, verdict, f": {why}" if why else "")
        self._nics.path_changed(nic, verdict, why, at)
