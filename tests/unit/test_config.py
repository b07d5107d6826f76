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


@pytest.mark.parametrize("text", ["100ms", "2s", "1.5s", " 10 ms ", "86400s", "86400000ms"])
def test_durations(text: str) -> None:
    assert parse_duration(text) > 0


@pytest.mark.parametrize(("text", "why"), [("86401s", r"'86401s' is too long: at most 1 day \(86400s\)"),
                                           ("86400001ms", "is too long"), ("1" * 400 + "s", "is too long"),
                                           ("-1s", "is not a duration"), ("1d", "is not a duration")])
def test_durations_out_of_bounds(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_duration(text)


def test_zero_where_zero_makes_sense() -> None:
    c = parse_config(GOOD.replace("delay: 2s", "delay: 0s, flap_window: 0s").replace("count: 3,", "count: 3, refresh: 1s,"))
    assert c.failback.delay == 0.0 and c.failback.flap_window == 0.0 and c.announce.refresh == 1.0
    c = parse_config(GOOD.replace("interval: 100ms", "interval: 1ms").replace("timeout: 200ms", "timeout: 1ms"))
    assert c.detect.probe is not None and c.detect.probe.interval == 0.001 and c.conflict_check.timeout == 0.001
    targets = ", ".join(f"192.0.2.{i}" for i in range(1, 17))
    c = parse_config(GOOD.replace("targets: [192.0.2.1]", f"targets: [{targets}]").replace("misses: 3", "misses: 100"))
    assert c.detect.probe is not None and len(c.detect.probe.targets) == 16 and c.detect.probe.misses == 100


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
    # bounds (issue 10, item 8): no loop faster than 1 ms, no timer longer than a day, capped counts
    ("interval: 100ms", "interval: 0ms", "ipshift.yaml:18: detect.probe.interval: 0 ms is too short: at least 1 ms"),
    ("interval: 100ms", "interval: 0.5ms", "ipshift.yaml:18: detect.probe.interval: 0.5 ms is too short: at least 1 ms"),
    ("misses: 3", "misses: 3, timeout: 0ms", "ipshift.yaml:18: detect.probe.timeout: 0 ms is too short: at least 1 ms"),
    ("interval: 200ms", "interval: 0ms", "ipshift.yaml:19: announce.interval: 0 ms is too short: at least 1 ms"),
    ("count: 3,", "count: 3, refresh: 500ms,", "ipshift.yaml:19: announce.refresh: 500 ms is too short: at least 1 s"),
    ("count: 3,", "count: 3, refresh: 0s,", "ipshift.yaml:19: announce.refresh: 0 ms is too short: at least 1 s"),
    ("timeout: 200ms", "timeout: 0ms", "ipshift.yaml:21: conflict_check.timeout: 0 ms is too short: at least 1 ms"),
    ("delay: 2s", "delay: -1s", "ipshift.yaml:20: failback.delay: '-1s' is not a duration"),
    ("delay: 2s", "delay: 86401s", "ipshift.yaml:20: failback.delay: '86401s' is too long: at most 1 day (86400s)"),
    ("delay: 2s", "delay: 2s, flap_window: 100000000ms", "ipshift.yaml:20: failback.flap_window: '100000000ms' is too long"),
    ("interval: 100ms", "interval: 99999999999999999999999s", "ipshift.yaml:18: detect.probe.interval: '9999"),
    ("interval: 200ms", "interval: 2000000s", "ipshift.yaml:19: announce.interval: '2000000s' is too long"),
    ("targets: [192.0.2.1]", "targets: [" + ", ".join(f"192.0.2.{i}" for i in range(1, 18)) + "]",
     "ipshift.yaml:18: detect.probe.targets: 17 items: at most 16 are allowed"),
    ("misses: 3", "misses: 101", "ipshift.yaml:18: detect.probe.misses: 101: input should be less than or equal to 100"),
    ("misses: 3", "misses: 3, rises: 101", "ipshift.yaml:18: detect.probe.rises: 101: input should be less than or equal to 100"),
    ("delay: 2s", "delay: 2s, flap_count: 1000000",
     "ipshift.yaml:20: failback.flap_count: 1000000: input should be less than or equal to 1000"),
    ("count: 3,", "count: 101,", "ipshift.yaml:19: announce.count: 101: input should be less than or equal to 100"),
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


# --------------------------------------------------------------------------- huge or broken input: one short line

BIG = "1" * 5_000_000
HUGE = [
    ("- address: 192.0.2.100/24", f"- address: 192.0.2.100/{BIG}",
     "ipshift.yaml:5: interfaces.eth0.addresses[1].address: '192.0.2.100/111", "(5000012 characters) is not an IP"),
    ("- 192.0.2.10/24  ", f"- {BIG}/24", "ipshift.yaml:4: interfaces.eth0.addresses[0]: '1111", "(5000003 characters)"),
    ('"2001:db8::11/64"', f'"2001:db8::{BIG}"', "ipshift.yaml:15: interfaces.eth1.addresses[1]: '2001:db8::111",
     "(5000010 characters)"),
    ("via: 192.0.2.1", f"via: 192.0.2.{BIG}", "ipshift.yaml:11: interfaces.eth0.routes[0].via: '192.0.2.111",
     "is not an IP address"),
    ("to: 198.51.100.0/24", f"to: {BIG}.0/24", "ipshift.yaml:10: interfaces.eth0.routes[0].to: '1111",
     "is not an IP network"),
    ("mac: move", f"mac: m{BIG}", "ipshift.yaml:6: interfaces.eth0.addresses[1].mac: 'm111", "(5000001 characters)"),
    ("delay: 2s", f"delay: {BIG}s", "ipshift.yaml:20: failback.delay: '1111", "is too long: at most 1 day"),
    ("delay: 2s", f"delay: x{BIG}", "ipshift.yaml:20: failback.delay: 'x111", "is not a duration"),
    ("backups: [eth1]", f"backups: [e{BIG}]", "ipshift.yaml:12: interfaces.eth0.backups[0]: 'e111",
     "is not a configured interface"),
    # YAML keys are at most 1024 characters: long ones, then (the key path is cut, the echo abbreviated)
    ("  eth1:\n", f"  e{BIG[:1000]}:\n", "ipshift.yaml:14: interfaces.e111", "is not a valid interface name"),
    ("state_dir", f"s{BIG[:1000]}", "ipshift.yaml:22: s111", "unknown key"),
    ("max_addresses: 64", f"max_addresses: {BIG}", "ipshift.yaml:13: interfaces.eth0.max_addresses: '1111",
     "a number of more than 4300 digits"),
    ("max_addresses: 64", f"max_addresses: [{', '.join(['1'] * 100_000)}]",
     "ipshift.yaml:13: interfaces.eth0.max_addresses: [1, 1", "(a list of 100000 items): input should be"),
    ("vlan: 100", f"vlan: {{{', '.join(f'k{i}: 1' for i in range(50_000))}}}",
     "ipshift.yaml:8: interfaces.eth0.addresses[2].vlan: {'k0': 1", "(a dict of 50000 items)"),
]


@pytest.mark.parametrize(("old", "new", "start", "detail"), HUGE, ids=[h[2].split(": ")[1][:40] for h in HUGE])
def test_huge_input_is_abbreviated_not_echoed(old: str, new: str, start: str, detail: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace(old, new, 1), "ipshift.yaml")
    text = str(info.value)
    assert "\n" not in text and len(text) <= 300, (len(text), text[:400])
    assert text.startswith(start) and detail in text, text


def test_characters_yaml_refuses_name_their_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace("state_dir: /var/lib/ipshift", "state_dir: /var/\x07lib"), "f.yaml")
    assert str(info.value).startswith("f.yaml:22: YAML error: control characters are not allowed"), str(info.value)


