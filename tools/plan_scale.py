"""Planning cost of a failover on a gateway that carries many addresses elsewhere (a profile, not a test).

Builds a Config and Snapshot with 4 NICs: eth0/eth1 carry the service address 192.0.2.50/24 and
their bases; eth2/eth3 carry N addresses of 198.18.0.0/16 on eth2 (backups [eth3]). eth0 loses its
carrier; this times ``converge(...)`` (and, with --profile, shows where the time goes), and the
view's path from the link event to the snapshot the planner reads.

    .venv/bin/python tools/plan_scale.py [--n 2000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import ipaddress
import pstats
import time
from dataclasses import replace

import yaml

from ipshift.config import parse_config
from ipshift.model import Address, KernelFeatures, Link, Snapshot
from ipshift.plan import converge
from ipshift.view import KernelView


def build(n: int) -> tuple[object, Snapshot]:
    net = ipaddress.ip_network("198.18.0.0/16")
    many = [f"{net[i + 10]}/16" for i in range(n)]
    data = {
        "interfaces": {
            "eth0": {"addresses": ["192.0.2.50/24"], "backups": ["eth1"]},
            "eth1": {"addresses": ["192.0.2.11/24"], "backups": ["eth0"]},
            "eth2": {"addresses": ["198.18.0.2/16", *many], "backups": ["eth3"]},
            "eth3": {"addresses": ["198.18.0.3/16"], "backups": ["eth2"]},
        },
        "conflict_check": {"enabled": False},
        "state_dir": "/tmp/ipshift-plan-scale",
    }
    config = parse_config(yaml.safe_dump(data), "plan_scale.yaml")
    links = tuple(Link(name=f"eth{i}", index=i + 2, mac=f"02:00:00:00:00:0{i + 1}", admin_up=True,
                       carrier=True, operstate="UP", kind="veth") for i in range(4))
    addrs = [("eth0", "192.0.2.10/24"), ("eth0", "192.0.2.50/24"), ("eth1", "192.0.2.11/24"),
             ("eth2", "198.18.0.2/16"), ("eth3", "198.18.0.3/16"), *(("eth2", a) for a in many)]
    snap = Snapshot(links=links, addresses=tuple(Address(ifname=d, interface=ipaddress.ip_interface(a))
                                                 for d, a in addrs),
                    features=KernelFeatures(vlan_8021q=False, macvlan=True))
    return config, snap


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    config, snap = build(args.n)
    view = KernelView(lambda: snap)
    view.load(snap)
    usable = {"eth0": False, "eth1": True, "eth2": True, "eth3": True}
    down = replace(view.link("eth0"), carrier=False, operstate="LOWERLAYERDOWN")  # type: ignore[type-var]

    def event_to_plans() -> list[object]:
        view.apply_link(down)  # the link event, as the daemon applies it
        s = view.snapshot()
        return list(converge(config, s, usable))  # type: ignore[arg-type]

    plans = event_to_plans()
    print(f"N={args.n}: {len(plans)} plan(s):",
          [(p.failed, len(p.moves), len(p.refusals)) for p in plans])  # type: ignore[attr-defined]
    times = []
    for _ in range(args.repeat):
        view.load(snap)  # every round starts from a fresh view, as after a re-read
        view.snapshot()
        t = time.perf_counter()
        event_to_plans()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(f"event -> plans: median {times[len(times) // 2]:.2f} ms, min {times[0]:.2f} ms")
    if args.profile:
        view.load(snap)
        view.snapshot()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            view.load(snap)
            event_to_plans()
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
