"""The benchmark harness's pure logic: run order, medians and ratios, py-spy stack
summaries and the generated results. (The benchmarks themselves run in `make bench`.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds bench/

from bench.harness import report  # noqa: E402
from bench.harness.profile import parse, summarise, thread_cpu  # noqa: E402
from bench.harness.stats import alternating_schedule  # noqa: E402
from bench.harness.stats import summarise as summarise_runs  # noqa: E402


def test_schedule_alternates_which_target_goes_first():
    assert alternating_schedule(["ours", "anchor"], 3) == [
        (1, "ours"), (1, "anchor"), (2, "anchor"), (2, "ours"), (3, "ours"), (3, "anchor")]
    with pytest.raises(ValueError):
        alternating_schedule(["ours", "anchor"], 0)


def _runs(ours: list[float], anchor: list[float]) -> list[dict]:
    return ([{"target": "ours", "value": v} for v in ours] +
            [{"target": "anchor", "value": v} for v in anchor])


def test_summary_uses_medians_and_compares_with_the_target():
    summary = summarise_runs(_runs([900, 1200, 1000], [700, 650, 800]), "ours", "anchor", target_ratio=1.5)
    assert summary["targets"]["ours"] == {"median": 1000, "min": 900, "max": 1200, "values": [900, 1200, 1000]}
    assert summary["targets"]["anchor"]["median"] == 700
    assert summary["ratio"] == pytest.approx(1000 / 700, abs=1e-3)
    assert summary["meets_target"] is False
    assert summarise_runs(_runs([1100], [700]), "ours", "anchor", target_ratio=1.5)["meets_target"] is True


def test_summary_for_lower_is_better_inverts_the_advantage():
    # Latency: ours 10 ms, anchor 20 ms -> ratio 0.5, twice as good.
    summary = summarise_runs(_runs([10, 12, 9], [20, 25, 18]), "ours", "anchor", higher_is_better=False,
                             target_ratio=1.5)
    assert summary["ratio"] == 0.5
    assert summary["advantage"] == 2.0
    assert summary["meets_target"] is True


def test_summary_needs_runs_of_both_targets():
    with pytest.raises(ValueError, match="anchor"):
        summarise_runs(_runs([1.0], []), "ours", "anchor")


RAW = """\
thread (0x7F01): MainThread;<module> (openmailserver/__main__.py:3);Runner.run (asyncio/runners.py:118);\
handle_DATA (openmailserver/smtp/inbound.py:140);format_datetime (email/utils.py:155) 30
thread (0x7F01): MainThread;<module> (openmailserver/__main__.py:3);Runner.run (asyncio/runners.py:118);\
handle_DATA (openmailserver/smtp/inbound.py:151) 10
thread (0x7F02): work_0;_worker (concurrent/futures/thread.py:83);write_durably (openmailserver/store/maildir.py:99) 40
thread (0x7F03): work_1;_worker (concurrent/futures/thread.py:83);write_durably (openmailserver/store/maildir.py:101) 20
"""


def test_collapsed_stacks_are_parsed_without_line_numbers():
    stacks = parse(RAW)
    assert stacks[0][0] == "MainThread"
    assert stacks[0][1][-1] == "format_datetime (email/utils.py)"
    assert [count for _, _, count in stacks] == [30, 10, 40, 20]


def test_profile_summary_attributes_samples():
    text = summarise(RAW, seconds=1.0, rate=100, gil=True)
    assert "held the GIL 100% of the time" in text
    assert "60.0%  work" in text  # work_0 and work_1 count together
    assert "40.0%  MainThread" in text
    inclusive = text.split("by inclusive time")[1].split("by self time")[0]
    assert "60.0%  write_durably (openmailserver/store/maildir.py)" in inclusive
    assert "40.0%  handle_DATA (openmailserver/smtp/inbound.py)" in inclusive
    assert "Runner.run" not in inclusive and "_worker" not in inclusive  # entry frames say nothing
    by_package = text.split("by package or module")[1]
    assert "60.0%  openmailserver/store" in by_package
    assert "30.0%  email" in by_package


def test_thread_cpu_groups_executor_threads_and_counts_new_threads_whole():
    before = {"1": (1.0, 0.5), "2": (0.2, 0.1)}
    after = {"1": (3.0, 1.0), "2": (0.7, 0.4), "3": (0.5, 0.5)}
    groups = thread_cpu(before, after, {"1": "MainThread", "2": "work_0", "3": "work_1"})
    assert groups["MainThread"] == {"threads": 1, "user": 2.0, "system": 0.5}
    assert groups["work"]["threads"] == 2
    assert groups["work"]["user"] == pytest.approx(1.0)
    assert groups["work"]["system"] == pytest.approx(0.8)


MACHINE = {"date": "2026-01-01T00:00:00Z", "cores": 2, "cpu": "Test CPU", "memory_gib": 24.0, "os": "Debian",
           "kernel": "6.1", "python": "3.11.7", "postfix_version": "3.7.11", "work_dir": "/tmp",
           "work_dir_filesystem": "ext4"}


def _bench(ours: list[float], anchor: list[float]) -> dict:
    runs = [{"rep": i + 1, "target": "openmailserver", "value": v, "seconds": 5000 / v} for i, v in enumerate(ours)]
    runs += [{"rep": i + 1, "target": "postfix", "value": v, "seconds": None} for i, v in enumerate(anchor)]
    return {"title": "SMTP ingest", "short_title": "SMTP", "description": "What it measures.", "date": "d",
            "unit": "messages/s", "higher_is_better": True, "ours": "openmailserver", "anchor": "postfix",
            "command": "smtp-source -s 20", "columns": {"seconds": "seconds"}, "runs": runs,
            "summary": summarise_runs(runs, "openmailserver", "postfix", target_ratio=1.5)}


def test_markdown_has_the_summary_row_and_every_repetition():
    md = report.markdown({"machine": MACHINE, "benchmarks": {"smtp_ingest": _bench([150, 160, 140], [700, 650, 680])}})
    assert "Postfix 3.7.11" in md and "2 cores (Test CPU)" in md
    assert "| SMTP ingest | messages/s | 150 | postfix | 680 | 0.22× | ≥ 1.50× | **no** |" in md
    assert len(re.findall(r"^\| \d \| openmailserver \| ", md, re.M)) == 3
    assert len(re.findall(r"^\| \d \| postfix \| ", md, re.M)) == 3
    assert "| 1 | postfix | 700.0 | – |" in md  # a missing figure is a dash, not "None"
    assert "Caution" not in md


def test_markdown_warns_about_runs_on_a_busy_machine():
    bench = _bench([150, 160, 140], [700, 650, 680])
    bench["runs"][1]["background_cpu_cores"] = 1.2
    bench["runs"][2]["background_cpu_cores"] = 0.1
    md = report.markdown({"machine": MACHINE, "benchmarks": {"smtp_ingest": bench}})
    assert "**Caution:** 1 of 6 runs started while other work kept more than 0.25 cores" in md


def test_merge_keeps_benchmarks_not_run_this_time():
    previous = {"machine": {"date": "old"}, "benchmarks": {"a": {"v": 1}, "b": {"v": 2}}}
    merged = report.merge(previous, {"date": "new"}, {"b": {"v": 3}})
    assert merged == {"machine": {"date": "new"}, "benchmarks": {"a": {"v": 1}, "b": {"v": 3}}}


def test_docs_block_is_replaced_between_the_markers(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"intro\n\n{report.BEGIN}\nold figures\n{report.END}\n\noutro\n")
    assert report.update_docs(doc, "# Benchmark results\n\nnew table\n\n## Details\n\nrows\n")
    text = doc.read_text()
    assert "old figures" not in text
    assert f"{report.BEGIN}\nnew table\n\n### Details\n\nrows\n{report.END}" in text
    assert text.startswith("intro") and text.endswith("outro\n")
    no_markers = tmp_path / "other.md"
    no_markers.write_text("nothing to replace\n")
    assert not report.update_docs(no_markers, "# x\n")
