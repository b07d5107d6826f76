"""Configuration: YAML in, a validated frozen :class:`Config` out.

Theory of operation: the YAML text becomes plain data with a line number per
key path (:mod:`ipshift.configsrc`, which also catches keys given twice). The
data is then validated by pydantic v2 models with ``extra="forbid"``; finally
the checks that span several keys (an address listed twice, a backup that is
not a configured NIC, a route gateway no NIC can reach) run over the model.
Every failure becomes one :class:`ConfigError` whose text is
``file:line: key.path: message`` -- never a traceback, and one short line:
echoed input is abbreviated; a file that is not UTF-8 is named with the line
and byte offset of its first invalid byte.

Values are bounded where careless input would hurt: a duration is at most a
day (:data:`MAX_DURATION`), one that drives a loop (probe interval and
timeout, announcement interval, conflict-check timeout) at least 1 ms, the
announcement refresh at least 1 s; the failback delay may be 0. Counts that
set work per round are capped (probe targets, misses, rises, announcements,
verify rounds, flap count); the number of NICs, addresses and peers is not
(10,000 addresses is a supported scale).

This module reads the file it is given and nothing else.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator)

from ipshift.configsrc import ConfigError as ConfigError
from ipshift.configsrc import _from_validation_error, _join, _load_yaml, abbreviate
from ipshift.model import IPAddress, IPInterface, IPNetwork

DEFAULT_CONFIG_PATH = "/etc/ipshift/ipshift.yaml"
DEFAULT_SOCKET_PATH = "/run/ipshift/ipshift.sock"

_IFNAME = re.compile(r"^[^\s/:]{1,15}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")
MAX_DURATION = 86400.0  # seconds: no timer of ipshift needs more than a day
MAX_PROBE_TARGETS = 16
MAX_RUN = 100  # probe misses / rises in a row
MAX_FLAPS = 1000  # flap_count: state changes within flap_window that hold a NIC


# --------------------------------------------------------------------------- value parsers


def _parse_interface(value: Any) -> IPInterface:
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{abbreviate(value)} is not an IP interface address (write it as ADDRESS/PREFIX)")
    try:
        iface = ipaddress.ip_interface(value.strip())
    except ValueError:
        raise ValueError(f"{abbreviate(value)} is not an IP interface address") from None
    net = iface.network
    if isinstance(iface, ipaddress.IPv4Interface):
        if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
            which = "network" if iface.ip == net.network_address else "broadcast"
            raise ValueError(f"{abbreviate(value)} is the {which} address of its prefix, not a host address")
    elif net.prefixlen < 127 and iface.ip == net.network_address:
        raise ValueError(f"{abbreviate(value)} is the subnet-router anycast address of its prefix, not a host address")
    if iface.ip.is_loopback or iface.ip.is_multicast or iface.ip.is_unspecified:
        raise ValueError(f"{abbreviate(value)} is not a unicast host address")
    return iface


def _parse_ip(value: Any) -> IPAddress:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ValueError(f"{abbreviate(value)} is not an IP address") from None


def _parse_network(value: Any) -> IPNetwork:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    text = str(value).strip()
    if text == "default":
        return ipaddress.IPv4Network("0.0.0.0/0")
    if text in ("default6", "::/0"):
        return ipaddress.IPv6Network("::/0")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise ValueError(f"{abbreviate(value)} has host bits set; a route destination is a network") from None
        raise ValueError(f"{abbreviate(value)} is not an IP network") from None


def parse_duration(value: Any) -> float:
    """'100ms' -> 0.1, '2s' -> 2.0. Bare numbers are refused: the unit is required."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"{abbreviate(value)} needs a unit: write e.g. '100ms' or '2s'")
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{abbreviate(value)} is not a duration: write e.g. '100ms' or '2s'")
    number = float(match.group(1))
    seconds = number / 1000.0 if match.group(2) == "ms" else number
    if seconds > MAX_DURATION:
        raise ValueError(f"{abbreviate(value)} is too long: at most 1 day ({MAX_DURATION:g}s)")
    return seconds


def _at_least(minimum: float) -> AfterValidator:
    shown = f"{minimum:g} s" if minimum >= 1 else f"{minimum * 1000:g} ms"

    def check(seconds: float) -> float:
        if seconds < minimum:
            value = f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1000:g} ms"
            raise ValueError(f"{value} is too short: at least {shown}")
        return seconds

    return AfterValidator(check)


def _address_long_form(value: Any) -> Any:
    return {"address": value} if isinstance(value, str) else value


