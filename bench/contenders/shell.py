"""The shell baseline: an `ip monitor link` watcher doing `ip addr del/add` + `arping -U`
(IPv6: `ip addr add ... nodad` + `ndptool -U`, an unsolicited neighbour advertisement)."""

from __future__ import annotations

from pathlib import Path

from benchlab import BenchLab, wait_until
from contenders import MoveSpec, Timeline
from contenders.base import SingleGatewayMover, read_step_log

WATCH_SH = Path(__file__).resolve().parent / "watch.sh"
MAX_LIFETIME_S = 4 * 3600


class WatcherContender(SingleGatewayMover):
    """watch.sh in the gateway namespace; subclasses pick the mode."""

    name = "shell"
    label = "shell baseline (ip monitor + ip addr + arping)"
    mode = "ip"
    failover_timeout = 3.0
    failback_timeout = 3.0
    path_detection: str | None = "no path probing: watches carrier only"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.log = self.workdir / "steps.log"

    def unavailable(self) -> str | None:
        import shutil

        missing = [t for t in ("bash", "ip", "arping", "ndptool", "timeout") if shutil.which(t) is None]
        return f"missing {', '.join(missing)}" if missing else None

    def env(self) -> dict[str, str]:
        return {}

    def setup(self, lab: BenchLab, spec: MoveSpec) -> None:
        self.lab, self.spec = lab, spec
        (self.workdir / "addrs").write_text("".join(a + "\n" for a in spec.addresses))
        (self.workdir / "routes").write_text("".join(r + "\n" for r in spec.routes))
        self.log.write_text("")

    def start(self) -> None:
        assert self.lab is not None and self.spec is not None
        self.group.start(
            self.lab, self.lab.gateway, "bash", str(WATCH_SH), self.mode, self.spec.home, self.spec.survivor,
            str(self.workdir / "addrs"), str(self.workdir / "routes"), str(self.log),
            "1" if self.spec.failback else "0", str(MAX_LIFETIME_S),
            log=self.workdir / "stdout.log", env=self.env(),
        )

    def ready(self, timeout: float = 10.0) -> bool:
        return wait_until(lambda: " ready " in self.log.read_text() or not self.group.alive(), timeout) and self.group.alive()

    def idle(self) -> bool:
        """The watcher moves one direction at a time: idle once its last move logged "done".

        (IPaddr2's start of an IPv6 address returns only after its foreground send_ua, about 1 s:
        a trial started earlier would queue behind the previous failback.)"""
        lines = [line.split(" ", 2) for line in self.log.read_text().splitlines() if line.strip()]
        if not lines:
            return False
        last = lines[-1]
        event = last[1] if len(last) > 1 else ""
        return event in ("ready", "done") or (event == "detect" and "no failback" in last[-1])

    def steps(self, since: float) -> Timeline:
        return read_step_log(self.log, since)

    def pids(self) -> list[int]:
        return self.group.pids()


class ShellContender(WatcherContender):
    pass
