"""Every route the gateway needs survives a failover and comes back with its own protocol."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from failover_kit import base_config, holders, on, wait_until
from labtools import DaemonHandle

from ipshift.lab import Lab


def routes(lab: Lab, *args: str) -> list[dict[str, Any]]:
    out = lab.run(lab.gateway, "ip", "-j", *args, "route", "show").stdout
    return json.loads(out) if out.strip() else []


def where(lab: Lab, dst: str, *family: str) -> list[tuple[str, str]]:
    """(device, protocol) of every main-table route to ``dst``."""
    return sorted((r["dev"], r.get("protocol", "")) for r in routes(lab, *family) if r["dst"] == dst)


def test_dhcp_and_router_advertisement_routes_move_and_come_back_with_their_protocol(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(ipv6=True)
    # what a DHCP client and router advertisements leave on eth0
    lab.run(lab.gateway, "ip", "route", "add", "default", "via", "192.0.2.1", "dev", "eth0", "proto", "dhcp")
    lab.run(lab.gateway, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0", "proto", "ra")
    lab.run(lab.gateway, "ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.1", "dev", "eth0", "proto", "bird")
    cfg = base_config(route=False, eth0=["192.0.2.10/24", "2001:db8::10/64"], eth1=["192.0.2.11/24", "2001:db8::11/64"])
    d = make_daemon(lab, cfg)
    d.wait_for(lambda s: s["ready"], timeout=5.0, what="ready")
    lab.fail_nic("eth0")  # with its last IPv4 address the kernel drops eth0's IPv4 routes itself
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"] and on(s, "2001:db8::10/64") == ["eth1"],
               timeout=3.0, what="failover")
    wait_until(lambda: where(lab, "default") == [("eth1", "dhcp")], 2.0, "the DHCP default route on eth1",
               lambda: str(routes(lab)))
    assert where(lab, "203.0.113.0/24") == [("eth1", "bird")]
    assert ("eth1", "ra") in where(lab, "default", "-6"), routes(lab, "-6")
    lab.restore_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth0"], timeout=5.0, what="failback")
    wait_until(lambda: where(lab, "default") == [("eth0", "dhcp")], 2.0, "the DHCP default route back on eth0",
               lambda: str(routes(lab)))
    assert where(lab, "203.0.113.0/24") == [("eth0", "bird")]
    assert ("eth0", "ra") in where(lab, "default", "-6") and ("eth1", "ra") not in where(lab, "default", "-6")


def test_withdrawn_routes_come_back_beside_another_nics_route_to_the_same_prefix(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    """eth0 keeps an address ipshift does not manage, so its connected route is withdrawn while it
    is failed; it must come back although eth1 has a route to the same prefix, or the gateway has
    none at all when eth1 fails next."""
    lab = make_lab(promote_secondaries=True)
    lab.run(lab.gateway, "ip", "addr", "add", "192.0.2.77/24", "dev", "eth0")  # not in the config
    d = make_daemon(lab, base_config(route=False))
    d.wait_for(lambda s: s["ready"], timeout=5.0, what="ready")
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=3.0, what="failover")
    wait_until(lambda: where(lab, "192.0.2.0/24") == [("eth1", "kernel")], 2.0, "eth0's connected route withdrawn",
               lambda: str(routes(lab)))
    lab.restore_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth0"], timeout=5.0, what="failback")
    wait_until(lambda: ("eth0", "kernel") in where(lab, "192.0.2.0/24"), 2.0, "eth0's connected route back",
               lambda: str(routes(lab)) + d.log()[-2000:])
    lab.fail_nic("eth1")
    d.wait_for(lambda s: on(s, "192.0.2.11/24") == ["eth0"], timeout=3.0, what="eth1's failover")
    assert lab.run(lab.client, "ping", "-c", "1", "-W", "1", "192.0.2.11", check=False).returncode == 0, routes(lab)


def test_a_route_moves_even_when_the_first_address_of_its_subnet_cannot(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(gw_addrs={"eth0": ["192.0.2.10/24", "192.0.2.20/24"], "eth1": ["192.0.2.11/24"]})
    cfg = base_config(eth0=["192.0.2.10/24", "192.0.2.20/24"], failback={"mode": "manual"})
    cfg["conflict_check"]["background"] = None  # the conflict is found by the probe at failure
    d = make_daemon(lab, cfg)
    d.wait_for(lambda s: s["ready"], timeout=5.0, what="ready")
    lab.run(lab.client, "ip", "addr", "add", "192.0.2.10/24", "dev", lab.client_nic)  # someone else answers for it
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.20/24") == ["eth1"], timeout=3.0, what="the second address moved")
    assert holders(lab, "192.0.2.10/24") == ["eth0"]  # the first one stayed: in use elsewhere
    wait_until(lambda: where(lab, "198.51.100.0/24") == [("eth1", "static")], 2.0, "the route on eth1",
               lambda: str(routes(lab)))