def test_non_utf8_file_names_the_line_and_byte(tmp_path: Path) -> None:
    f = tmp_path / "ipshift.yaml"
    f.write_bytes(GOOD.replace("/var/lib/ipshift", "/var/lib/ips\xe9ift").encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(f)
    offset = GOOD.index("ips") + 3
    assert str(info.value) == (f"{f}:22: not UTF-8 text: byte 24 of the line (offset {offset} in the file), 0xe9, "
                               "is not valid UTF-8")


def _check(f: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipshift.cli", "check", "-c", str(f)], capture_output=True, text=True,
                          timeout=120)


def test_cli_huge_value_exits_2_with_one_short_line(tmp_path: Path) -> None:
    f = tmp_path / "ipshift.yaml"
    f.write_text(GOOD.replace("192.0.2.100/24", f"192.0.2.{BIG}/24"))
    r = _check(f)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"{f}:5: interfaces.eth0.addresses[1].address: '192.0.2.1111")
    assert "(5000011 characters) is not an IP interface address" in line and len(line) - len(str(f)) <= 300, line


def test_cli_non_utf8_file_exits_2_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "ipshift.yaml"
    f.write_bytes(GOOD.encode() + b"# caf\xc3\n")  # a truncated UTF-8 sequence on line 23
    r = _check(f)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"{f}:23: not UTF-8 text: byte 6 of the line (offset {len(GOOD) + 5} in the file), "
                                "0xc3, is not valid UTF-8")


def test_cli_number_too_long_to_convert_exits_2_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "ipshift.yaml"
    f.write_text(GOOD.replace("max_addresses: 64", "max_addresses: " + "9" * 10_000))
    r = _check(f)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr[-2000:]
    assert r.stderr.startswith(f"{f}:13: interfaces.eth0.max_addresses: '9999")
