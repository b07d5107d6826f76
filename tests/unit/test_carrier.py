"""Carrier polling's pure half: the GETLINK requests, the decoding of the answers' fixed header, the
decision against the view; and the configuration key."""

from __future__ import annotations

import socket
import struct

import pytest

from ipshift.carrier import (IFF_DORMANT, IFF_LOWER_UP, IFF_UP, IFLA_EXT_MASK, NLM_F_REQUEST, NLMSG_ERROR,
                             RTEXT_FILTER_SKIP_STATS, RTM_GETLINK, RTM_NEWLINK, build_requests, parse_flags,
                             polled_link)
from ipshift.config import ConfigError, parse_config
from ipshift.model import Link

IFF_RUNNING = 0x40
UP = IFF_UP | IFF_RUNNING | IFF_LOWER_UP


def newlink(index: int, flags: int, attrs: bytes = b"", seq: int = 0) -> bytes:
    """An RTM_NEWLINK as the kernel answers one: header, ifinfomsg, attributes (padded)."""
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, flags, 0) + attrs
    msg = struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, 0, seq, 0) + body
    return msg + b"\0" * (-len(msg) % 4)


def error(code: int) -> bytes:
    return struct.pack("=IHHIIi", 36, NLMSG_ERROR, 0, 0, 0, -code) + bytes(16)


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def test_one_getlink_per_index_without_statistics() -> None:
    data = build_requests([11, 12], 7)
    assert len(data) == 2 * 40
    for i, index in enumerate((11, 12)):
        length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data, 40 * i)
        family, _type, ifindex, _flags, _change = struct.unpack_from("=BxHiII", data, 40 * i + 16)
        alen, akind, mask = struct.unpack_from("=HHI", data, 40 * i + 32)
        assert (length, kind, flags, seq) == (40, RTM_GETLINK, NLM_F_REQUEST, 7)
        assert (family, ifindex) == (socket.AF_UNSPEC, index)
        assert (alen, akind, mask) == (8, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    assert build_requests([], 0) == b""


def test_only_the_fixed_header_of_each_answer_is_read() -> None:
    name = attr(3, b"eth0\0")  # IFLA_IFNAME: skipped over, never parsed
    data = newlink(11, UP, name) + error(19) + newlink(12, IFF_UP, name * 3)
    assert list(parse_flags(data, len(data))) == [(11, UP), (12, IFF_UP)]
    buf = bytearray(4096)  # a reused buffer: only its first `size` bytes count
    buf[:len(data)] = data
    assert list(parse_flags(buf, len(data))) == [(11, UP), (12, IFF_UP)]


@pytest.mark.parametrize("cut", [0, 10, 20, 31])
def test_truncated_answers_are_skipped_not_misread(cut: int) -> None:
    first = newlink(11, UP)
    data = first + newlink(12, UP)[:cut]
    assert list(parse_flags(data, len(data))) == [(11, UP)]


def test_a_bogus_length_ends_the_parse() -> None:
    bogus = struct.pack("=IHHII", 8, RTM_NEWLINK, 0, 0, 0) + bytes(16)
    assert list(parse_flags(bogus, len(bogus))) == []
    huge = struct.pack("=IHHII", 4000, RTM_NEWLINK, 0, 0, 0) + bytes(16)
    assert list(parse_flags(huge, len(huge))) == []


LINK = Link(name="eth0", index=11, mac="02:1b:00:00:00:10", admin_up=True, carrier=True, operstate="UP")
DOWN = Link(name="eth0", index=11, mac="02:1b:00:00:00:10", admin_up=True, carrier=False,
            operstate="LOWERLAYERDOWN")


def test_a_carrier_the_view_already_has_is_no_event() -> None:
    assert polled_link(LINK, UP) is None
    assert polled_link(DOWN, IFF_UP) is None  # the kernel's event came first: nothing to add
    assert polled_link(LINK, UP & ~IFF_RUNNING) is None  # operstate (linkwatch's) is not what is compared


def test_a_lost_carrier_is_the_views_link_without_it() -> None:
    got = polled_link(LINK, IFF_UP | IFF_RUNNING)  # IFF_RUNNING still set: linkwatch has not run yet
    assert got is not None and not got.carrier and not got.healthy and got.operstate == "DOWN"
    assert (got.name, got.index, got.mac, got.admin_up) == (LINK.name, LINK.index, LINK.mac, True)


def test_a_returned_carrier_is_up_or_dormant() -> None:
    back = polled_link(DOWN, IFF_UP | IFF_LOWER_UP)
    assert back is not None and back.carrier and back.operstate == "UP" and back.healthy
    dormant = polled_link(DOWN, IFF_UP | IFF_LOWER_UP | IFF_DORMANT)
    assert dormant is not None and dormant.operstate == "DORMANT" and not dormant.healthy


def test_admin_down_is_left_to_the_kernels_event() -> None:
    assert polled_link(LINK, 0) is None


BASE = "interfaces:\n  eth0: {addresses: [192.0.2.10/24]}\n"


def test_carrier_poll_is_off_by_default_and_a_duration() -> None:
    assert parse_config(BASE).detect.carrier_poll is None
    assert parse_config(BASE + "detect:\n  carrier_poll: 10ms\n").detect.carrier_poll == pytest.approx(0.01)


@pytest.mark.parametrize("text, needle", [
    ("detect:\n  carrier_poll: 0.5ms\n", "at least 1 ms"),
    ("detect:\n  carrier_poll: 10\n", "needs a unit"),
    ("detect:\n  link: false\n  probe: {targets: [192.0.2.1]}\n  carrier_poll: 10ms\n", "needs detect.link: true"),
])
def test_bad_carrier_poll_is_one_line_naming_file_line_key(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + text, "gw.yaml")
    message = str(err.value)
    assert message.startswith("gw.yaml:") and "detect.carrier_poll" in message and needle in message
    assert "\n" not in message
