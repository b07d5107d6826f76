"""Netlink notifications as :mod:`ipshift.events`: the monitor's pure decoder.

Theory of operation: :class:`EventDecoder` takes one datagram of
``RTM_NEWLINK`` / ``RTM_DELLINK`` / ``RTM_NEWADDR`` / ``RTM_DELADDR``
notifications, lets pyroute2's rtnetlink message classes
(:class:`~pyroute2.netlink.rtnl.marshal.MarshalRtnl`) decode it, and converts
each message with the converters of :mod:`ipshift.kernel.convert`, the same
ones the snapshot uses, so a notification and a dump give the same
:class:`~ipshift.model.Link` or :class:`~ipshift.model.Address`. It keeps the
ifindex -> name map that address notifications need (``RTM_NEWADDR`` carries
an index; IPv6 ones carry no name at all), learnt from every link message.

A message pyroute2 could not decode, or an address on an index the map does
not know, becomes :class:`~ipshift.events.Resync` rather than a guess.
Bridge-port messages (family ``AF_BRIDGE``) are ignored: an ``AF_BRIDGE``
``RTM_DELLINK`` means a port left its bridge, not that the device is gone.

This module does no I/O; the caller reads the socket and passes the time
(:mod:`ipshift.kernel.monitor`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from ipshift.events import AddressEvent, KernelEvent, LinkEvent, LinkGone, Resync
from ipshift.kernel.convert import Msg, address_from_msg, link_from_msg

__all__ = ["AF_UNSPEC", "EventDecoder"]

AF_UNSPEC = 0
_EVENT_TYPES = {
    RTM_NEWLINK: "RTM_NEWLINK",
    RTM_DELLINK: "RTM_DELLINK",
    RTM_NEWADDR: "RTM_NEWADDR",
    RTM_DELADDR: "RTM_DELADDR",
}

# The attributes link_from_msg reads. A decoded RTM_NEWLINK has some forty;
# copying out these few in one pass, instead of a linear search per
# attribute, trims the conversion by 10-15 % (pyroute2's lazy decoding of
# the values is the rest of it).
_LINK_ATTRS = frozenset(
    {"IFLA_IFNAME", "IFLA_ADDRESS", "IFLA_OPERSTATE", "IFLA_LINKINFO", "IFLA_MTU", "IFLA_LINK", "IFLA_LINK_NETNSID"}
)


def _event_name(msg: Msg) -> str | None:
    event = msg.get("event")
    if isinstance(event, str):
        return event
    header = msg.get("header")
    if header is not None:
        return _EVENT_TYPES.get(int(header.get("type", -1)))
    return None


def _link_view(msg: Msg) -> dict[str, Any]:
    """The parts of a link message that :func:`link_from_msg` reads, as a plain dict."""
    attrs = [(item[0], item[1]) for item in msg.get("attrs", ()) if item[0] in _LINK_ATTRS]
    return {
        "index": msg["index"],
        "flags": msg.get("flags", 0),
        "ifi_type": msg.get("ifi_type", 1),
        "attrs": attrs,
    }


class EventDecoder:
    """Netlink messages in, :data:`~ipshift.events.KernelEvent` values out.

    Holds the ifindex -> name map that address messages need; it learns from
    every link message it converts (and from :meth:`learn_links`). Pure apart
    from that map: no I/O, the caller passes the time.
    """

    def __init__(self, ifnames: Mapping[int, str] | None = None) -> None:
        self._marshal = MarshalRtnl()
        self.ifnames: dict[int, str] = dict(ifnames or {})

    def parse(self, data: bytes) -> list[Any]:
        """The messages in one netlink datagram, decoded by pyroute2."""
        return list(self._marshal.parse(data))

    def decode(self, data: bytes, at: float) -> list[KernelEvent]:
        """The events in one datagram of notifications (read at ``at``)."""
        return self.convert_all(self.parse(data), at)

    def convert_all(self, msgs: Iterable[Msg], at: float) -> list[KernelEvent]:
        events = []
        for msg in msgs:
            event = self.convert(msg, at)
            if event is not None:
                events.append(event)
        return events

    def convert(self, msg: Msg, at: float) -> KernelEvent | None:
        """One message as an event; None for a message that says nothing the daemon needs.

        Accepts pyroute2's decoded messages and plain dicts of the same shape
        (``event`` naming the type, or a ``header`` with the numeric one).
        """
        header = msg.get("header")
        if header is not None and header.get("error") is not None:
            return Resync(f"undecodable netlink message: {header['error']}", at)
        event = _event_name(msg)
        if event == "RTM_NEWLINK":
            if msg.get("family", AF_UNSPEC) != AF_UNSPEC:  # AF_BRIDGE port info
                return None
            link = link_from_msg(_link_view(msg))
            self.ifnames[link.index] = link.name
            return LinkEvent(link, at)
        if event == "RTM_DELLINK":
            if msg.get("family", AF_UNSPEC) != AF_UNSPEC:  # a port left its bridge
                return None
            link = link_from_msg(_link_view(msg))
            self.ifnames.pop(link.index, None)
            return LinkGone(name=link.name, index=link.index, at=at)
        if event in ("RTM_NEWADDR", "RTM_DELADDR"):
            index = int(msg.get("index", 0))
            if index not in self.ifnames:
                return Resync(f"{event} for unknown ifindex {index}", at)
            address = address_from_msg(msg, self.ifnames)
            if address is None:
                return None
            return AddressEvent.from_address(event == "RTM_NEWADDR", address, at)
        return None

    def learn_links(self, msgs: Iterable[Msg]) -> None:
        """Update the ifindex -> name map from link messages (a dump), emitting nothing."""
        for msg in msgs:
            if _event_name(msg) == "RTM_NEWLINK" and msg.get("family", AF_UNSPEC) == AF_UNSPEC:
                link = link_from_msg(_link_view(msg))
                self.ifnames[link.index] = link.name
