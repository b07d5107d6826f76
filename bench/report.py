"""The Markdown report of a results dict (bench/run.py prints it; no third-party packages).

Every table names the ipshift configuration of its rows: a line under the table per ipshift
row ("config of ...: ..."), taken from the contender's ``config_note`` as recorded in the JSON.
Ratio columns compare the reference rows (``ipshift`` and ``ipshift-nocheck``; in (h) the polled
ipshift) with every row of the same table.
"""

from __future__ import annotations

from typing import Any

from stats import fmt_seconds, ratio

SCALE_NS = (1, 100, 1000, 10_000)
REFS = ("ipshift", "ipshift-nocheck")
TITLES = {
    "a": "(a) carrier loss -> client traffic restored (longest gap between replies)",
    "a_busy": "(a'') (a) on a gateway that also carries 2,000 addresses on eth2 (backups eth3) -> client traffic "
              "restored",
    "a_busy_announce": "(a'') the same -> first gratuitous ARP seen on the switch",
    "b": "(b) carrier loss -> first gratuitous ARP seen on the switch",
    "c": "(c) path loss, carrier up (peer detached from the bridge), detect.probe 10 ms x 3 -> client traffic restored",
    "c_5ms": "(c') path loss, detect.probe 5 ms x 3 -> client traffic restored",
    "c_2ms": "(c') path loss, detect.probe 2 ms x 3 -> client traffic restored",
    "d": "(d) failback: home NIC returns -> longest client gap",
    "g": "(g) IPv6 carrier loss -> client ping6 restored (longest gap between replies; compare (a))",
    "g_announce": "(g) IPv6 carrier loss -> first unsolicited neighbour advertisement seen on the switch "
                  "(compare (b))",
    "h": "(h) carrier loss batched by linkwatch (non-urgent, as on a physical NIC), 200 ms after another link "
         "event -> client traffic restored",
    "h_announce": "(h) the same -> first gratuitous ARP seen on the switch",
    "i": "(i) carrier loss while `ipshift status` is polled in a loop, 50,000 moves kept -> client traffic "
         "restored (compare (a))",
    "i_announce": "(i) the same -> first gratuitous ARP seen on the switch (compare (b))",
}
ORDER = ("a", "b", "d", "a_busy", "a_busy_announce", "c", "c_5ms", "c_2ms", "g", "g_announce", "h", "h_announce",
         "i", "i_announce")


def label_of(results: dict[str, Any], key: str, entry: dict[str, Any]) -> str:
    if entry.get("label"):
        return str(entry["label"])
    return str(results["contenders"].get(key, {}).get("label", key))


def median(entry: dict[str, Any] | None) -> float | None:
    st = (entry or {}).get("stats") or {}
    return st.get("median") if st.get("n") else None


def config_lines(results: dict[str, Any], entries: dict[str, Any]) -> list[str]:
    out = [f"config of {label_of(results, k, e)}: {e['config']}" for k, e in entries.items() if e.get("config")]
    return ["", *(f"* {line}" for line in out)] if out else []


def cycle_table(results: dict[str, Any], scen: str) -> list[str]:
    entry = results["scenarios"][scen]
    rows: dict[str, Any] = entry["contenders"]
    refs = [k for k in rows if k.endswith("+poll10ms")] if scen.startswith("h") else []
    refs += [k for k in REFS if k in rows]
    refs = [k for k in refs if median(rows[k]) is not None][:2]
    head = "| contender | n | min | median | p95 | max |" + "".join(f" {k} / this |" for k in refs)
    lines = [f"### {TITLES[scen]}", "", head, "|---|---|---|---|---|---|" + "---|" * len(refs)]
    for key, e in rows.items():
        label = label_of(results, key, e)
        st = e.get("stats")
        if not st or not st.get("n"):
            lines.append(f"| {label} | - | {e.get('status', '-')} | | | |" + " |" * len(refs))
            continue
        cens = f" (+{st['censored']} not restored)" if st.get("censored") else ""
        if st.get("prober_late_excluded"):
            cens += f" (+{st['prober_late_excluded']} left out: prober late)"
        cells = ["-" if k == key else ratio(median(rows[k]), st["median"]) for k in refs]
        lines.append(f"| {label} | {st['n']}{cens} | {fmt_seconds(st['min'])} | {fmt_seconds(st['median'])} | "
                     f"{fmt_seconds(st['p95'])} | {fmt_seconds(st['max'])} |" + "".join(f" {c} |" for c in cells))
    if scen == "h":
        waits = [e["pre_event_wait"]["median"] for e in rows.values() if e.get("pre_event_wait", {}).get("n")]
        if waits:
            lines += ["", f"The other link event (lw0) reached the gateway a median {fmt_seconds(min(waits))} to "
                      f"{fmt_seconds(max(waits))} after its flip; the trigger came 200 ms after that, so linkwatch "
                      "holds eth0's carrier loss up to ~800 ms (less when something else on the machine flushes "
                      "linkwatch's queue, e.g. a device being deleted in another namespace)."]
    return lines + config_lines(results, rows) + [""]


