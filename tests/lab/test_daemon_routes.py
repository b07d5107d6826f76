"""`ipshift run` in a lab: a static route and secondary addresses follow a failover, in the kernel."""

from __future__ import annotations

from typing import Callable

from failover_kit import ROUTE_DST, base_config, holders, kernel_detail, on, route_devices, wait_until
from labtools import DaemonHandle

from ipshift.lab import Lab


def test_route_and_configured_secondary_move_hand_added_secondary_stays(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    # eth0: 192.0.2.10 (primary) and 192.0.2.20 (secondary), both configured; promote_secondaries=0
    lab = make_lab(gw_addrs={"eth0": ["192.0.2.10/24", "192.0.2.20/24"], "eth1": ["192.0.2.11/24"]})
    # a secondary of eth0's subnet that ipshift does not manage, added by hand
    lab.run(lab.gateway, "ip", "addr", "add", "192.0.2.30/24", "dev", "eth0")
    assert lab.run(lab.gateway, "sysctl", "-n", "net.ipv4.conf.eth0.promote_secondaries").stdout.strip() == "0"
    cfg = base_config(failback={"mode": "manual", "delay": "300ms"},
                      eth0=["192.0.2.10/24", "192.0.2.20/24"])
    d = make_daemon(lab, cfg)
    detail = kernel_detail(lab, d)

    # the daemon installed the configured route through eth0 at start
    wait_until(lambda: route_devices(lab) == ["eth0"], 2.0, f"route {ROUTE_DST} dev eth0", detail)

    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"] and on(s, "192.0.2.20/24") == ["eth1"],
               timeout=2.0, what="both configured addresses on eth1")

    # the kernel, not just the daemon's view
    def moved() -> bool:
        return (holders(lab, "192.0.2.10/24") == ["eth1"] and holders(lab, "192.0.2.20/24") == ["eth1"]
                and route_devices(lab) == ["eth1"])

    wait_until(moved, 2.0, "configured addresses and the route on eth1 in the kernel", detail)
    out = lab.run(lab.gateway, "ip", "route", "show", ROUTE_DST).stdout
    assert "dev eth1" in out and "via 192.0.2.1" in out, out
    # the hand-added secondary was not lost with eth0's primary
    assert holders(lab, "192.0.2.30/24") == ["eth0"], detail()
    assert holders(lab, "192.0.2.11/24") == ["eth1"], detail()