IfaceAddr = Annotated[IPInterface, BeforeValidator(_parse_interface)]
IPAddr = Annotated[IPAddress, BeforeValidator(_parse_ip)]
Net = Annotated[IPNetwork, BeforeValidator(_parse_network)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
LoopDuration = Annotated[float, BeforeValidator(parse_duration), _at_least(0.001)]  # drives a loop


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddressConfig(_Strict):
    address: IfaceAddr
    mac: Literal["move", "stay"] = "stay"
    vlan: int | None = Field(default=None, ge=1, le=4094)


class RouteConfig(_Strict):
    to: Net
    via: IPAddr | None = None
    metric: int | None = Field(default=None, ge=0)


class InterfaceConfig(_Strict):
    addresses: list[Annotated[AddressConfig, BeforeValidator(_address_long_form)]] = []
    routes: list[RouteConfig] = []
    backups: list[str] | None = None
    max_addresses: int | None = Field(default=None, ge=1)
    max_extra_macs: int | None = Field(default=None, ge=0)
    vlans: list[Annotated[int, Field(ge=1, le=4094)]] | None = None


class ProbeConfig(_Strict):
    targets: list[IPAddr] = Field(min_length=1, max_length=MAX_PROBE_TARGETS)
    interval: LoopDuration = 0.1
    misses: int = Field(default=3, ge=1, le=MAX_RUN)
    rises: int = Field(default=2, ge=1, le=MAX_RUN)
    mode: Literal["any", "all"] = "any"
    # how long a round waits for its replies; default half the interval, so that on average a dead
    # path is declared failed misses x interval after it died
    timeout: LoopDuration | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout_within_interval(cls, v: float | None, info: ValidationInfo) -> float | None:
        interval = info.data.get("interval")
        if v is not None and interval is not None and v > interval:
            raise ValueError(f"must not be longer than the interval ({interval * 1000:g} ms): "
                             "a round ends when the next one starts")
        return v

    @property
    def reply_timeout(self) -> float:
        return self.timeout if self.timeout is not None else self.interval / 2


class DetectConfig(_Strict):
    # false: carrier and admin state do not fail a NIC (NICs whose carrier says nothing useful, e.g.
    # some virtual ones); only the path probes do, so detect.probe is required
    link: bool = True
    probe: ProbeConfig | None = None
    # read each NIC's carrier bit through netlink this often (None: off); a physical NIC's link event
    # can wait up to 1 s for the kernel's linkwatch, the carrier bit itself does not (ipshift.carrier)
    carrier_poll: LoopDuration | None = None

    @field_validator("carrier_poll")
    @classmethod
    def _carrier_needs_link(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and info.data.get("link") is False:
            raise ValueError("needs detect.link: true (with link false, carrier fails no NIC)")
        return v


class AnnounceConfig(_Strict):
    count: int = Field(default=3, ge=1, le=100)
    interval: LoopDuration = 0.2
    # re-announce every address this often (long ARP timeouts upstream)
    refresh: Annotated[float, BeforeValidator(parse_duration), _at_least(1.0)] | None = None
    verify_rounds: int = Field(default=10, ge=1, le=1000)  # re-announce at most this often until confirmed


class FailbackConfig(_Strict):
    mode: Literal["auto", "manual"] = "auto"
    delay: Duration = 2.0
    flap_count: int = Field(default=4, ge=2, le=MAX_FLAPS)
    flap_window: Duration = 10.0


class BackgroundConflictConfig(_Strict):
    # each (address, candidate survivor) is probed once per `every`, spread evenly, at most `max_rate`
    # probes per second for the whole gateway (more pairs stretch the cycle); see ipshift.scout
    every: Annotated[float, BeforeValidator(parse_duration), _at_least(1.0)] = 60.0
    max_rate: float = Field(default=100.0, gt=0, le=10_000)


class ConflictConfig(_Strict):
    enabled: bool = True
    timeout: LoopDuration = 0.2
    # with no fresh background finding -- strict: probe, wait `timeout`, then move (RFC 5227).
    # optimistic: move and announce at once while the probe runs; an answer within `timeout` undoes
    # the move (the way IPv6 optimistic DAD works). A fresh clear finding always moves at once.
    mode: Literal["strict", "optimistic"] = "strict"
    background: BackgroundConflictConfig | None = BackgroundConflictConfig()  # null: no background probes


class PeerConfig(_Strict):
    name: str
    addresses: list[IPAddr] = []


class MetricsConfig(_Strict):
    listen: str  # "HOST:PORT", IPv6 as "[ADDR]:PORT"; the daemon serves GET /metrics there

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{abbreviate(v)} is not HOST:PORT (a port 1-65535)")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{abbreviate(host)} is not an IP address (listen on an address, not a name)") from None
        return v

    @property
    def host(self) -> str:
        host = self.listen.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") else host

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Config(_Strict):
    interfaces: dict[str, InterfaceConfig] = Field(min_length=1)
    detect: DetectConfig = DetectConfig()
    announce: AnnounceConfig = AnnounceConfig()
    failback: FailbackConfig = FailbackConfig()
    conflict_check: ConflictConfig = ConflictConfig()
    peers: list[PeerConfig] = []
    sysctl: Literal["manage", "warn"] = "warn"
    state_dir: str = "/var/lib/ipshift"
    socket: str = DEFAULT_SOCKET_PATH
    metrics: MetricsConfig | None = None

    # -- derived views used by the planner and the daemon (pure) --

    def home_of(self, ip: IPAddress) -> str | None:
        for name, iface in self.interfaces.items():
            for addr in iface.addresses:
                if addr.address.ip == ip:
                    return name
        return None

    def address_config(self, ip: IPAddress) -> AddressConfig | None:
        for iface in self.interfaces.values():
            for addr in iface.addresses:
                if addr.address.ip == ip:
                    return addr
        return None

    def all_addresses(self) -> list[tuple[str, AddressConfig]]:
        return [(name, a) for name, iface in self.interfaces.items() for a in iface.addresses]


# --------------------------------------------------------------------------- cross-key checks


def _cross_checks(cfg: Config, lines: Mapping[str, int], file: str) -> None:
    def fail(path: str, message: str) -> ConfigError:
        return ConfigError(file, lines.get(path), path, message)

    if not cfg.detect.link and cfg.detect.probe is None:
        raise fail("detect.link", "false needs detect.probe: with neither, nothing would detect a failure")
    seen: dict[IPAddress, str] = {}
    for name, iface in cfg.interfaces.items():
        if not _IFNAME.match(name):
            raise fail(_join("interfaces", name), f"{abbreviate(name)} is not a valid interface name")
        for i, addr in enumerate(iface.addresses):
            path = f"interfaces.{name}.addresses[{i}]"
            ip = addr.address.ip
            if ip in seen:
                raise fail(path, f"{addr.address} is listed twice (also at {seen[ip]})")
            seen[ip] = path
            if addr.address.ip.version == 6 and addr.address.ip.is_link_local:
                raise fail(path, f"{addr.address} is link-local: link-local addresses never move")

    # the distinct subnets of each NIC: thousands of addresses usually share a few
    subnets = {n: {a.address.network for a in other.addresses} for n, other in cfg.interfaces.items()}
    for name, iface in cfg.interfaces.items():
        if iface.backups is not None:
            for i, backup in enumerate(iface.backups):
                path = f"interfaces.{name}.backups[{i}]"
                if backup == name:
                    raise fail(path, f"{abbreviate(backup)} cannot back itself up")
                if backup not in cfg.interfaces:
                    raise fail(path, f"{abbreviate(backup)} is not a configured interface")
                if iface.backups.index(backup) != i:
                    raise fail(path, f"{abbreviate(backup)} is listed twice")
        for i, route in enumerate(iface.routes):
            path = f"interfaces.{name}.routes[{i}]"
            if route.via is None:
                continue
            if route.via.version != route.to.version:
                raise fail(f"{path}.via", f"{route.via} is not of the same IP version as {route.to}")
            reachable = [n for n, nets in subnets.items() if any(route.via in net for net in nets)]
            if not reachable:
                raise fail(f"{path}.via",
                           f"gateway {route.via} is on no configured NIC's subnet: no NIC can reach it")
            if name not in reachable:
                raise fail(f"{path}.via", f"gateway {route.via} is not on a subnet of {name}")


# --------------------------------------------------------------------------- entry points


def parse_config(text: str, file: str = "<config>") -> Config:
    located = _load_yaml(text, file)
    try:
        cfg = Config.model_validate(located.data)
    except ValidationError as exc:
        raise _from_validation_error(exc, located, file) from None
    _cross_checks(cfg, located.lines, file)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate ``path``; every problem is a one-line :class:`ConfigError`."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(name, None, "", "no such file") from None
    except IsADirectoryError:
        raise ConfigError(name, None, "", "is a directory, not a configuration file") from None
    except PermissionError:
        raise ConfigError(name, None, "", "permission denied") from None
    except OSError as exc:
        raise ConfigError(name, None, "", f"cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(name, line, "", f"not UTF-8 text: byte {column} of the line (offset {exc.start} in the "
                                          f"file), 0x{raw[exc.start]:02x}, is not valid UTF-8") from None
    return parse_config(text, name)


def reload_config(path: str | Path, running: Config) -> Config | None:
    """``path`` again (a reload): the new configuration, or None -- logged -- when it is invalid and
    ``running`` stays."""
    import logging

    log = logging.getLogger("ipshift.config")
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload refused, the running configuration stays: %s", exc)
        return None
    log.info("configuration reloaded from %s (NICs added: %s; removed: %s)", path,
             ", ".join(sorted(set(new.interfaces) - set(running.interfaces))) or "none",
             ", ".join(sorted(set(running.interfaces) - set(new.interfaces))) or "none")
    return new
