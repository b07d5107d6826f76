"""Configuration: the contract's shape parses; every kind of bad input is one line with file, line, key."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from ipshift.cli import main
from ipshift.config import ConfigError, load_config, parse_config, parse_duration

GOOD = """\
interfaces:
  eth0:
    addresses:
      - 192.0.2.10/24                 # plain form
      - address: 192.0.2.100/24       # long form
        mac: move
      - address: 203.0.113.10/24
        vlan: 100
    routes:
      - to: 198.51.100.0/24
        via: 192.0.2.1
    backups: [eth1]
    max_addresses: 64
  eth1:
    addresses: [192.0.2.11/24, "2001:db8::11/64"]
detect:
  link: true
  probe: {targets: [192.0.2.1], interval: 100ms, misses: 3}
announce: {count: 3, interval: 200ms}
failback: {mode: auto, delay: 2s}
conflict_check: {enabled: true, timeout: 200ms}
state_dir: /var/lib/ipshift
"""


def test_contract_shape_parses() -> None:
    c = parse_config(GOOD, "ipshift.yaml")
    eth0 = c.interfaces["eth0"]
    assert [str(a.address) for a in eth0.addresses] == ["192.0.2.10/24", "192.0.2.100/24", "203.0.113.10/24"]
    assert [a.mac for a in eth0.addresses] == ["stay", "move", "stay"]
    assert eth0.addresses[2].vlan == 100
    assert eth0.routes[0].via == ipaddress.ip_address("192.0.2.1")
    assert eth0.backups == ["eth1"] and eth0.max_addresses == 64
    assert c.detect.probe is not None and c.detect.probe.interval == pytest.approx(0.1)
    assert c.detect.probe.timeout is None and c.detect.probe.reply_timeout == pytest.approx(0.05)
    assert c.announce.interval == pytest.approx(0.2) and c.failback.delay == 2.0
    assert c.conflict_check.timeout == pytest.approx(0.2)
    assert c.home_of(ipaddress.ip_address("2001:db8::11")) == "eth1"
    with pytest.raises(Exception):
        c.interfaces = {}  # type: ignore[misc]  # frozen


def test_minimal_config_gets_defaults() -> None:
    c = parse_config("interfaces:\n  eth0: {addresses: [192.0.2.10/24]}\n  eth1: {}\n")
    assert c.detect.link and c.detect.probe is None
    assert c.failback.mode == "auto" and c.conflict_check.enabled
    assert c.interfaces["eth1"].addresses == []


@pytest.mark.parametrize("text", ["100ms", "2s", "1.5s", " 10 ms "])
def test_durations(text: str) -> None:
    assert parse_duration(text) > 0


BAD = [
    # (replace this, with this, expected "line: path: message" fragment)
    ("- address: 192.0.2.100/24", "- address: 192.0.2.300/24",
     "ipshift.yaml:5: interfaces.eth0.addresses[1].address: '192.0.2.300/24' is not an IP interface address"),
    ("- 192.0.2.10/24  ", "- 192.0.2.300/24 ",
     "ipshift.yaml:4: interfaces.eth0.addresses[0]: '192.0.2.300/24' is not an IP interface address"),
    ("- 192.0.2.10/24  ", "- 192.0.2.10     ",
     "ipshift.yaml:4: interfaces.eth0.addresses[0]: '192.0.2.10' is not an IP interface address"),
    ("max_addresses: 64", "max_adresses: 64", "ipshift.yaml:13: interfaces.eth0.max_adresses: unknown key"),
    ("  eth1:\n", "  eth0:\n", "ipshift.yaml:14: interfaces.eth0: given twice (first on line 2)"),
    ("[192.0.2.11/24,", "[192.0.2.10/24,",
     "ipshift.yaml:15: interfaces.eth1.addresses[0]: 192.0.2.10/24 is listed twice"),
    ("backups: [eth1]", "backups: [eth7]", "ipshift.yaml:12: interfaces.eth0.backups[0]: 'eth7' is not a configured"),
    ("backups: [eth1]", "backups: [eth0]", "ipshift.yaml:12: interfaces.eth0.backups[0]: 'eth0' cannot back itself up"),
    ("via: 192.0.2.1", "via: 198.51.100.1", "ipshift.yaml:11: interfaces.eth0.routes[0].via: gateway 198.51.100.1"),
    ("via: 192.0.2.1", "via: 192.0.2.999", "ipshift.yaml:11: interfaces.eth0.routes[0].via: '192.0.2.999' is not an IP address"),
    ("to: 198.51.100.0/24", "to: 198.51.100.1/24", "ipshift.yaml:10: interfaces.eth0.routes[0].to: '198.51.100.1/24' has host bits set"),
    ("backups: [eth1]", "backups: [eth1", "ipshift.yaml:13: YAML syntax error"),
    ("delay: 2s", "delay: 2", "ipshift.yaml:20: failback.delay: 2 needs a unit"),
    ("delay: 2s", "delay: soon", "ipshift.yaml:20: failback.delay: 'soon' is not a duration"),
    ("mac: move", "mac: mvoe", "ipshift.yaml:6: interfaces.eth0.addresses[1].mac: 'mvoe'"),
    ("vlan: 100", "vlan: 5000", "ipshift.yaml:8: interfaces.eth0.addresses[2].vlan: 5000"),
    ("[192.0.2.11/24,", "[192.0.2.0/24,", "ipshift.yaml:15: interfaces.eth1.addresses[0]: '192.0.2.0/24' is the network address"),
    ("[192.0.2.11/24,", "[192.0.2.255/24,", "is the broadcast address"),
    ("misses: 3", "misses: 0", "ipshift.yaml:18: detect.probe.misses: 0"),
    ("misses: 3", "misses: 3, timeout: 200ms",
     "ipshift.yaml:18: detect.probe.timeout: must not be longer than the interval (100 ms)"),
    ("mode: auto", "mode: sometimes", "ipshift.yaml:20: failback.mode: 'sometimes'"),
    ("targets: [192.0.2.1], ", "", "ipshift.yaml:18: detect.probe.targets: required key is missing"),
    ("state_dir", "stat_dir", "ipshift.yaml:22: stat_dir: unknown key"),
    ('"2001:db8::11/64"', '"fe80::1/64"', "fe80::1/64 is link-local"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD, ids=[b[2].split(": ", 1)[-1][:40] for b in BAD])
def test_bad_input_is_one_line_with_file_line_and_key(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace(old, new, 1), "ipshift.yaml")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(expected) or expected in text, text


@pytest.mark.parametrize(("content", "expected"), [
    ("", "the file is empty"),
    ("- eth0\n", "the top level must be a mapping"),
    ("detect: {link: true}\n", "interfaces: required key is missing"),
    ("interfaces: {}\n", "interfaces: {}"),
    ("interfaces: {eth0: {}}\ndetect: {link: false}\n",
     "f.yaml:2: detect.link: false needs detect.probe: with neither, nothing would detect a failure"),
    ("interfaces:\n  'eth/0': {}\n", "'eth/0' is not a valid interface name"),
    ("\tinterfaces:\n", "YAML syntax error"),
])
def test_degenerate_files(content: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(content, "f.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("f.yaml")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "ipshift.yaml"
    f.write_text(GOOD.replace("192.0.2.100/24", "192.0.2.300/24"))
    r = subprocess.run([sys.executable, "-m", "ipshift.cli", "check", "-c", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.strip() == (f"{f}:5: interfaces.eth0.addresses[1].address: "
                                "'192.0.2.300/24' is not an IP interface address")
    assert "Traceback" not in r.stderr


def test_cli_missing_netns_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "ipshift.yaml"
    f.write_text(GOOD)
    if sys.platform != "linux":
        pytest.skip("linux only")
    rc = main(["check", "-c", str(f), "--netns", "ipshift-no-such-ns-xyz"])
    err = capsys.readouterr().err
    assert rc == 2 and "ipshift-no-such-ns-xyz" in err and len(err.strip().splitlines()) == 1
