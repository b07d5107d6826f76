"""Rendering plans for people and for programs (pure: values in, text or dicts out)."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from ipshift.config import Config
from ipshift.journal import route_to_doc
from ipshift.model import Route, Snapshot
from ipshift.plan import Candidate, Plan
from ipshift.policy import Warning
from ipshift.steps import Step


def _plain(value: Any) -> Any:
    if isinstance(value, Route):
        return route_to_doc(value)
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Interface,
                          ipaddress.IPv6Interface, ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def step_dict(step: Step) -> dict[str, Any]:
    fields = {f.name: _plain(getattr(step, f.name)) for f in dataclasses.fields(step)}
    return {"op": type(step).__name__, "text": step.describe(), **fields}


def candidate_dict(c: Candidate) -> dict[str, Any]:
    return {"nic": c.nic, "failures": [{"code": f.code, "reason": f.reason} for f in c.failures]}


def plan_dict(plan: Plan, snapshot: Snapshot) -> dict[str, Any]:
    link = snapshot.link(plan.failed)
    addresses: list[dict[str, Any]] = []
    for m in plan.moves:
        addresses.append({
            "address": str(m.interface), "home": m.home, "source": m.source,
            "survivor": m.survivor, "device": m.target,
            "steps": [step_dict(s) for s in m.steps],
            "passed_over": [candidate_dict(c) for c in m.passed_over],
        })
    for r in plan.refusals:
        addresses.append({
            "address": str(r.interface), "home": r.home, "source": r.source,
            "survivor": None, "refused": [candidate_dict(c) for c in r.candidates],
            "codes": sorted(r.codes()), "reason": r.reason,
        })
    return {
        "nic": plan.failed,
        "link": None if link is None else {
            "exists": True, "admin_up": link.admin_up, "carrier": link.carrier,
            "operstate": link.operstate, "mac": link.mac,
        },
        "prelude": [step_dict(s) for s in plan.prelude],
        "postlude": [step_dict(s) for s in plan.postlude],
        "addresses": addresses,
    }


def check_dict(config_path: str, netns: str | None, plans: list[Plan], warnings: list[Warning],
               snapshot: Snapshot) -> dict[str, Any]:
    stranded = sum(len(p.refusals) for p in plans)
    return {
        "config": config_path,
        "netns": netns,
        "kernel": {"vlan_8021q": snapshot.features.vlan_8021q, "macvlan": snapshot.features.macvlan},
        "nics": [plan_dict(p, snapshot) for p in plans],
        "warnings": [{"code": w.code, "nic": w.nic, "message": w.message} for w in warnings],
        "stranded": stranded,
        "ok": stranded == 0,
    }


def check_text(config: Config, config_path: str, netns: str | None, plans: list[Plan],
               warnings: list[Warning], snapshot: Snapshot, *, verbose: bool = True) -> str:
    out: list[str] = []
    where = f" in netns {netns}" if netns else ""
    out.append(f"ipshift check: {config_path}{where}")
    for plan in plans:
        link = snapshot.link(plan.failed)
        state = "missing" if link is None else ("up" if link.healthy else
                                                ("no carrier" if link.admin_up else "admin down"))
        out.append("")
        out.append(f"if {plan.failed} failed now ({plan.failed} is {state}):")
        if not plan.moves and not plan.refusals:
            out.append("  no addresses to move")
        for m in plan.moves:
            via = f" (device {m.target})" if m.target != m.survivor else ""
            out.append(f"  {str(m.interface):<28} -> {m.survivor}{via}")
            for c in m.passed_over:
                for f in c.failures:
                    out.append(f"      passed over {c.nic}: [{f.code}] {f.reason}")
            if verbose:
                for i, s in enumerate(m.steps, 1):
                    out.append(f"      {i:>2}. {s.describe()}")
        if verbose and plan.moves:
            for s in plan.postlude:
                out.append(f"  then: {s.describe()}")
        for r in plan.refusals:
            out.append(f"  {str(r.interface):<28} REFUSED: {', '.join(sorted(r.codes())) or 'no candidate'}")
            if r.reason:
                out.append(f"      {r.reason}")
            for c in r.candidates:
                for f in c.failures:
                    out.append(f"      {c.nic}: [{f.code}] {f.reason}")
    if warnings:
        out.append("")
        out.append("warnings:")
        for w in warnings:
            out.append(f"  [{w.code}] {w.message}")
    stranded = sum(len(p.refusals) for p in plans)
    out.append("")
    out.append("result: every address has a survivor" if stranded == 0
               else f"result: {stranded} address(es) would be stranded")
    return "\n".join(out)


def _when(ts: float | None) -> str:
    import time

    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def record_text(rec: dict[str, Any]) -> str:
    """One failover/failback record, step by step with durations."""
    out = [f"#{rec['id']} {rec['kind']} of {rec['nic']} at {_when(rec.get('started'))} "
           f"(trigger: {rec['trigger']}), {rec.get('total_ms', 0.0):.2f} ms in all"]
    verification = rec.get("verification") or {}
    checked = verification.get("moves") or {}
    for m in rec.get("moves", []):
        state = "ok" if m["ok"] else f"FAILED: {m['error']}"
        first = m.get("first_announce_ms")
        fa = f", first announcement at {first:.2f} ms" if first is not None else ""
        v = checked.get(m["address"])
        if v is not None:
            fa += (f", confirmed by {v['by']} at {v['at_ms']:.1f} ms" if v["result"] == "confirmed"
                   else f", unconfirmed ({v['detail']})")
        elif m["ok"] and verification.get("state") == "checking":
            fa += ", verifying"
        out.append(f"  {m['address']}: {m['source']} -> {m['device']} {state}{fa}")
        for s in m.get("steps", []):
            mark = "" if s["ok"] else f"  FAILED: {s['error']}"
            undo = "undo: " if s.get("undo") else ""
            out.append(f"      +{s['at_ms']:8.3f} ms {s['ms']:8.3f} ms  {undo}{s['text']}{mark}")
    for s in rec.get("nic_steps", []):
        out.append(f"  then +{s['at_ms']:8.3f} ms {s['ms']:8.3f} ms  {s['text']}")
    for r in rec.get("refused", []):
        out.append(f"  {r['address']}: stays ({'; '.join(r['reasons'])})")
    return "\n".join(out)


def status_text(status: dict[str, Any]) -> str:
    out = [f"ipshift (pid {status.get('pid')}), config {status.get('config')}, failback {status.get('failback')}"]
    if status.get("ready") is False:
        out.append("starting: still converging to the configured placement")
    out.append("")
    out.append("NICs:")
    for nic, n in status.get("nics", {}).items():
        link = n.get("link") or {}
        carrier = "carrier" if link.get("carrier") else "no carrier"
        reason = f" ({n['reason']})" if n.get("reason") else ""
        out.append(f"  {nic:<10} {n['state']:<10} since {_when(n.get('since'))}  {carrier}{reason}")
    out.append("")
    out.append("addresses:")
    for addr, a in status.get("addresses", {}).items():
        on = ", ".join(a["on"]) or "NOWHERE"
        away = "" if a["on"] == [a["home"]] else f" (home {a['home']})"
        since = f" since {_when(a['since'])}" if a.get("since") else ""
        out.append(f"  {addr:<28} on {on}{away}{since}")
    recs = status.get("failovers", [])
    if recs:
        out.append("")
        out.append("last failovers:")
        for rec in recs[-5:]:
            out.append(record_text(rec))
    return "\n".join(out)
