"""A throwaway network-namespace lab: a multi-NIC gateway, a switch, a client.

Theory of operation: three network namespaces stand in for three boxes::

    {prefix}gw  (gateway)          {prefix}sw  (switch)           {prefix}cl  (client)
      eth0 ─────────── veth ─────── gw0 ┐
      eth1 ─────────── veth ─────── gw1 ├─ br0 ─ cl0 ───── veth ───── eth0
      eth2 ...                      gw2 ┘

The switch namespace holds one bridge ``br0`` with STP off and forward delay
0, so a port forwards as soon as it is up, and multicast snooping off, so it
floods multicast like a dumb switch; IPv6 is off in the switch namespace. Every gateway NIC ``ethN`` is a
veth whose peer ``gwN`` is a port of ``br0``; the client's ``eth0`` is a veth
whose peer ``cl0`` is a port too. Failures are injected on the switch side:
:meth:`Lab.fail_nic` sets the peer down (the gateway NIC loses carrier),
:meth:`Lab.detach_nic` takes the peer out of the bridge (the carrier stays up
but the path is gone, the failure that only probing detects).

The lab is tooling for the demo, the tests and the benchmark. It drives
iproute2 (``ip -n NS -batch -`` where it can: one process per namespace) and
never parses ``ip`` output to decide anything. Nothing here touches the root
namespace's interfaces, addresses or routes: links are created inside the lab
namespaces (``ip -n GW link add ... peer ... netns SW``), and the only
root-namespace action is adding and deleting the named namespaces themselves.

The constructor has no side effects; :meth:`Lab.create` builds everything and
:meth:`Lab.destroy` (idempotent, error-tolerant) removes every namespace the
lab made, also after a half-finished :meth:`Lab.create`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from ipshift.labnames import unique_prefix

__all__ = ["Lab", "LabCommandError", "LabError", "unique_prefix"]

IFNAMSIZ = 15  # longest interface name the kernel accepts
CLIENT_IFINDEX = 10
CLIENT_PEER_IFINDEX = 200
BR_STATE_FORWARDING = 3


class LabError(RuntimeError):
    """The lab could not be built (the message says which step failed)."""


class LabCommandError(subprocess.CalledProcessError):
    """A lab command failed; unlike its base class, the message includes stderr."""

    def __str__(self) -> str:
        err = self.stderr
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        detail = f": {err.strip()}" if err else ""
        return f"{super().__str__()}{detail}"


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        raise LabError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()}")


class Lab:
    """A gateway with ``nics`` NICs, a client and a switch, in three namespaces.

    Parameters:
        prefix: namespace-name prefix (use :func:`unique_prefix`).
        nics: number of gateway NICs (``eth0`` .. ``eth{nics-1}``).
        gw_addrs: addresses per gateway NIC, e.g. ``{"eth0": ["192.0.2.10/24"]}``;
            NICs missing from the mapping get none. Default: ``ethN`` gets
            ``192.0.2.{10+N}/24`` (plus ``2001:db8::{10+N}/64`` with ``ipv6``).
        client_addrs: the client's addresses (default ``192.0.2.100/24``, plus
            ``2001:db8::100/64`` with ``ipv6``).
        ipv6: add the default IPv6 addresses (only where the defaults apply).
            IPv6 addresses are always added with ``nodad``.
        promote_secondaries: set ``promote_secondaries=1`` on all and each NIC.
        gw_sysctls: extra sysctls for the gateway, ``{"net.ipv4.ip_forward": "1"}``.
        urgent_carrier: see below (default True).
        ready_timeout: how long :meth:`create` waits for ports to forward.

    Interface indexes are fixed: gateway ``ethN`` is ifindex ``10+N`` and its
    peer ``gwN`` is ``110+N`` in the switch namespace. That the two differ
    matters: the kernel's linkwatch treats a carrier change of a device whose
    ifindex differs from its ``iflink`` (a veth's peer index) as urgent and
    applies it (operstate, RTM_NEWLINK, route ``linkdown``) at once; otherwise
    it batches it with the other changes, at most once a second, as it does
    for a physical NIC. With ``urgent_carrier=False`` the peer gets the same
    index ``10+N`` and the gateway NICs show that physical-NIC delay (up to
    1 s between carrier loss and its netlink notification). The client's
    ``eth0`` is ifindex 10, its peer ``cl0`` 200. MACs are fixed too
    (:meth:`mac_of`, :attr:`client_mac`).
    """

    def __init__(
        self,
        prefix: str,
        nics: int = 2,
        *,
        gw_addrs: Mapping[str, Sequence[str]] | None = None,
        client_addrs: Sequence[str] | None = None,
        ipv6: bool = False,
        promote_secondaries: bool = False,
        gw_sysctls: Mapping[str, str] | None = None,
        urgent_carrier: bool = True,
        ready_timeout: float = 3.0,
    ) -> None:
        if not 1 <= nics <= 80:
            raise ValueError(f"nics must be between 1 and 80, not {nics}")
        if not prefix or "/" in prefix:
            raise ValueError(f"bad namespace prefix {prefix!r}")
        self.prefix = prefix
        self.nics: tuple[str, ...] = tuple(f"eth{i}" for i in range(nics))
        self.switch = f"{prefix}sw"
        self.gateway = f"{prefix}gw"
        self.client = f"{prefix}cl"
        self.bridge = "br0"
        self.client_nic = "eth0"
        self.client_peer = "cl0"
        if gw_addrs is None:
            gw_addrs = {
                nic: [f"192.0.2.{10 + i}/24"] + ([f"2001:db8::{10 + i}/64"] if ipv6 else [])
                for i, nic in enumerate(self.nics)
            }
        unknown = set(gw_addrs) - set(self.nics)
        if unknown:
            raise ValueError(f"gw_addrs names NICs the lab does not have: {sorted(unknown)}")
        self.gw_addrs: dict[str, list[str]] = {nic: list(gw_addrs.get(nic, ())) for nic in self.nics}
        if client_addrs is None:
            client_addrs = ["192.0.2.100/24"] + (["2001:db8::100/64"] if ipv6 else [])
        self.client_addrs: list[str] = list(client_addrs)
        self.promote_secondaries = promote_secondaries
        self.gw_sysctls: dict[str, str] = dict(gw_sysctls or {})
        self.urgent_carrier = urgent_carrier
        self.ready_timeout = ready_timeout
        self._made: list[str] = []  # namespaces this lab created, in order
        self._procs: list[subprocess.Popen[Any]] = []

    # ----------------------------------------------------------------- naming

    @property
    def namespaces(self) -> tuple[str, str, str]:
        """The three namespace names (switch, gateway, client)."""
        return (self.switch, self.gateway, self.client)

    def peer_of(self, nic: str) -> str:
        """The switch-side peer (bridge port) of gateway NIC ``nic``: eth1 -> gw1."""
        if nic not in self.nics:
            raise ValueError(f"the lab gateway has no NIC {nic!r} (it has {', '.join(self.nics)})")
        return "gw" + nic.removeprefix("eth")

    def mac_of(self, nic: str) -> str:
        """The fixed MAC of gateway NIC ``nic`` (locally administered): eth1 -> 02:1b:00:00:00:11."""
        self.peer_of(nic)  # validates the name
        return f"02:1b:00:00:00:{0x10 + self.nics.index(nic):02x}"

    def ifindex_of(self, nic: str) -> int:
        """The fixed ifindex of gateway NIC ``nic`` in the gateway namespace: eth1 -> 11."""
        self.peer_of(nic)
        return 10 + self.nics.index(nic)

    def peer_ifindex_of(self, nic: str) -> int:
        """The fixed ifindex of the peer of ``nic`` in the switch namespace."""
        return self.ifindex_of(nic) + (100 if self.urgent_carrier else 0)

    @property
    def client_mac(self) -> str:
        return "02:1b:00:00:01:00"

    # -------------------------------------------------------------- lifecycle

    def create(self) -> Lab:
        """Build the three namespaces and everything in them; returns ``self``.

        On failure the namespaces made so far are deleted and :class:`LabError`
        is raised.
        """
        if self._made:
            raise LabError(f"lab {self.prefix} is already created")
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise
        return self

    def _create(self) -> None:
        for ns in self.namespaces:
            proc = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
            _check(proc, f"ip netns add {ns}")
            self._made.append(ns)

        # The switch is a plain L2 device: no IPv6 stack on its ports or bridge
        # (no router solicitations, MLD reports or DAD of its own on the wire).
        # Set before the ports exist, through "default".
        self._sysctl(self.switch, {f"net.ipv6.conf.{c}.disable_ipv6": "1" for c in ("all", "default")})

        gw = ["link set lo up"]
        for nic in self.nics:
            gw.append(
                f"link add name {nic} index {self.ifindex_of(nic)} address {self.mac_of(nic)} type veth "
                f"peer name {self.peer_of(nic)} index {self.peer_ifindex_of(nic)} netns {self.switch}"
            )
        for nic in self.nics:
            gw.extend(_addr_lines(nic, self.gw_addrs[nic]))
            gw.append(f"link set {nic} up")
        self._batch(self.gateway, gw)

        cl = [
            "link set lo up",
            f"link add name {self.client_nic} index {CLIENT_IFINDEX} address {self.client_mac} type veth "
            f"peer name {self.client_peer} index {CLIENT_PEER_IFINDEX} netns {self.switch}",
            *_addr_lines(self.client_nic, self.client_addrs),
            f"link set {self.client_nic} up",
        ]
        self._batch(self.client, cl)

        sw = [
            "link set lo up",
            f"link add name {self.bridge} type bridge forward_delay 0 stp_state 0 mcast_snooping 0",
            f"link set {self.bridge} up",
        ]
        for port in [self.peer_of(nic) for nic in self.nics] + [self.client_peer]:
            sw.append(f"link set {port} master {self.bridge}")
            sw.append(f"link set {port} up")
        self._batch(self.switch, sw)

        sysctls: dict[str, str] = {}
        for conf in ("all", *self.nics):
            sysctls[f"net.ipv4.conf.{conf}.arp_ignore"] = "1"
            sysctls[f"net.ipv4.conf.{conf}.arp_announce"] = "2"
            if self.promote_secondaries:
                sysctls[f"net.ipv4.conf.{conf}.promote_secondaries"] = "1"
        sysctls.update(self.gw_sysctls)
        self._sysctl(self.gateway, sysctls)
        self.wait_ready(self.ready_timeout)

    def _sysctl(self, ns: str, values: Mapping[str, str]) -> None:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())],
            capture_output=True,
            text=True,
        )
        _check(proc, f"sysctl in {ns}")

    def wait_ready(self, timeout: float = 3.0) -> None:
        """Wait until every switch port forwards and every gateway NIC is operationally up.

        Reads the state over netlink (pyroute2), polling every 20 ms; raises
        :class:`LabError` after ``timeout`` seconds. :meth:`create` calls it,
        so that the first packet a test sends is not lost to a port still
        coming up.
        """
        from pyroute2.iproute.linux import IPRoute  # local: importing the lab stays cheap

        ports = {self.peer_of(nic) for nic in self.nics} | {self.client_peer}
        deadline = time.monotonic() + timeout
        with IPRoute(netns=self.switch, flags=0) as sw, IPRoute(netns=self.gateway, flags=0) as gw:
            while True:
                pending = set(ports)
                for msg in sw.get_links():
                    name = msg.get("ifname")
                    info = msg.get("linkinfo")
                    slave = info.get("slave_data") if info is not None else None
                    state = slave.get("state") if slave is not None else None
                    if msg.get("operstate") == "UP" and state == BR_STATE_FORWARDING:
                        pending.discard(name)
                for msg in gw.get_links():
                    if msg.get("ifname") in self.nics and msg.get("operstate") != "UP":
                        pending.add(msg.get("ifname"))
                if not pending:
                    return
                if time.monotonic() > deadline:
                    raise LabError(f"lab {self.prefix} not ready after {timeout} s: {sorted(pending)} not up")
                time.sleep(0.02)

    def _batch(self, ns: str, lines: Iterable[str]) -> None:
        script = "".join(line + "\n" for line in lines)
        proc = subprocess.run(["ip", "-n", ns, "-batch", "-"], input=script, capture_output=True, text=True)
        _check(proc, f"ip -n {ns} -batch")

    def destroy(self) -> None:
        """Stop the processes :meth:`popen` started and delete the lab's namespaces.

        Idempotent; errors are ignored. Deleting a namespace destroys its veth
        ends, and with them their peers in the other namespaces.
        """
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
        made, self._made = self._made, []
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    @property
    def created(self) -> bool:
        return bool(self._made)

    def __enter__(self) -> Lab:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    # ------------------------------------------------------- fault injection

    def fail_nic(self, nic: str) -> None:
        """Carrier loss on gateway NIC ``nic``: its switch-side peer goes down."""
        self._ip(self.switch, "link", "set", self.peer_of(nic), "down")

    def restore_nic(self, nic: str) -> None:
        """Undo :meth:`fail_nic`."""
        self._ip(self.switch, "link", "set", self.peer_of(nic), "up")

    def detach_nic(self, nic: str) -> None:
        """Cut gateway NIC ``nic`` off the switch; its carrier stays up."""
        self._ip(self.switch, "link", "set", self.peer_of(nic), "nomaster")

    def attach_nic(self, nic: str) -> None:
        """Undo :meth:`detach_nic`."""
        self._ip(self.switch, "link", "set", self.peer_of(nic), "master", self.bridge)

    def recreate_nic(self, nic: str) -> None:
        """Delete gateway NIC ``nic`` and make it again (same name, MAC and addresses; the kernel picks
        a new ifindex), as a driver reload or a re-plugged USB NIC does."""
        self._ip(self.gateway, "link", "del", nic)  # its peer on the switch goes with it
        self._batch(self.gateway, [f"link add name {nic} address {self.mac_of(nic)} type veth "
                                   f"peer name {self.peer_of(nic)} netns {self.switch}",
                                   *_addr_lines(nic, self.gw_addrs[nic]), f"link set {nic} up"])
        self._batch(self.switch, [f"link set {self.peer_of(nic)} master {self.bridge}",
                                  f"link set {self.peer_of(nic)} up"])

    def _ip(self, ns: str, *args: str) -> None:
        proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabCommandError(proc.returncode, proc.args, proc.stdout, proc.stderr)

    # -------------------------------------------------------------- commands

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float | None = 30) -> subprocess.CompletedProcess[str]:
        """``ip netns exec ns cmd...``, output captured as text.

        With ``check`` a non-zero exit raises :class:`LabCommandError`.
        """
        proc = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise LabCommandError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    def popen(self, ns: str, *cmd: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in ``ns`` (``ip netns exec`` execs it, so the pid is the command's).

        Keyword arguments go to :class:`subprocess.Popen`. Ending the process
        is the caller's job; :meth:`destroy` terminates it too if still running.
        """
        proc: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kwargs)
        self._procs.append(proc)
        return proc


def _addr_lines(nic: str, addrs: Iterable[str]) -> list[str]:
    # No validation here: a malformed address makes ``ip`` fail, and create()
    # reports it as a LabError after cleaning up.
    lines = []
    for addr in addrs:
        nodad = " nodad" if ":" in addr else ""
        lines.append(f"addr add {addr} dev {nic}{nodad}")
    return lines
