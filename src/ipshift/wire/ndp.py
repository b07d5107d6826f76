"""IPv6 neighbour discovery frames as bytes: build, parse, judge (pure, no I/O).

Theory of operation: IPv6 has no ARP; the same two jobs are done with ICMPv6
Neighbor Discovery (RFC 4861) messages carried in Ethernet frames:

* **Duplicate address detection** (RFC 4862 section 5.4): before using an
  address, send a Neighbor Solicitation (type 135) *from the unspecified
  address ::* to the address's solicited-node multicast group
  (``ff02::1:ffXX:XXXX``, Ethernet ``33:33:ff:XX:XX:XX``) with the address as
  target and no source link-layer option. A holder of the address defends it
  with a Neighbor Advertisement (type 136) to all-nodes ``ff02::1``; another
  node doing DAD for the same address sends the same kind of NS. Either is a
  conflict (sections 5.4.3 and 5.4.4); :func:`dad_conflict_from` is that rule.
* **Unsolicited advertisement** (RFC 4861 section 7.2.6): after taking the
  address over, send a Neighbor Advertisement to all-nodes with the Override
  flag set, Solicited clear, and a Target Link-Layer Address option carrying
  the new MAC. Neighbours holding an entry for the address replace its MAC.
  The Router flag is clear by default; a *router* announcing one of its own
  addresses should pass ``router=True`` because hosts that see R go from 1 to
  0 drop that neighbour from their default router list (section 7.2.5).

Every ND message goes out with hop limit 255 (receivers drop anything else,
which proves it came from the link) and a correct ICMPv6 checksum over the
IPv6 pseudo-header (RFC 8200 section 8.1). Frames are built with
:mod:`struct`; the parser steps over VLAN tags, trailing Ethernet padding and
hop-by-hop / destination-options headers, checks the checksum (reported as
``checksum_ok``, not fatal) and returns ``None`` for anything that is not an
NS or NA, never raising on malformed input.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Final

from ipshift.wire.arp import (
    ETH_P_IPV6,
    ethernet_header,
    mac_from_bytes,
    mac_to_bytes,
    normalize_mac,
    split_ethernet,
)

IPPROTO_HOPOPTS: Final = 0
IPPROTO_ICMPV6: Final = 58
IPPROTO_DSTOPTS: Final = 60
_SKIPPABLE_EXT_HEADERS: Final = frozenset({IPPROTO_HOPOPTS, IPPROTO_DSTOPTS})
MAX_EXT_HEADERS: Final = 4

ND_NEIGHBOR_SOLICIT: Final = 135
ND_NEIGHBOR_ADVERT: Final = 136
ND_HOP_LIMIT: Final = 255

# NA flags, as the top byte of the 32-bit flags/reserved word.
NA_FLAG_ROUTER: Final = 0x80
NA_FLAG_SOLICITED: Final = 0x40
NA_FLAG_OVERRIDE: Final = 0x20

ND_OPT_SOURCE_LINKADDR: Final = 1
ND_OPT_TARGET_LINKADDR: Final = 2

ALL_NODES: Final = IPv6Address("ff02::1")
UNSPECIFIED_V6: Final = IPv6Address("::")
_SOLICITED_NODE_PREFIX: Final = int(IPv6Address("ff02::1:ff00:0"))

# version/traffic class/flow label, payload length, next header, hop limit, src, dst
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
# type, code, checksum, flags/reserved word, target
_ND_MESSAGE = struct.Struct("!BBHI16s")
_ND_OPTION_HEADER = struct.Struct("!BB")
_PSEUDO_HEADER = struct.Struct("!16s16sI3xB")

IPV6_HEADER_LEN: Final = _IPV6_HEADER.size  # 40
ND_MESSAGE_LEN: Final = _ND_MESSAGE.size  # 24


@dataclass(frozen=True, slots=True)
class NdpPacket:
    """One decoded Neighbor Solicitation or Advertisement. MACs are lower case."""

    type: int  # ND_NEIGHBOR_SOLICIT (135) or ND_NEIGHBOR_ADVERT (136)
    src: IPv6Address
    dst: IPv6Address
    target: IPv6Address
    flags: int  # NA: NA_FLAG_* bits; NS: the (reserved) top byte, normally 0
    lladdr: str | None  # NS: source link-layer option; NA: target link-layer option
    eth_src: str
    eth_dst: str
    hop_limit: int = ND_HOP_LIMIT
    code: int = 0
    checksum_ok: bool = True
    vlan: int | None = None

    @property
    def is_ns(self) -> bool:
        return self.type == ND_NEIGHBOR_SOLICIT

    @property
    def is_na(self) -> bool:
        return self.type == ND_NEIGHBOR_ADVERT

    @property
    def router(self) -> bool:
        return self.is_na and bool(self.flags & NA_FLAG_ROUTER)

    @property
    def solicited(self) -> bool:
        return self.is_na and bool(self.flags & NA_FLAG_SOLICITED)

    @property
    def override(self) -> bool:
        return self.is_na and bool(self.flags & NA_FLAG_OVERRIDE)

    @property
    def is_dad(self) -> bool:
        """A duplicate-address-detection probe: an NS from the unspecified address."""
        return self.is_ns and self.src == UNSPECIFIED_V6

    @property
    def valid(self) -> bool:
        """RFC 4861 section 7.1 checks a receiver must make before believing it."""
        return self.hop_limit == ND_HOP_LIMIT and self.code == 0 and self.checksum_ok


# --- addresses ----------------------------------------------------------------


def solicited_node(ip: IPv6Address) -> IPv6Address:
    """The solicited-node multicast group of ``ip``: ff02::1:ff + its low 24 bits."""
    return IPv6Address(_SOLICITED_NODE_PREFIX | (int(ip) & 0xFFFFFF))


def multicast_mac(ip: IPv6Address) -> str:
    """The Ethernet group address of IPv6 multicast ``ip``: 33:33 + its low 32 bits."""
    return mac_from_bytes(b"\x33\x33" + ip.packed[12:])


# --- checksum -----------------------------------------------------------------


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's complement sum, complemented."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmpv6_checksum(src: IPv6Address, dst: IPv6Address, message: bytes) -> int:
    """Checksum of ICMPv6 ``message`` (checksum field zeroed) over the pseudo-header."""
    pseudo = _PSEUDO_HEADER.pack(src.packed, dst.packed, len(message), IPPROTO_ICMPV6)
    return internet_checksum(pseudo + message)


# --- builders -----------------------------------------------------------------


def _lladdr_option(option_type: int, mac: str) -> bytes:
    return _ND_OPTION_HEADER.pack(option_type, 1) + mac_to_bytes(mac)


def _nd_frame(
    *,
    eth_src: str,
    eth_dst: str,
    src: IPv6Address,
    dst: IPv6Address,
    icmp_type: int,
    flags_word: int,
    target: IPv6Address,
    options: bytes,
) -> bytes:
    unsummed = _ND_MESSAGE.pack(icmp_type, 0, 0, flags_word, target.packed) + options
    checksum = icmpv6_checksum(src, dst, unsummed)
    message = unsummed[:2] + struct.pack("!H", checksum) + unsummed[4:]
    ip_header = _IPV6_HEADER.pack(
        6 << 28, len(message), IPPROTO_ICMPV6, ND_HOP_LIMIT, src.packed, dst.packed
    )
    return ethernet_header(eth_dst, eth_src, ETH_P_IPV6) + ip_header + message


def build_unsolicited_na(mac: str, ip: IPv6Address, *, router: bool = False) -> bytes:
    """Unsolicited NA from ``ip`` to ff02::1: Override set, Solicited clear, TLLA = ``mac``."""
    flags = NA_FLAG_OVERRIDE | (NA_FLAG_ROUTER if router else 0)
    return _nd_frame(
        eth_src=mac,
        eth_dst=multicast_mac(ALL_NODES),
        src=ip,
        dst=ALL_NODES,
        icmp_type=ND_NEIGHBOR_ADVERT,
        flags_word=flags << 24,
        target=ip,
        options=_lladdr_option(ND_OPT_TARGET_LINKADDR, mac),
    )


def build_dad_ns(mac: str, ip: IPv6Address) -> bytes:
    """DAD probe for ``ip``: NS from :: to its solicited-node group, no SLLA option."""
    group = solicited_node(ip)
    return _nd_frame(
        eth_src=mac,
        eth_dst=multicast_mac(group),
        src=UNSPECIFIED_V6,
        dst=group,
        icmp_type=ND_NEIGHBOR_SOLICIT,
        flags_word=0,
        target=ip,
        options=b"",
    )


def build_ns(mac: str, src_ip: IPv6Address, target_ip: IPv6Address) -> bytes:
    """Address-resolution NS for ``target_ip`` from ``src_ip``, with SLLA = ``mac``."""
    group = solicited_node(target_ip)
    return _nd_frame(
        eth_src=mac,
        eth_dst=multicast_mac(group),
        src=src_ip,
        dst=group,
        icmp_type=ND_NEIGHBOR_SOLICIT,
        flags_word=0,
        target=target_ip,
        options=_lladdr_option(ND_OPT_SOURCE_LINKADDR, mac),
    )


# --- parsing ------------------------------------------------------------------


def _skip_extension_headers(next_header: int, payload: bytes) -> tuple[int, bytes] | None:
    """Step over hop-by-hop / destination options headers; None when malformed."""
    for _ in range(MAX_EXT_HEADERS):
        if next_header not in _SKIPPABLE_EXT_HEADERS:
            return next_header, payload
        if len(payload) < 8:
            return None
        length = (payload[1] + 1) * 8
        if len(payload) < length:
            return None
        next_header, payload = payload[0], payload[length:]
    return (next_header, payload) if next_header not in _SKIPPABLE_EXT_HEADERS else None


def _lladdr_from_options(options: bytes, wanted: int) -> tuple[bool, str | None]:
    """(well formed, first link-layer address option of type ``wanted``)."""
    offset = 0
    found: str | None = None
    while offset < len(options):
        if len(options) - offset < _ND_OPTION_HEADER.size:
            return False, None
        option_type, length = _ND_OPTION_HEADER.unpack_from(options, offset)
        end = offset + length * 8
        if length == 0 or end > len(options):
            return False, None
        if option_type == wanted and found is None:
            found = mac_from_bytes(options[offset + 2 : offset + 8])
        offset = end
    return True, found


def parse_ndp(frame: bytes) -> NdpPacket | None:
    """Decode an Ethernet/IPv6/ICMPv6 NS or NA; None for anything else (never raises)."""
    eth = split_ethernet(frame)
    if eth is None or eth.ethertype != ETH_P_IPV6 or len(eth.payload) < IPV6_HEADER_LEN:
        return None
    vtf, payload_len, next_header, hop_limit, src, dst = _IPV6_HEADER.unpack_from(eth.payload)
    payload = eth.payload[IPV6_HEADER_LEN : IPV6_HEADER_LEN + payload_len]
    if vtf >> 28 != 6 or len(payload) < payload_len:
        return None
    upper = _skip_extension_headers(next_header, payload)
    if upper is None or upper[0] != IPPROTO_ICMPV6 or len(upper[1]) < ND_MESSAGE_LEN:
        return None
    message = upper[1]
    icmp_type, code, checksum, flags_word, target = _ND_MESSAGE.unpack_from(message)
    if icmp_type not in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT):
        return None
    wanted = ND_OPT_SOURCE_LINKADDR if icmp_type == ND_NEIGHBOR_SOLICIT else ND_OPT_TARGET_LINKADDR
    well_formed, lladdr = _lladdr_from_options(message[ND_MESSAGE_LEN:], wanted)
    if not well_formed:
        return None
    src_ip, dst_ip = IPv6Address(src), IPv6Address(dst)
    unsummed = message[:2] + b"\x00\x00" + message[4:]
    return NdpPacket(
        type=icmp_type,
        src=src_ip,
        dst=dst_ip,
        target=IPv6Address(target),
        flags=flags_word >> 24,
        lladdr=lladdr,
        eth_src=eth.src,
        eth_dst=eth.dst,
        hop_limit=hop_limit,
        code=code,
        checksum_ok=icmpv6_checksum(src_ip, dst_ip, unsummed) == checksum,
        vlan=eth.vlan,
    )


# --- judging ------------------------------------------------------------------


def _own_macs(own_mac: str | Collection[str]) -> frozenset[str]:
    if isinstance(own_mac, str):
        return frozenset({normalize_mac(own_mac)})
    return frozenset(normalize_mac(m) for m in own_mac)


def dad_conflict_from(
    packet: NdpPacket, *, ip: IPv6Address, own_mac: str | Collection[str]
) -> str | None:
    """Whether ``packet``, received while doing DAD for ``ip``, shows ``ip`` is taken.

    RFC 4862 section 5.4.4: any valid NA whose target is ``ip``; section
    5.4.3: an NS from :: for ``ip`` (another node doing DAD). An NS for ``ip``
    from a unicast source is ordinary address resolution and not a conflict.
    Frames from our own MAC (``own_mac``: one MAC or all of the host's) are
    our own echoes. Returns a one-line reason naming the other MAC, or None.
    """
    if not packet.valid or packet.target != ip:
        return None
    own = _own_macs(own_mac)
    eth_src = normalize_mac(packet.eth_src)
    lladdr = None if packet.lladdr is None else normalize_mac(packet.lladdr)
    if eth_src in own or lladdr in own:
        return None
    who = lladdr or eth_src
    if packet.is_na:
        return f"{ip} is in use by {who} (neighbour advertisement from {packet.src})"
    if packet.is_dad:
        return f"{ip} is being claimed by {who} (DAD neighbour solicitation from ::)"
    return None
