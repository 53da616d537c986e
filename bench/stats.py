"""Summaries of repeated runs (seeds) for the benchmarks' tables; no torch needed."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value: there is no spread to show) and
    the number of ``values``, with the values."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": list(values)}


def fmt_mean_std(stat: dict[str, Any] | None) -> str:
    """``"61.2 ± 1.4"``, ``"61.2"`` for one value, ``"–"`` for none."""
    if not stat or stat.get("mean") is None:
        return "–"
    std = stat.get("std")
    return f"{stat['mean']:.1f} ± {std:.1f}" if std is not None else f"{stat['mean']:.1f}"