def side_by_side(results: dict[str, Any]) -> list[str]:
    """IPv4 (a)/(b) beside IPv6 (g): the median of each, per contender."""
    sc = results["scenarios"]
    if "g" not in sc or "a" not in sc:
        return []

    def med(scen: str, name: str) -> str:
        e = sc.get(scen, {}).get("contenders", {}).get(name, {})
        m = median(e)
        return fmt_seconds(m) if m is not None else str(e.get("status", "-"))

    lines = ["### carrier loss, IPv4 beside IPv6 (medians)", "",
             "| contender | outage IPv4 (a) | outage IPv6 (g) | first announcement IPv4 (b) | first announcement IPv6 (g) |",
             "|---|---|---|---|---|"]
    for name, e in sc["g"]["contenders"].items():
        lines.append(f"| {label_of(results, name, e)} | {med('a', name)} | {med('g', name)} | "
                     f"{med('b', name)} | {med('g_announce', name)} |")
    return lines + [""]


def busy_beside(results: dict[str, Any]) -> list[str]:
    """(a'') beside (a): the cost of what the gateway holds elsewhere."""
    sc = results["scenarios"]
    if "a_busy" not in sc:
        return []
    lines = ["### (a'') beside (a): outage medians, small gateway vs 2,000 more addresses on eth2/eth3", "",
             "| contender | (a) | (a'') | (a'') - (a) |", "|---|---|---|---|"]
    for key, e in sc["a_busy"]["contenders"].items():
        a, b = median(sc.get("a", {}).get("contenders", {}).get(key)), median(e)
        diff = f"{(b - a) * 1e3:+.1f} ms" if a is not None and b is not None else "-"
        lines.append(f"| {label_of(results, key, e)} | {fmt_seconds(a)} | {fmt_seconds(b) if b is not None else e.get('status', '-')} | {diff} |")
    return lines + [""]


