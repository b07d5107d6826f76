"""The benchmark's lab: ipshift's namespace :class:`~ipshift.lab.Lab` plus what the bench adds.

* an optional second gateway (``{prefix}g2``, one NIC ``eth0`` whose veth peer
  ``pg2`` is a port of the switch's ``br0``), for keepalived's VRRP peer;
* static routes and scale addresses on the gateway, added with ``ip -batch``;
* the switch agent (``swagent.py``: trigger + gratuitous-ARP capture) and the
  prober (``python -m ipshift.prober``) as child processes with a line protocol.

Every namespace is made with the lab's unique prefix and deleted by
:meth:`BenchLab.destroy` (idempotent), which the orchestrator calls from a
``finally``. Nothing here touches the root namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "src"))

from ipshift.lab import Lab, LabError  # noqa: E402

PEER_NS_SUFFIX = "g2"
PEER_MAC = "02:1b:00:00:02:00"
PEER_PORT = "pg2"
PEER_PORT_INDEX = 300
PEER_NIC_INDEX = 30
# Set on the gateway on top of lab.py's arp_ignore=1 / arp_announce=2: without it the connected route of
# the failed NIC (its base address stays) keeps winning for replies to the client after the move.
# The same for IPv6 (scenario (g)), where the failed NIC keeps its base address 2001:db8::10/64.
GW_EXTRA_SYSCTLS = {f"net.{fam}.conf.{c}.ignore_routes_with_linkdown": "1"
                    for fam in ("ipv4", "ipv6") for c in ("all", "eth0", "eth1")}
# Scenario (h): an extra veth, on no bridge and carrying no address, whose carrier the switch agent
# flips to make the kernel's linkwatch run (its ifindex equals its peer's: not urgent, like eth0).
LW_NIC, LW_PEER, LW_INDEX = "lw0", "lwp", 250
SWITCH_SYSCTLS = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}


@dataclass
class LabSpec:
    """What a contender needs from the lab."""

    gw_addrs: dict[str, list[str]]
    routes: list[str] = field(default_factory=list)  # "DEST via GW dev NIC" lines for `ip route add`
    peer_gateway_addrs: list[str] | None = None  # None: no second gateway
    client_addrs: list[str] = field(default_factory=lambda: ["192.0.2.100/24"])
    nics: int = 2  # gateway NICs eth0 .. eth{nics-1}; (a'') has 4
    urgent_carrier: bool = True  # False: carrier changes wait for linkwatch's batching, as on a physical NIC
    linkwatch_veth: bool = False  # (h): the unused veth LW_NIC in the gateway, its peer LW_PEER on the switch


def end_process(proc: subprocess.Popen[Any], *, group: bool = False, timeout: float = 3.0) -> None:
    """End a process this bench started, by its PID (or its own process group, whose id is that PID)."""
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)
    if group:  # children left in the group after the leader exited
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(pred: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


class LineProc:
    """A child speaking one JSON line per command."""

    def __init__(self, proc: subprocess.Popen[str], what: str) -> None:
        self.proc = proc
        self.what = what

    def ask(self, line: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise LabError(f"{self.what} exited (exit {self.proc.poll()})") from None
        return self.read(timeout)

    def read(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise LabError(f"{self.what}: no answer within {timeout} s")
        text = self.proc.stdout.readline()
        if not text:
            raise LabError(f"{self.what} exited (exit {self.proc.poll()})")
        result: dict[str, Any] = json.loads(text)
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        end_process(self.proc)


class Agent(LineProc):
    """The switch agent (swagent.py) in the switch namespace."""

    def arm(self) -> float:
        return float(self.ask("arm")["t"])

    def down(self, port: str) -> float:
        r = self.ask(f"down {port}")
        return float(r["t0"])

    def up(self, port: str) -> float:
        r = self.ask(f"up {port}")
        return float(r["t0"])

    def down_after_linkwatch(self, port: str, delay: float) -> dict[str, Any]:
        """(h): flip ``lwp`` (the gateway's ``lw0`` loses or regains its carrier), wait until the
        kernel's linkwatch has delivered that to the gateway (``lw0``'s IFF_RUNNING follows), then
        ``delay`` s later set ``port`` down. Returns t_pre, t_lw, t0, t1 (monotonic) and lw_ok."""
        return self.ask(f"lwdown {LW_PEER} {LW_NIC} {delay} {port}", timeout=10)

    def first(self, ip: str, mac: str | None = None) -> float | None:
        r = self.ask(f"first {ip} {mac or ''}".strip())
        return None if r["t"] is None else float(r["t"])

    def count(self, mac: str | None = None) -> int:
        return int(self.ask(f"count {mac or ''}".strip())["n"])

    def garps(self, mac: str | None = None) -> dict[str, float]:
        r = self.ask(f"garps {mac or ''}".strip(), timeout=60)
        return {ip: float(v[0]) for ip, v in r["garps"].items()}


class Prober(LineProc):
    """ipshift.prober in the client namespace, with --control and --raw."""

    def status(self) -> dict[str, Any]:
        return self.ask("status")

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        result = self.read(timeout)
        self.proc.wait(timeout=5)
        return result


class BenchLab:
    """A :class:`Lab` with the bench's additions; use as a context manager."""

    def __init__(self, prefix: str, spec: LabSpec, *, workdir: Path) -> None:
        self.spec = spec
        self.lab = Lab(prefix, nics=spec.nics, gw_addrs=spec.gw_addrs, client_addrs=spec.client_addrs,
                       gw_sysctls=GW_EXTRA_SYSCTLS, promote_secondaries=True, urgent_carrier=spec.urgent_carrier)
        self.peer = f"{prefix}{PEER_NS_SUFFIX}" if spec.peer_gateway_addrs is not None else None
        self.workdir = workdir
        self.agent: Agent | None = None
        self._peer_made = False
        self._children: list[LineProc] = []

    # ------------------------------------------------------------ lifecycle
    def create(self) -> BenchLab:
        try:
            self.lab.create()
            if self.peer is not None:
                self._create_peer()
            if self.spec.routes:
                self.batch(self.gateway, [f"route add {r}" for r in self.spec.routes])
            if self.spec.linkwatch_veth:
                self._create_linkwatch_veth()
            self.agent = self._start_agent()
        except BaseException:
            self.destroy()
            raise
        return self

    def _create_peer(self) -> None:
        assert self.peer is not None
        r = subprocess.run(["ip", "netns", "add", self.peer], capture_output=True, text=True)
        if r.returncode != 0:
            raise LabError(f"ip netns add {self.peer}: {r.stderr.strip()}")
        self._peer_made = True
        sw = self.lab.switch
        lines = [
            "link set lo up",
            f"link add name eth0 index {PEER_NIC_INDEX} address {PEER_MAC} type veth "
            f"peer name {PEER_PORT} index {PEER_PORT_INDEX} netns {sw}",
            *(f"addr add {a} dev eth0" for a in self.spec.peer_gateway_addrs or []),
            "link set eth0 up",
        ]
        self.batch(self.peer, lines)
        self.batch(sw, [f"link set {PEER_PORT} master {self.lab.bridge}", f"link set {PEER_PORT} up"])
        sysctls = [f"net.ipv4.conf.{c}.{k}={v}" for c in ("all", "eth0") for k, v in (("arp_ignore", 1), ("arp_announce", 2))]
        sysctls += [f"{k}={v}" for k, v in GW_EXTRA_SYSCTLS.items() if ".eth1." not in k]
        self.run(self.peer, "sysctl", "-q", "-w", *sysctls)
        ok = wait_until(lambda: "LOWER_UP" in self.run(self.peer or "", "ip", "-o", "link", "show", "eth0").stdout, 3.0)
        if not ok:
            raise LabError("peer gateway eth0 did not come up")

    def _create_linkwatch_veth(self) -> None:
        """(h): ``lw0`` in the gateway, its peer ``lwp`` in the switch namespace (no bridge), same ifindex."""
        self.batch(self.gateway, [f"link add name {LW_NIC} index {LW_INDEX} type veth peer name {LW_PEER} "
                                  f"index {LW_INDEX} netns {self.lab.switch}", f"link set {LW_NIC} up"])
        self.batch(self.lab.switch, [f"link set {LW_PEER} up"])
        ok = wait_until(lambda: "LOWER_UP" in self.run(self.gateway, "ip", "-o", "link", "show", LW_NIC).stdout, 3.0)
        if not ok:
            raise LabError(f"{LW_NIC} did not come up")

    def _start_agent(self) -> Agent:
        gw = ["--gw-netns", self.gateway] if self.spec.linkwatch_veth else []
        proc = self.lab.popen(
            self.lab.switch, sys.executable, str(BENCH_DIR / "swagent.py"), "--ifname", self.lab.client_peer,
            "--rt", "5", *gw, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        agent = Agent(proc, "switch agent")
        self._children.append(agent)
        agent.read(timeout=10)  # {"ready": true}
        return agent

    def destroy(self) -> None:
        children, self._children = self._children, []
        for child in children:
            child.close()
        self.agent = None
        self.lab.destroy()
        if self._peer_made and self.peer is not None:
            subprocess.run(["ip", "netns", "del", self.peer], capture_output=True)
            self._peer_made = False

    def __enter__(self) -> BenchLab:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # --------------------------------------------------------------- access
    @property
    def gateway(self) -> str:
        return self.lab.gateway

    @property
    def namespaces(self) -> list[str]:
        return list(self.lab.namespaces) + ([self.peer] if self.peer else [])

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.lab.run(ns, *cmd, check=check, timeout=timeout)

    def batch(self, ns: str, lines: Iterable[str], *, check: bool = True) -> float:
        """``ip -n ns -batch -``; returns its wall time in seconds."""
        script = "".join(line + "\n" for line in lines)
        t0 = time.monotonic()
        proc = subprocess.run(["ip", "-n", ns, "-batch", "-"], input=script, capture_output=True, text=True, timeout=180)
        dt = time.monotonic() - t0
        if check and proc.returncode != 0:
            raise LabError(f"ip -n {ns} -batch failed: {proc.stderr.strip()[:500]}")
        return dt

    def addrs_on(self, ns: str, dev: str) -> set[str]:
        out = self.run(ns, "ip", "-j", "addr", "show", "dev", dev).stdout
        data = json.loads(out or "[]")
        return {f"{a['local']}/{a['prefixlen']}" for link in data for a in link.get("addr_info", [])}

    def start_prober(self, target: str, *, interval: float = 0.001, duration: float = 60.0) -> Prober:
        proc = self.lab.popen(
            self.lab.client, sys.executable, "-m", "ipshift.prober", "--target", target,
            "--interval", str(interval), "--duration", str(duration), "--control", "--raw", "--rt", "10",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        prober = Prober(proc, "prober")
        self._children.append(prober)
        return prober

    def reachable(self, target: str, timeout: float = 5.0) -> bool:
        """Does the client get replies from ``target`` (a short 10 ms probe run)?"""
        r = self.run(self.lab.client, sys.executable, "-m", "ipshift.prober", "--target", target,
                     "--interval", "0.01", "--duration", str(timeout), "--count", "20", check=False, timeout=timeout + 10)
        try:
            return int(json.loads(r.stdout)["received"]) >= 10
        except (ValueError, KeyError):
            return False


def sysctls_set(nics: Sequence[str]) -> dict[str, dict[str, str]]:
    """Every sysctl the bench's labs set, per namespace role (for the results file)."""
    gw = {f"net.ipv4.conf.{c}.{k}": v for c in ("all", *nics)
          for k, v in (("arp_ignore", "1"), ("arp_announce", "2"), ("promote_secondaries", "1"))}
    gw.update(GW_EXTRA_SYSCTLS)
    peer = {f"net.ipv4.conf.{c}.{k}": v for c in ("all", "eth0") for k, v in (("arp_ignore", "1"), ("arp_announce", "2"))}
    peer.update({k: v for k, v in GW_EXTRA_SYSCTLS.items() if ".eth1." not in k})
    return {"gateway": gw, "switch": dict(SWITCH_SYSCTLS), "peer_gateway": peer, "client": {}}
