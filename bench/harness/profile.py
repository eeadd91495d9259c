"""Profiling our daemon under benchmark load with py-spy, and reading the result.

`PySpy` attaches `py-spy record --format raw --threads --nonblocking` to a pid
and stops it with SIGINT (py-spy then writes its file). With `gil` (the
default) only the thread holding the GIL is sampled, which shows where the one
core that Python code can use goes. Alongside, the kernel's per-thread CPU
accounting says how much CPU each thread group (event loop, executor, SQLite
writer...) used. `summarise()` turns the collapsed stacks into a plain-text
report: the functions that take the samples, inclusive and self, in percent.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from bench.harness.procs import Processes

RATE = 200  # samples per second
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ENTRY_FRAMES = re.compile(
    r"\((<frozen runpy>|typer/[^)]*|click/[^)]*|asyncio/runners\.py|threading\.py|openmailserver/__main__\.py|"
    r"openmailserver/cli\.py)\)$|^(run \(openmailserver/daemon\.py\)|_worker \(concurrent/futures/thread\.py\))$")
_THREAD = re.compile(r"^thread \((?:0x)?[0-9a-fA-F]+\)(?::\s*(?P<name>.*))?$")
_LINE = re.compile(r":\d+\)$")


def py_spy_path() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: pip install -c constraints.txt -e '.[bench]'")
    return found


class PySpy:
    def __init__(self, procs: Processes, pid: int, output: Path, rate: int = RATE, gil: bool = True) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output, self.rate, self.procs, self.gil = output, rate, procs, gil
        self.proc = procs.spawn([py_spy_path(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                 "--threads", "--nonblocking", *(["--gil"] if gil else []), "--output", output],
                                log=output.with_suffix(".log"))
        self.pid = pid
        self.cpu_before = thread_times(pid)
        self.started = time.monotonic()
        self.seconds = 0.0

    def stop(self) -> Path:
        self.seconds = time.monotonic() - self.started
        cpu = thread_cpu(self.cpu_before, thread_times(self.pid), thread_names(self.pid))
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.procs.stop(self.proc)
        summary = cpu_table(cpu, self.seconds) + "\n" + summarise(self.output.read_text(), self.seconds, self.rate,
                                                                 self.gil)
        self.output.with_suffix(".txt").write_text(summary)
        print(summary, flush=True)
        return self.output


def thread_times(pid: int) -> dict[str, tuple[float, float]]:
    """User and system CPU seconds of each thread of a process, by thread id."""
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        times[tid] = (int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS)
    return times


def thread_names(pid: int) -> dict[str, str]:
    """Python thread names by thread id, from `py-spy dump` (the OS names are all "python")."""
    result = subprocess.run([py_spy_path(), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    return dict(re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', result.stdout, re.M))


def thread_cpu(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
               names: dict[str, str]) -> dict[str, dict[str, float]]:
    """CPU seconds per thread group between two thread_times() snapshots."""
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"threads": 0, "user": 0.0, "system": 0.0})
    for tid, (user, system) in after.items():
        user0, system0 = before.get(tid, (0.0, 0.0))
        group = groups[thread_group(names.get(tid, "(unnamed native thread)"))]
        group["threads"] += 1
        group["user"] += user - user0
        group["system"] += system - system0
    return dict(groups)


def cpu_table(groups: dict[str, dict[str, float]], seconds: float) -> str:
    """Where the daemon's CPU went, from the kernel's per-thread accounting."""
    total = sum(g["user"] + g["system"] for g in groups.values())
    lines = [f"daemon CPU over {seconds:.1f}s: {total:.2f}s = {total / seconds:.2f} cores "
             f"(user {sum(g['user'] for g in groups.values()):.2f}s, "
             f"system {sum(g['system'] for g in groups.values()):.2f}s)"]
    for name, g in sorted(groups.items(), key=lambda kv: -(kv[1]["user"] + kv[1]["system"])):
        lines.append(f"  {name:28} {int(g['threads']):3} threads  user {g['user']:6.2f}s  "
                     f"system {g['system']:6.2f}s  = {(g['user'] + g['system']) / seconds:5.2f} cores")
    return "\n".join(lines) + "\n"


def parse(raw: str) -> list[tuple[str, list[str], int]]:
    """Collapsed stacks -> (thread name, frames root first, samples)."""
    stacks = []
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = "?"
        match = _THREAD.match(frames[0])
        if match:
            thread = match.group("name") or "?"
            frames = frames[1:]
        stacks.append((thread, [_LINE.sub(")", frame) for frame in frames], int(count)))
    return stacks


def thread_group(name: str) -> str:
    """ThreadPoolExecutor-0_3 -> ThreadPoolExecutor-0: executor workers count together."""
    return re.sub(r"_\d+$", "", name)


def summarise(raw: str, seconds: float, rate: int, gil: bool = True, top: int = 30) -> str:
    """Busy share per thread, then the functions taking the samples: inclusive, self, by package.

    With `gil`, py-spy sampled only the thread holding the GIL, so 100% is one
    core of Python work and the percentages say where that core goes.
    """
    stacks = parse(raw)
    possible = max(seconds * rate, 1)
    total = sum(count for _, _, count in stacks) or 1
    by_thread: Counter[str] = Counter()
    for thread, _, count in stacks:
        by_thread[thread_group(thread)] += count
    what = "holding the GIL" if gil else "not idle"
    lines = [f"py-spy: {total} samples over {seconds:.1f}s at {rate}/s; a thread counts while {what}."]
    if gil:
        lines.append(f"The daemon held the GIL {100 * total / possible:.0f}% of the time.")
    lines += ["", f"share of wall time per thread ({what}):"]
    lines += [f"  {100 * count / possible:6.1f}%  {thread}" for thread, count in by_thread.most_common()]

    # The frames every sample of a thread sits under (runpy, typer, asyncio.run, the
    # executor's worker loop) say nothing.
    wrappers = {frame for _, frames, _ in stacks for frame in frames if ENTRY_FRAMES.search(frame)}
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for thread, frames, count in stacks:
        for frame in set(frames) - wrappers:
            inclusive[frame] += count
        leaf = frames[-1] if frames else f"(no Python frame: {thread_group(thread)})"
        self_time[leaf] += count
        packages[_package(leaf)] += count
    lines += ["", f"functions by inclusive time, % of all {total} samples (entry frames left out):"]
    lines += [f"  {100 * n / total:6.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "functions by self time:"]
    lines += [f"  {100 * n / total:6.1f}%  {frame}" for frame, n in self_time.most_common(top)]
    lines += ["", "self time by package or module:"]
    lines += [f"  {100 * n / total:6.1f}%  {pkg}" for pkg, n in packages.most_common(top)]
    return "\n".join(lines) + "\n"


def _package(frame: str) -> str:
    """'deliver (openmailserver/core/deliver.py)' -> 'openmailserver/core'; stdlib modules by file."""
    match = re.search(r"\(([^()]*)\)$", frame)
    path = match.group(1) if match else frame
    parts = path.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:]
    if parts[0] == "openmailserver" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else path
