"""What the kernel tells the daemon, as immutable values: the inputs of the daemon's core.

Theory of operation: the netlink monitor (:mod:`ipshift.kernel.monitor`)
turns every ``RTM_NEWLINK``, ``RTM_DELLINK``, ``RTM_NEWADDR`` and
``RTM_DELADDR`` notification it reads into one of these frozen values at the
edge; the daemon's core consumes them and never sees a netlink message.
Each event carries ``at``, the ``time.monotonic()`` reading taken when the
message was read from the socket, so that the core can account for its
failover budget from the moment the kernel's news reached the process.

* :class:`LinkEvent`: the full state of a link after a change, as the
  decoded :class:`~ipshift.model.Link` itself (a notification carries the
  whole link, not the difference), so the latest one for an index is all the
  core needs; ``name``, ``carrier``, ``link_ok`` and the like read through to
  it;
* :class:`LinkGone`: the link was deleted (or moved to another namespace);
* :class:`AddressEvent`: an address was added to or removed from a link;
* :class:`Resync`: the monitor lost notifications (its socket overran, or it
  saw something it could not place); the stream is again complete from this
  event on, but the core must re-read the whole state and reconcile.

This module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from ipshift.model import LINK_DOWN_OPERSTATES, Address, IPInterface, Link

__all__ = ["AddressEvent", "KernelEvent", "LinkEvent", "LinkGone", "Resync", "LINK_DOWN_OPERSTATES"]


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A link's state as an ``RTM_NEWLINK`` notification reported it: the whole decoded link."""

    link: Link
    at: float  # time.monotonic() when the message was read

    @property
    def name(self) -> str:
        return self.link.name

    @property
    def index(self) -> int:
        return self.link.index

    @property
    def admin_up(self) -> bool:
        """IFF_UP."""
        return self.link.admin_up

    @property
    def carrier(self) -> bool:
        """IFF_LOWER_UP."""
        return self.link.carrier

    @property
    def operstate(self) -> str:
        """The operational state: "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN", ..."""
        return self.link.operstate

    @property
    def kind(self) -> str:
        """IFLA_INFO_KIND: "veth", "macvlan", ...; "" for a physical NIC."""
        return self.link.kind

    @property
    def mac(self) -> str:
        """The MAC, lower-case "aa:bb:cc:dd:ee:ff"; "" when the device has none."""
        return self.link.mac

    @property
    def link_ok(self) -> bool:
        """Admin up with carrier and an operational state that can carry traffic."""
        return self.admin_up and self.carrier and self.operstate not in LINK_DOWN_OPERSTATES


@dataclass(frozen=True, slots=True)
class LinkGone:
    """A link was deleted (``RTM_DELLINK``), or left this namespace."""

    name: str
    index: int
    at: float


@dataclass(frozen=True, slots=True)
class AddressEvent:
    """An address appeared on (``added``) or disappeared from a link."""

    added: bool  # True: RTM_NEWADDR (also sent when an address's flags change), False: RTM_DELADDR
    ifname: str
    interface: IPInterface  # address with its prefix, e.g. 192.0.2.10/24
    at: float

    @classmethod
    def from_address(cls, added: bool, address: Address, at: float) -> AddressEvent:
        return cls(added=added, ifname=address.ifname, interface=address.interface, at=at)


@dataclass(frozen=True, slots=True)
class Resync:
    """Notifications were lost: re-read the whole state and reconcile."""

    reason: str
    at: float


KernelEvent: TypeAlias = LinkEvent | LinkGone | AddressEvent | Resync
