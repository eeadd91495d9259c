"""Small measuring tools: counting a Maildir, CPU accounting from /proc."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def maildir_count(maildir: Path) -> int:
    """Messages in a Maildir: files in new/ and cur/ (tmp/ holds unfinished ones)."""
    total = 0
    for sub in ("new", "cur"):
        try:
            with os.scandir(maildir / sub) as entries:
                total += sum(1 for entry in entries if not entry.name.startswith("."))
        except FileNotFoundError:
            pass  # created on first delivery
    return total


def wait_for_count(count: Callable[[], int], expected: int, timeout: float, *, interval: float = 0.05,
                   fine_interval: float = 0.005, fine_within: int = 100,
                   check: Callable[[], None] = lambda: None) -> float:
    """Poll until count() >= expected; returns the time.monotonic() when it was seen.

    Polls every `interval` seconds, and every `fine_interval` once fewer than
    `fine_within` are missing, so counting a large directory costs little CPU
    while the end is still timed closely. `check` runs between polls and may
    raise to abort (e.g. when the load generator failed).
    """
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        seen = count()
        if seen >= expected:
            return now
        if now > deadline:
            raise TimeoutError(f"only {seen} of {expected} messages after {timeout}s")
        check()
        time.sleep(fine_interval if expected - seen < fine_within else interval)


@dataclass
class CpuSample:
    """Busy and total jiffies of the whole machine, and CPU seconds of some process groups."""
    busy: int
    total: int
    group_seconds: float

    @classmethod
    def take(cls, pgids: list[int] = ()) -> "CpuSample":
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + values[4]  # idle + iowait
        return cls(busy=sum(values[:8]) - idle, total=sum(values[:8]),
                   group_seconds=sum(group_cpu(pgid) for pgid in pgids))

    def until(self, later: "CpuSample") -> dict:
        """Machine CPU use between two samples (0..cores), and the process groups' CPU seconds."""
        total = later.total - self.total
        cores = os.cpu_count() or 1
        return {
            "machine_cpu_busy_cores": round(cores * (later.busy - self.busy) / total, 3) if total else None,
            "server_cpu_seconds": round(later.group_seconds - self.group_seconds, 3),
        }


def _stat_fields(pid: str | int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()  # fields from the 3rd (state) on


def group_cpu(pgid: int) -> float:
    """CPU seconds of a process group: its live members, plus the children its leader
    has already reaped (Postfix's master reaps its short-lived daemons)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or int(fields[2]) != pgid:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if int(entry) == pgid:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


def background_load(seconds: float = 1.0) -> float:
    """Cores busy on this machine while we do nothing: other work that would skew a run."""
    before = CpuSample.take()
    time.sleep(seconds)
    return before.until(CpuSample.take())["machine_cpu_busy_cores"] or 0.0


def wait_until_quiet(threshold: float, max_wait: float) -> float:
    """Wait (up to max_wait seconds) until other work uses less than `threshold` cores; returns the last load."""
    deadline = time.monotonic() + max_wait
    while True:
        load = background_load()
        if load < threshold or time.monotonic() >= deadline:
            return load


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it (Dovecot's master and all its children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory_kb(pids: list[int]) -> dict:
    """Resident memory of some processes in KiB: summed RSS, summed PSS (each shared page
    divided among the processes sharing it), and the number of processes still alive."""
    rss = pss = alive = 0
    for pid in pids:
        try:
            rss += _status_kb(pid, "VmRSS")
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                    break
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        alive += 1
    return {"rss_kb": rss, "pss_kb": pss, "processes": alive}


def settled_memory(pids: Callable[[], list[int]], *, within: float = 0.01, interval: float = 1.0,
                   timeout: float = 20.0) -> dict:
    """memory_kb() once the summed RSS changes by less than `within` (a fraction) between two
    readings `interval` seconds apart, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = memory_kb(pids())
    while True:
        time.sleep(interval)
        now = memory_kb(pids())
        if abs(now["rss_kb"] - last["rss_kb"]) <= within * max(last["rss_kb"], 1) or time.monotonic() > deadline:
            return now
        last = now