def path_summary(results: dict[str, Any]) -> list[str]:
    """(c) and (c'): the median outage per probe interval."""
    sc = results["scenarios"]
    keys = [k for k in ("c", "c_5ms", "c_2ms") if k in sc]
    if len(keys) < 2:
        return []
    names = list(dict.fromkeys(k for key in keys for k in sc[key]["contenders"]))
    ivs = {"c": "10 ms", "c_5ms": "5 ms", "c_2ms": "2 ms"}
    lines = ["### (c) and (c'): path loss, median outage per probe interval (x 3 misses)", "",
             "| contender | " + " | ".join(ivs[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for name in names:
        cells = []
        for k in keys:
            e = sc[k]["contenders"].get(name, {})
            m = median(e)
            cells.append(f"{fmt_seconds(m)} (n={e['stats']['n']})" if m is not None else str(e.get("status", "-"))[:60])
        label = label_of(results, name, sc[keys[0]]["contenders"].get(name, {}))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def scale_table(results: dict[str, Any]) -> list[str]:
    e = results["scenarios"].get("e")
    if not e:
        return []
    ns = [str(n) for n in SCALE_NS]
    floor = {n: median(e["floor"].get(n)) for n in ns}
    lines = ["### (e) scale: carrier loss -> last address on the survivor and announced (median, n trials, "
             "ratio to the kernel floor of the same N)", "",
             "| contender | " + " | ".join(f"N={int(n):,}" for n in ns) + " |", "|---|" + "---|" * len(ns)]

    def cell(v: dict[str, Any], n: str, is_floor: bool = False) -> str:
        st = v.get("stats")
        if st and st.get("n"):
            f = floor.get(n)
            rel = "" if is_floor or not f else f", {st['median'] / f:.2g}x floor"
            return f"{fmt_seconds(st['median'])} (n={st['n']}{rel})"
        if v.get("extrapolated_s"):
            return f"skipped: over time budget (~{fmt_seconds(v['extrapolated_s'])} per trial, extrapolated)"
        if st is not None and v.get("notes"):
            return f"{v.get('status')} ({st.get('censored', 0)} trials: {v['notes'][0][:80]})"
        return str(v.get("status", "-"))

    lines.append("| kernel floor: `ip -batch` (same deletes/adds, no detection or announce) | "
                 + " | ".join(cell(e["floor"].get(n, {}), n, True) for n in ns) + " |")
    for name, per_n in e["contenders"].items():
        lines.append(f"| {results['contenders'][name]['label']} | "
                     + " | ".join(cell(per_n.get(n, {}), n) for n in ns) + " |")
    notes = {name: results["contenders"][name].get("config_scale") for name in e["contenders"]}
    lines += [f"* config of {results['contenders'][k]['label']}: {v}" for k, v in notes.items() if v]
    return lines + [""]


def idle_tables(results: dict[str, Any]) -> list[str]:
    f = results["scenarios"].get("f")
    if not f:
        return []
    lines = ["### (f) idle cost, 2 NICs and 100 addresses (the gateway's processes)", "",
             "| contender | seconds | CPU % | RSS MiB | wake-ups/s |", "|---|---|---|---|---|"]
    for key, v in f["contenders"].items():
        label = label_of(results, key, v)
        if v.get("status") != "ok":
            lines.append(f"| {label} | {v.get('status')} | | | |")
        else:
            lines.append(f"| {label} | {v['duration_s']:.0f} | {v['cpu_percent']:.2f} | {v['rss_mib']:.1f} | "
                         f"{v['wakeups_per_s']:.1f} |")
    lines += config_lines(results, f["contenders"]) + [""]
    mem = f.get("memory", {})
    for key, v in mem.items():
        n = v.get("addresses", 0)
        lines += [f"### (f) memory: {label_of(results, key, v)} with {n:,} addresses after one failover and one "
                  "failback", ""]
        if v.get("status") != "ok":
            lines += [f"{v.get('status')}", ""]
            continue
        lines += ["| RSS at start | after failover | after failback (settled) | peak (VmHWM) | failover / failback "
                  "| idle CPU % after | wake-ups/s after |", "|---|---|---|---|---|---|---|",
                  f"| {v['rss_mib_start']:.1f} MiB | {v['rss_mib_after_failover']:.1f} MiB | {v['rss_mib']:.1f} MiB | "
                  f"{v.get('rss_peak_mib', 0):.1f} MiB | {v['failover_s']:.2f} s / {v['failback_s']:.2f} s | "
                  f"{v['cpu_percent']:.2f} | {v['wakeups_per_s']:.1f} |", "", f"* config: {v.get('config')}", ""]
    return lines


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"## ipshift bench {results['date']} ({'quick' if results['quick'] else 'full'})", "",
             f"{m['cpu_model']}, {m['nproc']} CPUs, Linux {m['uname_r']}; probes every 1 ms; "
             f"times from the trigger (switch port down).", ""]
    for scen in ORDER:
        if scen in results["scenarios"]:
            lines += cycle_table(results, scen)
            if scen == "a_busy_announce":
                lines += busy_beside(results)
            if scen == "c_2ms" or (scen == "c_5ms" and "c_2ms" not in results["scenarios"]):
                lines += path_summary(results)
    lines += side_by_side(results)
    lines += scale_table(results)
    lines += idle_tables(results)
    return "\n".join(lines)
