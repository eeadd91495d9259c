"""Pure bookkeeping: the alternating run order, percentiles, and the summary of repetitions."""

from __future__ import annotations

import math
import statistics
from typing import Sequence

# Cores busy with other work just before a run above which its figure is flagged.
NOISY = 0.25


def alternating_schedule(targets: list[str], reps: int) -> list[tuple[int, str]]:
    """(repetition, target) pairs, alternating which target goes first (A B, B A, A B, ...)

    so that neither target always runs on a machine warmed (or dirtied) by the other.
    """
    if reps < 1:
        raise ValueError("at least one repetition")
    order: list[tuple[int, str]] = []
    for rep in range(1, reps + 1):
        round_ = targets if rep % 2 else list(reversed(targets))
        order.extend((rep, target) for target in round_)
    return order


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(runs: list[dict], ours: str, anchor: str | None, *, key: str = "value",
              higher_is_better: bool = True, target_ratio: float | None = None,
              target_value: float | None = None, anchored: bool = True) -> dict:
    """Medians per target of one measure (`key` of each run) and the ratio ours/anchor of the medians.

    `runs` are dicts with at least "target" and `key`. With no anchor, or a measure the
    anchor does not report (`anchored=False`), there is no ratio. `advantage` is how
    many times better ours is whichever way the measure points (rate: ours/anchor;
    time or memory: anchor/ours); `target_ratio` applies to it. `target_value` is an
    absolute bound on our median: a floor when higher is better, a ceiling otherwise.
    """
    per_target: dict[str, dict] = {}
    for name in (ours, anchor if anchored else None):
        if name is None:
            continue
        values = [run[key] for run in runs if run["target"] == name and run.get(key) is not None]
        if not values:
            raise ValueError(f"no runs for {name} with {key}")
        per_target[name] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "values": values,
        }
    ours_median = per_target[ours]["median"]
    anchor_median = per_target[anchor]["median"] if anchor in per_target else None
    ratio = ours_median / anchor_median if anchor_median else None
    if ratio is None:
        advantage = None
    elif higher_is_better:
        advantage = ratio
    else:
        advantage = 1 / ratio if ours_median else None
    checks = []
    if target_ratio is not None:
        checks.append(None if advantage is None else advantage >= target_ratio)
    if target_value is not None:
        checks.append(ours_median >= target_value if higher_is_better else ours_median <= target_value)
    return {
        "targets": per_target,
        "ratio": _round(ratio),
        "advantage": _round(advantage),
        "target_ratio": target_ratio,
        "target_value": target_value,
        "meets_target": None if not checks or None in checks else all(checks),
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def noisy_runs(runs: list[dict]) -> list[dict]:
    """Runs that started while other work kept the machine busy."""
    return [run for run in runs if (run.get("background_cpu_cores") or 0) > NOISY]
