"""The kernel events (ipshift.events) and their conversion from netlink messages (EventDecoder).

Three sources of messages:

* ``RECORDED``: notifications as the kernel sent them (base64 of the raw
  datagrams), recorded from a lab gateway with pyroute2 0.9.7; they go
  through the whole path, pyroute2's decoding included. To record them
  again, as root: ``.venv/bin/python tests/unit/test_events.py --record``;
* ``tests/data/snapshot_msgs.json``: dump messages as pyroute2 decodes them,
  stored as plain dicts (see ``test_snapshot_convert.py``);
* messages encoded here with pyroute2's own classes, for the cases the
  recordings lack.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from ipshift.events import LINK_DOWN_OPERSTATES, AddressEvent, LinkEvent, LinkGone, Resync
from ipshift.kernel.monitor import EventDecoder
from ipshift.kernel.snapshot import address_from_msg, link_from_msg
from ipshift.model import Address, Link

DATA = Path(__file__).resolve().parent.parent / "data" / "snapshot_msgs.json"
Msg = dict[str, Any]

# Lab gateway: eth0 ifindex 10 (MAC 02:1b:00:00:00:10), eth1 ifindex 11, a veth vx0 (its peer vy0).
RECORDED: dict[str, str] = {}  # filled at the end of the module (the recorder's output)

OPERSTATES = ("UP", "UNKNOWN", "DORMANT", "TESTING", "DOWN", "LOWERLAYERDOWN", "NOTPRESENT")


def raw(name: str) -> bytes:
    return base64.b64decode(RECORDED[name])


@pytest.fixture(scope="module")
def msgs() -> dict[str, list[Msg]]:
    return json.loads(DATA.read_text())  # type: ignore[no-any-return]


def gateway_decoder() -> EventDecoder:
    return EventDecoder({1: "lo", 10: "eth0", 11: "eth1"})


# ------------------------------------------------------------------ the values


@pytest.mark.parametrize("operstate", OPERSTATES)
@pytest.mark.parametrize("carrier", [True, False])
@pytest.mark.parametrize("admin_up", [True, False])
def test_link_ok_truth_table(admin_up: bool, carrier: bool, operstate: str) -> None:
    link = Link(name="eth0", index=10, mac="02:1b:00:00:00:10", admin_up=admin_up, carrier=carrier,
                operstate=operstate, kind="veth")
    ev = LinkEvent(link, 1.0)
    # DORMANT (a port waiting for 802.1X) and TESTING carry no traffic: not healthy
    expected = admin_up and carrier and operstate in ("UP", "UNKNOWN")
    assert ev.link_ok is expected


@given(st.booleans(), st.booleans(), st.text(max_size=20))
def test_link_ok_agrees_with_link_healthy(admin_up: bool, carrier: bool, operstate: str) -> None:
    link = Link(name="eth0", index=10, mac="", admin_up=admin_up, carrier=carrier, operstate=operstate)
    assert LinkEvent(link, 0.0).link_ok is link.healthy
    assert LINK_DOWN_OPERSTATES == {"DOWN", "LOWERLAYERDOWN", "NOTPRESENT", "DORMANT", "TESTING"}


@pytest.mark.parametrize(
    "event",
    [
        LinkEvent(Link(name="eth0", index=10, mac="", admin_up=True, carrier=True, operstate="UP"), 1.0),
        LinkGone("eth0", 10, 1.0),
        AddressEvent(True, "eth0", ipaddress.ip_interface("192.0.2.10/24"), 1.0),
        Resync("test", 1.0),
    ],
)
def test_events_are_frozen_slotted_values(event: Any) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.at = 2.0
    assert not hasattr(event, "__dict__")
    assert event == copy.copy(event) and hash(event) == hash(copy.copy(event))


def test_link_event_reads_through_to_its_link_and_from_address() -> None:
    link = Link(name="eth1", index=11, mac="02:1b:00:00:00:11", admin_up=True, carrier=False,
                operstate="LOWERLAYERDOWN", kind="veth", mtu=9000, parent=3)
    ev = LinkEvent(link, 5.5)
    assert ev.link is link and ev.at == 5.5
    assert (ev.name, ev.index, ev.admin_up, ev.carrier, ev.operstate, ev.kind, ev.mac) == (
        "eth1", 11, True, False, "LOWERLAYERDOWN", "veth", "02:1b:00:00:00:11")  # fmt: skip
    assert ev == LinkEvent(dataclasses.replace(link), 5.5) != LinkEvent(dataclasses.replace(link, mtu=1500), 5.5)
    addr = Address(ifname="eth1", interface=ipaddress.ip_interface("2001:db8::11/64"), scope="global")
    assert AddressEvent.from_address(False, addr, 6.0) == AddressEvent(False, "eth1", addr.interface, 6.0)


# ----------------------------------------------------- recorded kernel messages


def test_recorded_carrier_loss() -> None:
    decoder = gateway_decoder()
    (ev,) = decoder.decode(raw("carrier_loss_eth0"), 12.5)
    assert ev == LinkEvent(Link(name="eth0", index=10, mac="02:1b:00:00:00:10", admin_up=True, carrier=False,
                                operstate="DOWN", kind="veth"), 12.5)  # parent None: its peer is in another netns
    assert not ev.link_ok


def test_recorded_carrier_back() -> None:
    (ev,) = gateway_decoder().decode(raw("carrier_back_eth0"), 1.0)
    assert isinstance(ev, LinkEvent) and ev.link_ok
    assert (ev.name, ev.carrier, ev.operstate) == ("eth0", True, "UP")


def test_recorded_address_messages() -> None:
    decoder = gateway_decoder()
    events = [ev for name in ("add_v4_eth1", "add_v6_eth1", "del_v4_eth1") for ev in decoder.decode(raw(name), 2.0)]
    assert events == [
        AddressEvent(True, "eth1", ipaddress.ip_interface("198.51.100.7/24"), 2.0),
        AddressEvent(True, "eth1", ipaddress.ip_interface("2001:db8:5::7/64"), 2.0),
        AddressEvent(False, "eth1", ipaddress.ip_interface("198.51.100.7/24"), 2.0),
    ]


def test_recorded_new_and_deleted_link_update_the_names() -> None:
    decoder = gateway_decoder()
    (new,) = decoder.decode(raw("new_vx0"), 3.0)
    assert isinstance(new, LinkEvent) and (new.name, new.kind, new.admin_up) == ("vx0", "veth", False)
    assert decoder.ifnames[new.index] == "vx0"
    (gone,) = decoder.decode(raw("del_vx0"), 4.0)
    assert gone == LinkGone("vx0", new.index, 4.0)
    assert new.index not in decoder.ifnames


def test_address_on_an_unknown_link_asks_for_a_resync() -> None:
    decoder = EventDecoder({10: "eth0"})  # eth1 (11) unknown
    (ev,) = decoder.decode(raw("add_v4_eth1"), 7.0)
    assert isinstance(ev, Resync) and "unknown ifindex 11" in ev.reason and ev.at == 7.0


# --------------------------------------------------------- recorded dump dicts


def test_link_dicts_convert_like_the_snapshot(msgs: dict[str, list[Msg]]) -> None:
    decoder = EventDecoder()
    for msg in msgs["links"]:
        ev = decoder.convert(msg, 1.0)
        assert ev == LinkEvent(link_from_msg(msg), 1.0)
    names = {int(m["index"]): link_from_msg(m).name for m in msgs["links"]}
    assert decoder.ifnames == names and "eth0" in names.values()


def test_address_dicts_convert_like_the_snapshot(msgs: dict[str, list[Msg]]) -> None:
    decoder = EventDecoder()
    decoder.learn_links(msgs["links"])
    converted = 0
    for msg in msgs["addresses"]:
        address = address_from_msg(msg, decoder.ifnames)
        assert address is not None
        assert decoder.convert(msg, 2.0) == AddressEvent.from_address(True, address, 2.0)
        deleted = {**msg, "event": "RTM_DELADDR"}
        assert decoder.convert(deleted, 2.0) == AddressEvent.from_address(False, address, 2.0)
        converted += 1
    assert converted == len(msgs["addresses"]) > 0


def test_learn_links_emits_nothing_and_keeps_names(msgs: dict[str, list[Msg]]) -> None:
    decoder = EventDecoder({99: "old"})
    decoder.learn_links(msgs["links"] + msgs["addresses"])
    assert decoder.ifnames[99] == "old" and len(decoder.ifnames) == len(msgs["links"]) + 1


def test_bridge_family_link_messages_are_ignored(msgs: dict[str, list[Msg]]) -> None:
    eth0 = next(m for m in msgs["links"] if link_from_msg(m).name == "eth0")
    decoder = gateway_decoder()
    for event in ("RTM_NEWLINK", "RTM_DELLINK"):
        assert decoder.convert({**eth0, "family": 7, "event": event}, 1.0) is None  # AF_BRIDGE
    assert decoder.ifnames[10] == "eth0"
    assert decoder.convert({**eth0, "event": "RTM_DELLINK"}, 1.0) == LinkGone("eth0", 10, 1.0)


def test_other_and_broken_messages() -> None:
    decoder = gateway_decoder()
    assert decoder.convert({"event": "RTM_NEWROUTE", "attrs": []}, 1.0) is None
    assert decoder.convert({"header": {"type": 3}, "attrs": []}, 1.0) is None  # NLMSG_DONE
    broken = decoder.convert({"header": {"type": RTM_NEWLINK, "error": ValueError("bad NLA")}}, 1.0)
    assert isinstance(broken, Resync) and "bad NLA" in broken.reason
    # an address message without an address says nothing
    no_address = {"event": "RTM_NEWADDR", "family": 2, "index": 10, "prefixlen": 24, "attrs": []}
    assert decoder.convert(no_address, 1.0) is None
    assert decoder.decode(b"", 1.0) == []


# ------------------------------------------------------ encoded with pyroute2


def _encoded_link(msg_type: int, index: int, name: str, flags: int, operstate: str, kind: str | None) -> bytes:
    msg = ifinfmsg()
    msg["header"]["type"] = msg_type
    msg["family"] = 0
    msg["index"] = index
    msg["flags"] = flags
    msg["ifi_type"] = 1
    attrs: list[tuple[str, Any]] = [
        ("IFLA_IFNAME", name),
        ("IFLA_ADDRESS", "02:1B:00:00:00:12"),
        ("IFLA_OPERSTATE", operstate),
    ]
    if kind is not None:
        attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}))
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def _encoded_addr(family: int, index: int, ip: str, prefixlen: int) -> bytes:
    msg = ifaddrmsg()
    msg["header"]["type"] = RTM_NEWADDR
    msg["family"] = family
    msg["index"] = index
    msg["prefixlen"] = prefixlen
    msg["attrs"] = [("IFA_ADDRESS", ip)] + ([("IFA_LOCAL", ip)] if family == 2 else [])
    msg.encode()
    return bytes(msg.data)


def test_several_messages_in_one_datagram_keep_their_order() -> None:
    decoder = EventDecoder()
    data = (
        _encoded_link(RTM_NEWLINK, 12, "eth2", 0x1 | 0x2 | 0x10000, "UP", "macvlan")
        + _encoded_addr(2, 12, "203.0.113.9", 24)
        + _encoded_addr(10, 12, "2001:db8:9::9", 64)
        + _encoded_link(RTM_DELLINK, 12, "eth2", 0, "DOWN", None)
        + _encoded_addr(2, 12, "203.0.113.10", 24)  # after the link went: unknown index
    )
    events = decoder.decode(data, 9.0)
    assert events[:4] == [
        LinkEvent(Link(name="eth2", index=12, mac="02:1b:00:00:00:12", admin_up=True, carrier=True,
                       operstate="UP", kind="macvlan"), 9.0),
        AddressEvent(True, "eth2", ipaddress.ip_interface("203.0.113.9/24"), 9.0),
        AddressEvent(True, "eth2", ipaddress.ip_interface("2001:db8:9::9/64"), 9.0),
        LinkGone("eth2", 12, 9.0),
    ]
    assert isinstance(events[4], Resync) and len(events) == 5


@pytest.mark.parametrize(
    ("flags", "operstate", "link_ok"),
    [
        (0x1 | 0x10000, "UP", True),
        (0x1, "LOWERLAYERDOWN", False),  # no IFF_LOWER_UP: no carrier
        (0x10000, "DOWN", False),  # not IFF_UP
        (0x1 | 0x10000, "DORMANT", False),  # 802.1X: not authenticated yet
        (0x1 | 0x10000, "NOTPRESENT", False),
    ],
)
def test_encoded_link_flags(flags: int, operstate: str, link_ok: bool) -> None:
    (ev,) = EventDecoder().decode(_encoded_link(RTM_NEWLINK, 5, "eth9", flags, operstate, None), 0.0)
    assert isinstance(ev, LinkEvent)
    assert (ev.admin_up, ev.carrier, ev.operstate, ev.kind, ev.link_ok) == (
        bool(flags & 1), bool(flags & 0x10000), operstate, "", link_ok)  # fmt: skip


# ---------------------------------------------------------------- recording


def record() -> None:  # pragma: no cover - run by hand, as root
    """Print RECORDED for a fresh lab gateway (see the module docstring)."""
    import time

    from ipshift.kernel.monitor import DEFAULT_GROUPS, _open_socket
    from ipshift.kernel.netns import call_in_netns
    from ipshift.lab import Lab, unique_prefix

    lab = Lab(unique_prefix("ipsm"), nics=2)
    try:
        lab.create()
        sock = call_in_netns(lab.gateway, lambda: _open_socket(DEFAULT_GROUPS, 1 << 20))
        sock.setblocking(True)
        sock.settimeout(1.0)
        decoder = EventDecoder({1: "lo", 10: "eth0", 11: "eth1"})
        out: dict[str, str] = {}

        def grab(name: str, want: Any, action: Any) -> None:
            action()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                data = sock.recv(65536)
                (ev,) = decoder.decode(data, 0.0) or (None,)
                if ev is not None and want(ev):
                    out[name] = base64.b64encode(data).decode()
                    return
            raise RuntimeError(f"no message for {name}")

        gw = lab.gateway
        grab("carrier_loss_eth0", lambda e: isinstance(e, LinkEvent) and e.name == "eth0" and not e.carrier,
             lambda: lab.fail_nic("eth0"))
        grab("carrier_back_eth0", lambda e: isinstance(e, LinkEvent) and e.name == "eth0" and e.link_ok,
             lambda: lab.restore_nic("eth0"))
        grab("add_v4_eth1", lambda e: isinstance(e, AddressEvent) and e.interface.version == 4 and e.added,
             lambda: lab.run(gw, "ip", "addr", "add", "198.51.100.7/24", "dev", "eth1"))
        grab("add_v6_eth1", lambda e: isinstance(e, AddressEvent) and str(e.interface) == "2001:db8:5::7/64",
             lambda: lab.run(gw, "ip", "addr", "add", "2001:db8:5::7/64", "dev", "eth1", "nodad"))
        grab("del_v4_eth1", lambda e: isinstance(e, AddressEvent) and e.interface.version == 4 and not e.added,
             lambda: lab.run(gw, "ip", "addr", "del", "198.51.100.7/24", "dev", "eth1"))
        grab("new_vx0", lambda e: isinstance(e, LinkEvent) and e.name == "vx0",
             lambda: lab.run(gw, "ip", "link", "add", "vx0", "type", "veth", "peer", "name", "vy0"))
        grab("del_vx0", lambda e: isinstance(e, LinkGone) and e.name == "vx0",
             lambda: lab.run(gw, "ip", "link", "del", "vx0"))
        sock.close()
    finally:
        lab.destroy()
    print("RECORDED.update(")
    print("    {")
    for name, b64 in out.items():
        lines = [b64[i : i + 96] for i in range(0, len(b64), 96)]
        print(f'        "{name}": (')
        for line in lines:
            print(f'            "{line}"')
        print("        ),")
    print("    }")
    print(")")


# ------------------------------------------------------------ recorded data

# pyroute2 0.9.7, Linux 6.18.44, the lab gateway (unique_prefix("ipsm"), 2 NICs).
RECORDED.update(
    {
        "carrier_loss_eth0": (
            "4AUAABAAAAAAAAAAAAAAAAAAAQAKAAAAAxAAAAAAAAAJAAMAZXRoMAAAAAAIAA0A6AMAAAUAEAACAAAABQARAAAAAAAFAEMA"
            "AAAAAAgABADcBQAACAAyAEQAAAAIADMA//8AAAgAGwAAAAAACAAeAAAAAAAIAD0AAAAAAAgAHwACAAAACAAoAP//AAAIACkA"
            "AAABAAgAOgAAAAEACAA/AAAAAQAIAEAAAAABAAgAOwD4/wcACAA8AP//AAAIAEIAAAAAAAgAIAACAAAABQAhAAAAAAAIACMA"
            "AwAAAAgALwABAAAACAAwAAIAAAAGAEQAAAAAAAYARQAAAAAABQAnAAAAAAAKAAEAAhsAAAAQAAAKAAIA////////AADMABcA"
            "AgAAAAAAAAABAAAAAAAAALQAAAAAAAAAWgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABkAAcAAgAAAAEAAAC0AAAA"
            "WgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAADAArAAUAAgAAAAAAEAASAAkAAQB2ZXRoAAAAAAgAJQAAAAAACAAFAG4AAAAMAAYAbm9xdWV1ZQAwAxoA"
            "jAACAIgAAQAAAAAAAAAAAAAAAAABAAAAAQAAAAEAAAABAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAIAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAnAADoAwAAAAAAAAAAAAAAAAAAAAAAAAEAAACgAgoA"
            "CAABAAAAAIAUAAUA//8AAJGcAwAAlAAA6AMAAPQAAgAAAAAAQAAAANwFAAABAAAAAQAAAAEAAAABAAAA/////6APAADoAwAA"
            "AAAAAIA6CQCAUQEAAwAAAFgCAAAQAAAAAAAAAAEAAAABAAAAAQAAAGDqAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAAAA"
            "AAAAAAAAAAAQJwAA6AMAAAEAAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAgO42AAAAAAAAAAAA"
            "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQAAAAAAAD//wAA/////wEAAAAAAAAAAAAAAAAAAAA0AQMAJgAAAAAAAAACAAAA"
            "AAAAAJgAAAAAAAAAAAAAAAAAAAACAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAAAAAAAAAAQAAAAAAAABMAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACAAAA"
            "AAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAJgAAAAAAAAATAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAADwABgAHAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABQABwAAAAAA"
            "AAAAAAAAAAAAAAAABQAIAAAAAAAkAA4AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAD6ABABBgA=="
        ),
        "carrier_back_eth0": (
            "4AUAABAAAAAAAAAAAAAAAAAAAQAKAAAAQxABAAAAAAAJAAMAZXRoMAAAAAAIAA0A6AMAAAUAEAAGAAAABQARAAAAAAAFAEMA"
            "AAAAAAgABADcBQAACAAyAEQAAAAIADMA//8AAAgAGwAAAAAACAAeAAAAAAAIAD0AAAAAAAgAHwACAAAACAAoAP//AAAIACkA"
            "AAABAAgAOgAAAAEACAA/AAAAAQAIAEAAAAABAAgAOwD4/wcACAA8AP//AAAIAEIAAAAAAAgAIAACAAAABQAhAAEAAAAIACMA"
            "BAAAAAgALwACAAAACAAwAAIAAAAGAEQAAAAAAAYARQAAAAAABQAnAAAAAAAKAAEAAhsAAAAQAAAKAAIA////////AADMABcA"
            "AgAAAAAAAAABAAAAAAAAALQAAAAAAAAAWgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABkAAcAAgAAAAEAAAC0AAAA"
            "WgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAADAArAAUAAgAAAAAAEAASAAkAAQB2ZXRoAAAAAAgAJQAAAAAACAAFAG4AAAAMAAYAbm9xdWV1ZQAwAxoA"
            "jAACAIgAAQAAAAAAAAAAAAAAAAABAAAAAQAAAAEAAAABAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAIAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAnAADoAwAAAAAAAAAAAAAAAAAAAAAAAAEAAACgAgoA"
            "CAABAAAAAIAUAAUA//8AAJGcAwAAlAAA6AMAAPQAAgAAAAAAQAAAANwFAAABAAAAAQAAAAEAAAABAAAA/////6APAADoAwAA"
            "AAAAAIA6CQCAUQEAAwAAAFgCAAAQAAAAAAAAAAEAAAABAAAAAQAAAGDqAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAAAA"
            "AAAAAAAAAAAQJwAA6AMAAAEAAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAgO42AAAAAAAAAAAA"
            "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQAAAAAAAD//wAA/////wEAAAAAAAAAAAAAAAAAAAA0AQMAJgAAAAAAAAACAAAA"
            "AAAAAJgAAAAAAAAAAAAAAAAAAAACAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAAAAAAAAAAQAAAAAAAABMAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACAAAA"
            "AAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAJgAAAAAAAAATAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAADwABgAHAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABQABwAAAAAA"
            "AAAAAAAAAAAAAAAABQAIAAAAAAAkAA4AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAD6ABABBgA=="
        ),
        "add_v4_eth1": (
            "UAAAABQAAAALGAZrMmQAAAIYgAALAAAACAABAMYzZAcIAAIAxjNkBwkAAwBldGgxAAAAAAgACACAAAAAFAAGAP//////////"
            "lZwDAJWcAwA="
        ),
        "add_v6_eth1": (
            "SAAAABQAAAAAAAAAAAAAAApAggALAAAAFAABACABDbgABQAAAAAAAAAAAAcUAAYA//////////+VnAMAlZwDAAgACACCAAAA"
        ),
        "del_v4_eth1": (
            "UAAAABUAAAALGAZrNGQAAAIYgAALAAAACAABAMYzZAcIAAIAxjNkBwkAAwBldGgxAAAAAAgACACAAAAAFAAGAP//////////"
            "lZwDAJWcAwA="
        ),
        "new_vx0": (
            "1AUAABAAAAAAAAAAAAAAAAAAAQADAAAAAhAAAP////8IAAMAdngwAAgADQDoAwAABQAQAAIAAAAFABEAAAAAAAUAQwAAAAAA"
            "CAAEANwFAAAIADIARAAAAAgAMwD//wAACAAbAAAAAAAIAB4AAAAAAAgAPQAAAAAACAAfAAIAAAAIACgA//8AAAgAKQAAAAEA"
            "CAA6AAAAAQAIAD8AAAABAAgAQAAAAAEACAA7APj/BwAIADwA//8AAAgAQgAAAAAACAAgAAIAAAAFACEAAAAAAAgAIwABAAAA"
            "CAAvAAAAAAAIADAAAQAAAAYARAAAAAAABgBFAAAAAAAFACcAAAAAAAoAAQCqDrOFmOEAAAoAAgD///////8AAMwAFwAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAGQABwAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAMACsABQACAAAAAAAQABIACQABAHZldGgAAAAACAAFAAIAAAAJAAYAbm9vcAAAAAAwAxoAjAACAIgAAQAAAAAA"
            "AAAAAAAAAAABAAAAAQAAAAEAAAABAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAnAADoAwAAAAAAAAAAAAAAAAAAAAAAAAEAAACgAgoACAABAAAAAAAUAAUA"
            "//8AAJacAwDQQgAA6AMAAPQAAgAAAAAAQAAAANwFAAABAAAAAQAAAAEAAAABAAAA/////6APAADoAwAAAAAAAIA6CQCAUQEA"
            "AwAAAFgCAAAQAAAAAAAAAAEAAAABAAAAAQAAAGDqAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAQJwAA"
            "6AMAAAEAAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAgO42AAAAAAAAAAAAAQAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAQAAAAAAAD//wAA/////wEAAAAAAAAAAAAAAAAAAAA0AQMAJgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAADwABgAHAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABQABwAAAAAAAAAAAAAAAAAAAAAA"
            "BQAIAAAAAAAkAA4AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAD6ABABBgA=="
        ),
        "del_vx0": (
            "qAIAABEAAAAAAAAAAAAAAAAAAQADAAAAAhAAAP////8IAAMAdngwAAgADQDoAwAABQAQAAIAAAAFABEAAAAAAAUAQwAAAAAA"
            "CAAEANwFAAAIADIARAAAAAgAMwD//wAACAAbAAAAAAAIAB4AAAAAAAgAPQAAAAAACAAfAAIAAAAIACgA//8AAAgAKQAAAAEA"
            "CAA6AAAAAQAIAD8AAAABAAgAQAAAAAEACAA7APj/BwAIADwA//8AAAgAQgAAAAAACAAgAAIAAAAFACEAAAAAAAgAIwABAAAA"
            "CAAvAAAAAAAIADAAAQAAAAYARAAAAAAABgBFAAAAAAAFACcAAAAAAAoAAQCqDrOFmOEAAAoAAgD///////8AAMwAFwAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAGQABwAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            "AAAAAAAAAAAMACsABQACAAAAAAAQABIACQABAHZldGgAAAAACAAFAAAAAAAJAAYAbm9vcAAAAAAEABoAJAAOAAAAAAAAAAAA"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAA+gAQAQYA="
        ),
    }
)


if __name__ == "__main__" and "--record" in sys.argv:
    record()
