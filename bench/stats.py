"""Summary statistics and formatting for the benchmark (no third-party packages)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: Sequence[float], censored: int = 0) -> dict[str, Any]:
    """min / median / p95 / max / mean over ``values`` (seconds), plus counts."""
    v = sorted(values)
    if not v:
        return {"n": 0, "censored": censored}
    n = len(v)
    median = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return {
        "n": n,
        "censored": censored,
        "min": v[0],
        "median": median,
        "p95": percentile(v, 95),
        "max": v[-1],
        "mean": sum(v) / n,
    }


def fmt_seconds(x: float | None) -> str:
    """Human-scaled duration: 812 us, 6.1 ms, 3.42 s."""
    if x is None:
        return "-"
    if x < 0.001:
        return f"{x * 1e6:.0f} us"
    if x < 1:
        return f"{x * 1e3:.3g} ms" if x < 0.1 else f"{x * 1e3:.0f} ms"
    return f"{x:.3g} s"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as a factor, with the reading spelled out: 0.05x (20x faster)."""
    if a is None or b is None or b <= 0 or a <= 0:
        return "-"
    r = a / b
    if 0.95 <= r <= 1.05:
        return f"{r:.2g}x (same)"
    if r < 1:
        return f"{r:.2g}x ({1 / r:.3g}x faster)"
    if r > 1:
        return f"{r:.3g}x (slower)"
    return "1x"
