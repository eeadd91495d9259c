"""Pure bookkeeping: the alternating run order and the summary of repetitions."""

from __future__ import annotations

import statistics

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


def summarise(runs: list[dict], ours: str, anchor: str, *, higher_is_better: bool = True,
              target_ratio: float | None = None) -> dict:
    """Medians per target and the ratio ours/anchor of the medians.

    `runs` are dicts with at least "target" and "value". `advantage` is how many
    times better ours is whichever way the metric points (rate: ours/anchor;
    latency or memory: anchor/ours); the target, when given, applies to it.
    """
    per_target: dict[str, dict] = {}
    for name in (ours, anchor):
        values = [run["value"] for run in runs if run["target"] == name]
        if not values:
            raise ValueError(f"no runs for {name}")
        per_target[name] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "values": values,
        }
    ours_median, anchor_median = per_target[ours]["median"], per_target[anchor]["median"]
    ratio = ours_median / anchor_median if anchor_median else None
    if ratio is None or ours_median == 0:
        advantage = ratio if higher_is_better else None
    else:
        advantage = ratio if higher_is_better else 1 / ratio
    summary = {
        "targets": per_target,
        "ratio": _round(ratio),
        "advantage": _round(advantage),
        "target_ratio": target_ratio,
        "meets_target": None if target_ratio is None or advantage is None else advantage >= target_ratio,
    }
    return summary


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def noisy_runs(runs: list[dict]) -> list[dict]:
    """Runs that started while other work kept the machine busy."""
    return [run for run in runs if (run.get("background_cpu_cores") or 0) > NOISY]
