"""What a benchmark is, and how every benchmark is run: alternating openmailserver
and its anchor, each repetition on fresh instances in a fresh directory."""

from __future__ import annotations

import datetime
import shutil
import time
from pathlib import Path

from bench.harness.measure import wait_until_quiet
from bench.harness.procs import Processes
from bench.harness.stats import NOISY, alternating_schedule, summarise

OURS = "openmailserver"


class Benchmark:
    """Subclasses fill in the description and implement run_once()."""

    name: str = ""
    title: str = ""          # one line, for the results table
    short_title: str = ""    # for the chart
    description: str = ""    # a paragraph: what is measured, from when to when
    unit: str = ""
    higher_is_better: bool = True
    anchor: str = ""
    target_ratio: float | None = None
    debs: tuple[str, ...] = ()
    columns: dict[str, str] = {}  # extra per-run fields shown in the Markdown table: key -> heading

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

    def run_once(self, target: str, work: Path, procs: Processes, profile: Path | None = None) -> dict:
        """One measurement; returns {"value": ..., plus any extra fields}."""
        raise NotImplementedError


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(bench: Benchmark, reps: int, work: Path, profile_dir: Path | None = None, keep: bool = False,
        quiet_wait: float = 0.0) -> dict:
    """All repetitions of one benchmark; returns its entry for latest.json.

    Before each run, waits up to `quiet_wait` seconds for the machine to be idle.
    """
    runs: list[dict] = []
    bench.setup()
    try:
        for index, (rep, target) in enumerate(alternating_schedule([OURS, bench.anchor], reps), 1):
            run_dir = work / f"{bench.name}-{rep}-{target}"
            if quiet_wait and (load := wait_until_quiet(NOISY, quiet_wait)) >= NOISY:
                print(f"  note: still {load:.2f} cores busy with other work after waiting {quiet_wait:.0f}s",
                      flush=True)
            started = time.monotonic()
            with Processes() as procs:
                result = bench.run_once(target, run_dir, procs)
            result.update(rep=rep, order=index, target=target)
            runs.append(result)
            print(f"  {bench.name} rep {rep} {target:>15}: {result['value']:9.1f} {bench.unit}"
                  f"  ({time.monotonic() - started:.0f}s with start/stop)", flush=True)
            if result.get("background_cpu_cores", 0) > NOISY:
                print(f"  warning: {result['background_cpu_cores']:.2f} cores were busy with other work "
                      f"just before this run; its figure is suspect", flush=True)
            if not keep:
                shutil.rmtree(run_dir, ignore_errors=True)
        if profile_dir is not None:
            run_dir = work / f"{bench.name}-profile"
            print(f"  {bench.name}: one more {OURS} run under py-spy (not counted)", flush=True)
            with Processes() as procs:
                result = bench.run_once(OURS, run_dir, procs, profile=profile_dir)
            print(f"  {bench.name} profiled {OURS}: {result['value']:9.1f} {bench.unit}", flush=True)
            if not keep:
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        bench.teardown()
    summary = summarise(runs, OURS, bench.anchor, higher_is_better=bench.higher_is_better,
                        target_ratio=bench.target_ratio)
    return {
        "title": bench.title,
        "short_title": bench.short_title or bench.title,
        "description": bench.description,
        "date": _now(),
        "unit": bench.unit,
        "higher_is_better": bench.higher_is_better,
        "ours": OURS,
        "anchor": bench.anchor,
        "parameters": bench.parameters(),
        "command": bench.command(),
        "columns": bench.columns,
        "runs": runs,
        "summary": summary,
    }
