"""The crash-safety, disk-full and fuzz tests of `make test`, run bigger: pass/fail and the
counts they print (acknowledged, found, duplicates; hypothesis test cases; fuzz sessions)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.harness.procs import Processes
from bench.harness.runner import Check

ROOT = Path(__file__).resolve().parents[2]
SUITES = ("tests/reliability", "tests/fuzz")
MAX_DETAILS = 4000  # characters of a failure report kept in latest.json
# "- 5000 passing, 0 failing, and 3 invalid test cases" (one line per hypothesis phase)
_HYPOTHESIS_COUNTS = re.compile(r"- (\d+) passing, (\d+) failing, and (\d+) invalid")
_HYPOTHESIS_TEST = re.compile(r"^(tests/\S+::\S+):$")
# pytest's "----- Captured Out -----" around a test's output in the JUnit report
_BANNER = re.compile(r"^-+ Captured \w+ -+$")


def hypothesis_counts(output: str) -> dict[str, dict[str, int]]:
    """Test cases per hypothesis test from pytest's --hypothesis-show-statistics section."""
    counts: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in output.splitlines():
        if match := _HYPOTHESIS_TEST.match(line.strip()):
            current = counts.setdefault(match.group(1), {"passing": 0, "failing": 0, "invalid": 0})
        elif current is not None and (match := _HYPOTHESIS_COUNTS.search(line)):
            for key, value in zip(("passing", "failing", "invalid"), match.groups()):
                current[key] += int(value)
    return counts


def junit_tests(path: Path) -> list[dict]:
    """name, outcome, seconds and printed lines of every test case in a JUnit XML report."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        name = f"{module}.py::{case.get('name')}" if module else case.get("name", "")
        outcome = "passed"
        message = details = ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (element.get("message") or "").strip().splitlines()[0] if element.get("message") else ""
                details = (element.text or "").strip()
                break
        out = case.find("system-out")
        printed = [line.strip() for line in (out.text or "").splitlines()
                   if line.strip() and not _BANNER.match(line.strip())] if out is not None else []
        if message and outcome != "passed":
            printed.append(f"{outcome}: {message[:300]}")
        test = {"name": name, "outcome": outcome, "seconds": round(float(case.get("time", 0)), 1), "printed": printed}
        if details:
            test["details"] = details[-MAX_DETAILS:]  # the end of the report: the assertion and its context
        tests.append(test)
    return tests


class Reliability(Check):
    name = "reliability"

    def __init__(self, scale: float = 4, fuzz_examples: int = 5000, socket_sessions: int = 1000,
                 timeout: float = 2400.0, test_timeout: int = 1200) -> None:
        self.environment = {"OMS_RELIABILITY_SCALE": f"{scale:g}", "OMS_FUZZ_EXAMPLES": str(fuzz_examples),
                            "OMS_SOCKET_FUZZ_SESSIONS": str(socket_sessions)}
        self.timeout, self.test_timeout = timeout, test_timeout
        self.title = (f"Reliability and fuzzing at `make bench` size (load × {scale:g}, {fuzz_examples} hypothesis "
                      f"examples per property, {socket_sessions} fuzz sessions per listener)")
        self.description = (
            f"`make test` runs `{' '.join(SUITES)}` at a small size; here the same tests run bigger: the "
            f"SIGKILL-under-load test with {scale:g}× the SMTP and API load and {scale:g}× longer between kills "
            f"(`OMS_RELIABILITY_SCALE`), every hypothesis property with {fuzz_examples} examples "
            f"(`OMS_FUZZ_EXAMPLES`) and the raw-socket fuzz with {socket_sessions} random or mutated sessions "
            f"against each SMTP listener (`OMS_SOCKET_FUZZ_SESSIONS`). Each row is one test: its outcome, its "
            f"time, and what it printed (the counts it checked: messages acknowledged, found, duplicates; for "
            f"hypothesis properties the test cases that passed, failed and were invalid).")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pytest", *SUITES, "-p", "no:cacheprovider", f"--timeout={self.test_timeout}",
                "--hypothesis-show-statistics", "-o", "junit_logging=system-out", "-q", "-rfE"]

    def run(self, work: Path) -> dict:
        junit = work / "junit.xml"
        log = work / "pytest.out"
        env = {**os.environ, **self.environment}
        shown = " ".join(f"{k}={v}" for k, v in self.environment.items()) + " python -m pytest " + \
            " ".join(self.command()[3:])
        print(f"  reliability: {shown}", flush=True)
        error = None
        with Processes() as procs:
            proc = procs.spawn([*self.command(), f"--junitxml={junit}"], log=log, env=env, cwd=ROOT)
            try:
                code = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                procs.stop(proc)
                code, error = None, f"pytest did not finish within {self.timeout:.0f} s and was stopped"
        output = log.read_text(errors="replace") if log.exists() else ""
        tests = junit_tests(junit) if junit.exists() else []
        if not tests and error is None:
            error = f"pytest wrote no report (exit code {code}): " + " / ".join(output.strip().splitlines()[-5:])
        for test, cases in hypothesis_counts(output).items():
            for entry in tests:
                if entry["name"] == test:
                    entry["printed"].append(f"hypothesis: {cases['passing']} passing, {cases['failing']} failing, "
                                            f"{cases['invalid']} invalid test cases")
        counts = {outcome: sum(1 for t in tests if t["outcome"] == outcome)
                  for outcome in ("passed", "failed", "error", "skipped")}
        passed = code == 0 and error is None and counts["passed"] > 0
        for test in tests:
            print(f"    {test['outcome']:>7} {test['seconds']:7.1f}s  {test['name']}", flush=True)
            for line in test["printed"]:
                print(f"             {line}", flush=True)
        return {"command": shown, "environment": self.environment, "returncode": code, "passed": passed,
                "counts": counts, "tests": tests, **({"error": error} if error else {})}
