"""What a benchmark is, and how every benchmark is run: alternating openmailserver
and its anchor, each repetition on fresh instances in a fresh directory."""

from __future__ import annotations

import abc
import datetime
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.harness.measure import wait_until_quiet
from bench.harness.procs import Processes
from bench.harness.stats import NOISY, alternating_schedule, summarise

OURS = "openmailserver"


@dataclass(frozen=True)
class Metric:
    """One figure a benchmark reports: `key` of each run's result."""

    key: str
    title: str               # what it is, e.g. "UID FETCH 1:* BODY.PEEK[]"
    unit: str
    higher_is_better: bool = True
    anchored: bool = True    # the anchor reports it too (else: our absolute figure only)
    target_ratio: float | None = None  # ours must be this many times better than the anchor
    target_value: float | None = None  # absolute bound on ours: floor if higher is better, else ceiling


class Benchmark(abc.ABC):
    """Subclasses fill in the description and implement run_once()."""

    name: str = ""
    title: str = ""          # one line, for the results table
    short_title: str = ""    # for the chart
    description: str = ""    # a paragraph: what is measured, from when to when
    anchor: str | None = ""  # None: no anchor, our absolute figures only
    metrics: tuple[Metric, ...] = ()
    debs: tuple[str, ...] = ()
    columns: dict[str, str] = {}  # extra per-run fields shown in the Markdown table: key -> heading
    profiles: bool = True    # run_once() can attach py-spy to our daemon (--profile)

    def versions(self) -> dict[str, str | None]:
        """Versions of the anchor software, for the machine description."""
        return {}

    def parameters(self) -> dict:
        return {}

    def command(self) -> str:
        """The load generator's command line, as documentation."""
        return ""

    def setup(self) -> None:
        """Shared resources for all repetitions (e.g. a DNS server)."""

    def teardown(self) -> None:
        pass

    @abc.abstractmethod
    def run_once(self, target: str, work: Path, procs: Processes, profile: Path | None = None) -> dict:
        """One measurement; returns {metric key: value, ..., plus any extra fields}."""


class Check(abc.ABC):
    """Not a comparison: a test suite run bigger than in `make test`, recorded as pass/fail and counts."""

    name: str = ""
    title: str = ""
    description: str = ""

    @abc.abstractmethod
    def run(self, work: Path) -> dict:
        """Run the suite; returns its outcome and counts."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _figures(bench: Benchmark, result: dict) -> str:
    return ", ".join(f"{metric.key} {result[metric.key]:,.4g} {metric.unit}" for metric in bench.metrics
                     if result.get(metric.key) is not None)


def run(bench: Benchmark, reps: int, work: Path, profile_dir: Path | None = None, keep: bool = False,
        quiet_wait: float = 0.0) -> dict:
    """All repetitions of one benchmark; returns its entry for latest.json.

    Before each run, waits up to `quiet_wait` seconds for the machine to be idle.
    """
    runs: list[dict] = []
    targets = [OURS, bench.anchor] if bench.anchor else [OURS]
    bench.setup()
    try:
        for index, (rep, target) in enumerate(alternating_schedule(targets, reps), 1):
            run_dir = work / f"{bench.name}-{rep}-{target}"
            if quiet_wait and (load := wait_until_quiet(NOISY, quiet_wait)) >= NOISY:
                print(f"  note: still {load:.2f} cores busy with other work after waiting {quiet_wait:.0f}s",
                      flush=True)
            started = time.monotonic()
            with Processes() as procs:
                result = bench.run_once(target, run_dir, procs)
            result.update(rep=rep, order=index, target=target)
            runs.append(result)
            print(f"  {bench.name} rep {rep} {target:>15}: {_figures(bench, result)}"
                  f"  ({time.monotonic() - started:.0f}s with start/stop)", flush=True)
            if result.get("background_cpu_cores", 0) > NOISY:
                print(f"  warning: {result['background_cpu_cores']:.2f} cores were busy with other work "
                      f"just before this run; its figure is suspect", flush=True)
            if not keep:
                shutil.rmtree(run_dir, ignore_errors=True)
        if profile_dir is not None and not bench.profiles:
            print(f"  {bench.name}: not profiled (its load is connections held open or single deliveries)",
                  flush=True)
        elif profile_dir is not None:
            run_dir = work / f"{bench.name}-profile"
            print(f"  {bench.name}: one more {OURS} run under py-spy (not counted)", flush=True)
            with Processes() as procs:
                result = bench.run_once(OURS, run_dir, procs, profile=profile_dir)
            print(f"  {bench.name} profiled {OURS}: {_figures(bench, result)}", flush=True)
            if not keep:
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        bench.teardown()
    metrics = []
    for metric in bench.metrics:
        summary = summarise(runs, OURS, bench.anchor or None, key=metric.key,
                            higher_is_better=metric.higher_is_better, target_ratio=metric.target_ratio,
                            target_value=metric.target_value, anchored=metric.anchored)
        metrics.append({**asdict(metric), "anchored": metric.anchored and bool(bench.anchor), "summary": summary})
    return {
        "title": bench.title,
        "short_title": bench.short_title or bench.title,
        "description": bench.description,
        "date": _now(),
        "ours": OURS,
        "anchor": bench.anchor or None,
        "parameters": bench.parameters(),
        "command": bench.command(),
        "columns": bench.columns,
        "metrics": metrics,
        "runs": runs,
    }


def run_check(check: Check, work: Path, keep: bool = False) -> dict:
    """One check; returns its entry for latest.json."""
    run_dir = work / check.name
    run_dir.mkdir(parents=True)
    started = time.monotonic()
    try:
        result = check.run(run_dir)
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    return {"title": check.title, "description": check.description, "date": _now(),
            "seconds": round(time.monotonic() - started, 1), **result}
