"""Latency summaries: exact percentiles over recorded samples (runs are small enough to keep them all)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PERCENTILES: tuple[float, ...] = (50.0, 95.0, 99.0)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(values_ms: Sequence[float]) -> dict[str, float | int]:
    """Count, p50/p95/p99, max and mean of a list of milliseconds."""
    ordered = sorted(values_ms)
    out: dict[str, float | int] = {"n": len(ordered)}
    for pct in PERCENTILES:
        out[f"p{int(pct)}"] = round(percentile(ordered, pct), 3)
    out["max"] = round(ordered[-1], 3) if ordered else math.nan
    out["mean"] = round(sum(ordered) / len(ordered), 3) if ordered else math.nan
    return out


@dataclass
class Series:
    """Samples of one latency kind, in milliseconds."""

    name: str
    values_ms: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values_ms.append(seconds * 1000.0)

    def summary(self) -> dict[str, float | int]:
        return summarize(self.values_ms)
