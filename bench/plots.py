"""PNG plots of a results dict (matplotlib, Agg backend; the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCEN_TITLES = {
    "a": "(a) carrier loss: client outage",
    "b": "(b) carrier loss: first gratuitous ARP",
    "c": "(c) path loss: client outage",
    "d": "(d) failback: client outage",
    "g": "(g) IPv6 carrier loss: client outage",
    "g_announce": "(g) IPv6 carrier loss: first unsolicited NA",
    "c_5ms": "(c') path loss, probe 5 ms x 3: client outage",
    "c_2ms": "(c') path loss, probe 2 ms x 3: client outage",
    "a_busy": "(a'') carrier loss, 2,000 more addresses elsewhere",
    "h": "(h) linkwatch-batched carrier loss: client outage",
    "i": "(i) carrier loss, status polled: client outage",
}


def scenarios_of(results: dict[str, Any]) -> dict[str, Any]:
    """results["scenarios"] with schema-1 keys renamed: there (h) was the status-polled scenario, now (i)."""
    sc: dict[str, Any] = results.get("scenarios", {})
    if results.get("schema", 1) >= 2:
        return sc
    renamed = {"h": "i", "h_announce": "i_announce"}
    return {renamed.get(k, k): v for k, v in sc.items()}


def _samples(results: dict[str, Any], scen: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, entry in scenarios_of(results).get(scen, {}).get("contenders", {}).items():
        vals = entry.get("samples") or []
        if vals:
            out[name] = [v * 1e3 for v in vals]
    return out


def outage_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Distribution per contender, one panel per scenario with samples (log scale, ms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scens = [s for s in ("a", "b", "d", "a_busy", "c", "c_5ms", "c_2ms", "g", "g_announce", "h", "i")
             if _samples(results, s)]
    if not scens:
        return None
    ncols = min(2, len(scens))
    nrows = (len(scens) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(scens):]:
        ax.set_visible(False)
    for ax, scen in zip(axes.flat, scens):
        data = _samples(results, scen)
        names = list(data)
        ax.boxplot([data[n] for n in names], whis=(5, 95), showfliers=False)
        for i, n in enumerate(names, start=1):
            vals = data[n]
            xs = [i + 0.25 * ((k * 0.618) % 1 - 0.5) for k in range(len(vals))]
            ax.scatter(xs, vals, s=9, alpha=0.6, zorder=3)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(SCEN_TITLES[scen], fontsize=10)
        ax.grid(True, which="both", axis="y", alpha=0.3)
    missing = [n for n, c in results["contenders"].items() if not c["available"]]
    note = f"not available: {', '.join(missing)}" if missing else ""
    fig.suptitle(f"ipshift bench {results['date']} ({results['machine']['cpu_model']}) {note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timeline_plot(results: dict[str, Any], path: Path) -> Path | None:
    """One failover per contender (its median trial of (a)): trigger, detection, each step,
    first announcement seen on the switch, first client reply -- one row per event."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, t) for n, t in results.get("timelines", {}).items() if t]
    if not rows:
        return None
    heights = [len(t["events"]) + 1 for _, t in rows]
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.2 + 0.24 * sum(heights) + 0.5 * len(rows)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    colors = {"detect": "tab:orange", "del": "tab:red", "DelAddress": "tab:red", "add": "tab:green",
              "AddAddress": "tab:green", "announce": "tab:purple", "Announce": "tab:purple",
              "garp seen": "tab:blue", "client reply": "black"}
    for ax, (name, tl) in zip(axes[:, 0], rows):
        events = [{"name": "trigger (carrier loss)", "t": 0.0}] + list(tl["events"])
        end = max(e["t"] for e in events) * 1e3 or 1.0
        for y, e in enumerate(events):
            t = e["t"] * 1e3
            c = colors.get(e["name"], "tab:gray")
            ax.plot([0, t], [y, y], color=c, lw=1, alpha=0.4)
            ax.plot([t], [y], "o", color=c, ms=5)
            ax.text(t + end * 0.01, y, f"{t:.2f} ms", va="center", fontsize=7)
        ax.set_yticks(range(len(events)), [e["name"] for e in events], fontsize=7)
        ax.set_ylim(len(events) - 0.5, -0.5)
        ax.set_xlim(-end * 0.02, end * 1.15)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_title(f"{name}: trial {tl['trial']}, client outage {tl['outage'] * 1e3:.1f} ms "
                     f"(steps: {tl.get('step_source', '')})", fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("ms after carrier loss (the trigger)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scale_plot(results: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = scenarios_of(results).get("e")
    if not e:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    series = {"kernel floor (ip -batch)": e.get("floor", {})}
    series.update(e.get("contenders", {}))
    drew = False
    for name, per_n in series.items():
        pts = [(int(n), v["stats"]["median"]) for n, v in per_n.items() if v.get("stats", {}).get("n")]
        if pts:
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
            drew = True
        ext = [(int(n), v["extrapolated_s"]) for n, v in per_n.items() if v.get("extrapolated_s")]
        if ext:
            ax.plot([p[0] for p in ext], [p[1] for p in ext], "x", color="gray")
    if not drew:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("addresses moved (plus one route per 10)")
    ax.set_ylabel("s, carrier loss -> last address announced (median)")
    ax.set_title("(e) scale (x: extrapolated, over time budget)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
