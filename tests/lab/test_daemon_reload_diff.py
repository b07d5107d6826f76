"""A reload is a diff: prefixes, new and removed addresses, removed NICs, moved servers, kept verdicts."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

import yaml
from failover_kit import base_config, holders, kernel_addresses, on, wait_until
from labtools import DaemonHandle

from ipshift.lab import Lab


def reload(d: DaemonHandle, cfg: dict[str, Any]) -> None:
    cfg = dict(cfg, state_dir=d.config["state_dir"])
    d.config_path.write_text(yaml.safe_dump(cfg))
    assert d.proc is not None and d.proc.poll() is None
    os.kill(d.proc.pid, signal.SIGHUP)


def on_devices(lab: Lab, ip: str) -> list[str]:
    """Every (device, address/prefix) the kernel holds ``ip`` as, whatever its prefix."""
    return sorted(f"{dev} {a}" for dev, a in kernel_addresses(lab) if a.split("/")[0] == ip)


def test_a_changed_prefix_is_applied_and_never_leaves_the_address_on_two_nics(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    cfg = base_config(route=False, failback={"mode": "manual"})
    d = make_daemon(lab, cfg)
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=3.0, what="failover")
    reload(d, base_config(route=False, failback={"mode": "manual"}, eth0=["192.0.2.10/25"]))
    lab.restore_nic("eth0")
    d.wait_for(lambda s: s["nics"]["eth0"]["state"] == "up", timeout=3.0, what="eth0 up")
    assert d.cli("failback", "eth0").returncode == 0
    wait_until(lambda: on_devices(lab, "192.0.2.10") == ["eth0 192.0.2.10/25"], 3.0,
               "192.0.2.10/25 on eth0 and nowhere else", lambda: str(on_devices(lab, "192.0.2.10")))
    reload(d, base_config(route=False, failback={"mode": "manual"}, eth0=["192.0.2.10/24"]))  # and back, at home
    wait_until(lambda: on_devices(lab, "192.0.2.10") == ["eth0 192.0.2.10/24"], 3.0, "the /24 again, once",
               lambda: str(on_devices(lab, "192.0.2.10")))


def test_new_addresses_appear_on_their_home_or_on_a_survivor_when_home_is_down(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    d = make_daemon(lab, base_config(route=False))
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=3.0, what="failover")
    reload(d, base_config(route=False, eth0=["192.0.2.10/24", "192.0.2.20/24"], eth1=["192.0.2.11/24", "192.0.2.21/24"]))
    wait_until(lambda: holders(lab, "192.0.2.20/24") == ["eth1"] and holders(lab, "192.0.2.21/24") == ["eth1"], 3.0,
               "the new addresses on eth1 (192.0.2.20's home is down)", lambda: str(kernel_addresses(lab)))
    lab.restore_nic("eth0")
    wait_until(lambda: holders(lab, "192.0.2.20/24") == ["eth0"], 3.0, "192.0.2.20 home", lambda: str(kernel_addresses(lab)))


def test_an_address_removed_from_the_config_goes_home_if_ipshift_had_moved_it_and_is_never_deleted(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(gw_addrs={"eth0": ["192.0.2.10/24", "192.0.2.20/24"], "eth1": ["192.0.2.11/24"]})
    fb = {"mode": "auto", "delay": "300ms", "flap_count": 20}  # the test flaps eth0 more than a real one would
    d = make_daemon(lab, base_config(route=False, eth0=["192.0.2.10/24", "192.0.2.20/24"], failback=fb))
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.20/24") == ["eth1"], timeout=3.0, what="failover")
    reload(d, base_config(route=False, failback=fb))  # 192.0.2.20 is no longer configured; ipshift put it on eth1
    d.wait_for(lambda s: "192.0.2.20/24" not in s["addresses"], timeout=3.0, what="the address no longer managed")
    assert holders(lab, "192.0.2.20/24") == ["eth1"]  # home is down: it stays where it serves
    d.stop()
    d.start()  # the way home is remembered across a restart
    lab.restore_nic("eth0")
    wait_until(lambda: holders(lab, "192.0.2.20/24") == ["eth0"], 4.0, "192.0.2.20 back home",
               lambda: str(kernel_addresses(lab)) + d.log()[-2000:])
    lab.fail_nic("eth0")  # and no longer ipshift's: it does not move again
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=3.0, what="failover of the managed one")
    assert holders(lab, "192.0.2.20/24") == ["eth0"]
    # at home when it leaves the config: left alone
    reload(d, base_config(route=False, eth0=[], eth1=["192.0.2.11/24"], failback=fb))
    lab.restore_nic("eth0")
    d.wait_for(lambda s: "192.0.2.10/24" not in s["addresses"], timeout=3.0, what="192.0.2.10 unmanaged")
    wait_until(lambda: holders(lab, "192.0.2.10/24") == ["eth0"], 4.0, "192.0.2.10 back home, then left there",
               lambda: str(kernel_addresses(lab)) + d.log()[-5000:])


def test_a_removed_nic_gets_its_withdrawn_routes_back(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab(promote_secondaries=True)
    lab.run(lab.gateway, "ip", "addr", "add", "192.0.2.77/24", "dev", "eth0")  # not ipshift's: stays on eth0
    d = make_daemon(lab, base_config(route=False))
    lab.fail_nic("eth0")
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"], timeout=3.0, what="failover")

    def eth0_routes() -> list[str]:
        out = lab.run(lab.gateway, "ip", "-j", "route", "show", "dev", "eth0").stdout
        return [r["dst"] for r in (json.loads(out) if out.strip() else [])]

    wait_until(lambda: "192.0.2.0/24" not in eth0_routes(), 2.0, "eth0's routes withdrawn", lambda: str(eth0_routes()))
    cfg = base_config(route=False)
    del cfg["interfaces"]["eth0"]
    cfg["interfaces"]["eth1"]["addresses"] = ["192.0.2.11/24"]
    reload(d, cfg)
    wait_until(lambda: "192.0.2.0/24" in eth0_routes(), 3.0, "eth0's route back once it is not ipshift's",
               lambda: str(eth0_routes()) + d.log()[-2000:])


def test_a_probe_change_keeps_the_verdicts(
        make_lab: Callable[..., Lab], make_daemon: Callable[..., DaemonHandle]) -> None:
    lab = make_lab()
    probe = {"targets": ["192.0.2.100"], "interval": "20ms", "misses": 3, "rises": 2}
    cfg = base_config(route=False, detect={"probe": probe}, conflict_check={"enabled": False})
    d = make_daemon(lab, cfg)
    d.wait_for(lambda s: all(s["nics"][n]["path"] == "up" for n in ("eth0", "eth1")), timeout=5.0, what="paths up")
    new = dict(cfg, detect={"probe": dict(probe, interval="30ms", misses=4)},
               announce={"count": 2, "interval": "50ms", "refresh": "1s"})
    lab.detach_nic("eth0")  # the path dies just before the reload
    reload(d, new)
    d.wait_for(lambda s: on(s, "192.0.2.10/24") == ["eth1"] and s["nics"]["eth0"]["path"] == "failed", timeout=3.0,
               what="the dead path failed after the reload")
