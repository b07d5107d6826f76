"""Small pyroute2 helpers of the executor: errno tolerance, dumps, neighbour flushes.

Theory of operation: pyroute2's ``AsyncIPRoute`` answers a request with a
list or an async iterator; :func:`dump` reads either to a list and
:func:`tolerate` runs a request and treats the errnos that mean "already
done" / "already gone" as success (the ExaBGP habit: classify by meaning).
:func:`flush_neighbours` removes the learned (not permanent, not NOARP)
neighbour entries of a network, on one device or on every one.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from ipshift.model import IPNetwork

NUD_PERMANENT = 0x80
NUD_NOARP = 0x40
AF_INET = 2
AF_INET6 = 10


async def dump(coro: Any) -> list[Any]:
    res = await coro
    if hasattr(res, "__aiter__"):
        return [m async for m in res]
    return list(res)


async def tolerate(codes: set[int], coro: Any) -> None:
    try:
        res = await coro
        if hasattr(res, "__aiter__"):
            async for _ in res:
                pass
    except NetlinkError as exc:
        if exc.code in codes:
            return
        raise


async def flush_neighbours(ipr: Any, network: IPNetwork, ifindex: int | None, gone: set[int]) -> None:
    """Delete the learned neighbour entries in ``network`` (on ``ifindex``, None: on every device)."""
    family = AF_INET if network.version == 4 else AF_INET6
    for msg in await dump(ipr.get_neighbours(family=family)):
        if ifindex is not None and msg["ifindex"] != ifindex:
            continue
        if msg["state"] & (NUD_PERMANENT | NUD_NOARP):
            continue
        dst = msg.get("dst")
        if dst is None or ipaddress.ip_address(dst) not in network:
            continue
        await tolerate(gone, ipr.neigh("del", ifindex=msg["ifindex"], dst=dst, family=msg["family"]))
