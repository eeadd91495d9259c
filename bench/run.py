"""`make bench`: run the benchmarks, openmailserver against its anchors.

    python -m bench.run                      # everything, 3 repetitions each
    python -m bench.run --only smtp_ingest --reps 5
    python -m bench.run --messages 500 --reps 1 --results /tmp/x   # a quick smoke run
    python -m bench.run --profile            # plus one py-spy-profiled run of ours
    python -m bench.run --report-only        # rewrite the tables and chart from latest.json

Installs the anchors' Debian packages when missing, runs every server as a
private instance on loopback in a directory under /tmp, and writes
bench/results/latest.{json,md,png} and the results block of docs/benchmarks.md.
Every process it starts is stopped on the way out, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench.harness import report, runner
from bench.harness.procs import raise_on_termination
from bench.harness.system import ensure_debs, machine_info, package_version
from bench.smtp_ingest import SmtpIngest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"


def benchmarks(args: argparse.Namespace) -> dict[str, runner.Benchmark]:
    return {
        "smtp_ingest": SmtpIngest(messages=args.messages, sessions=args.sessions, size=args.size,
                                  warmup=args.warmup),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per target (default 3)")
    parser.add_argument("--messages", type=int, default=5000, help="smtp_ingest: messages (default 5000)")
    parser.add_argument("--sessions", type=int, default=20, help="smtp_ingest: concurrent sessions (default 20)")
    parser.add_argument("--size", type=int, default=2048, help="smtp_ingest: body bytes (default 2048)")
    parser.add_argument("--warmup", type=int, default=100, help="smtp_ingest: untimed messages first (default 100)")
    parser.add_argument("--debs", default="", help="extra Debian packages to install first (space-separated)")
    parser.add_argument("--profile", action="store_true",
                        help="after measuring, profile one more run of openmailserver with py-spy "
                             "(report in bench/results/profile/)")
    parser.add_argument("--quiet-wait", type=float, default=60.0, metavar="SECONDS",
                        help="before each run, wait up to this long for other work on the machine to stop "
                             "(default 60)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where latest.* go (default bench/results)")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite latest.md, latest.png and docs from latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the working directory under /tmp")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        results = json.loads((args.results / "latest.json").read_text())
        for path in report.write(args.results, results, _docs(args)):
            print(f"bench: wrote {_show(path)}")
        return 0
    raise_on_termination()
    available = benchmarks(args)
    unknown = set(args.only or ()) - set(available)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(available)}", file=sys.stderr)
        return 2
    selected = {name: bench for name, bench in available.items() if not args.only or name in args.only}
    if args.reps < 3:
        print(f"bench: note: {args.reps} repetition(s); published figures use at least 3", flush=True)

    debs = [*args.debs.split(), *(deb for bench in selected.values() for deb in bench.debs)]
    ensure_debs(debs)

    work = Path(tempfile.mkdtemp(prefix="openmailserver-bench-", dir="/tmp"))
    work.chmod(0o755)  # private Postfix daemons run unprivileged and must reach their directories
    print(f"bench: working directory {work}", flush=True)
    results: dict[str, dict] = {}
    try:
        for name, bench in selected.items():
            print(f"bench: {bench.title} — {args.reps} repetitions each, alternating", flush=True)
            profile_dir = args.results / "profile" if args.profile else None
            results[name] = runner.run(bench, args.reps, work, profile_dir=profile_dir, keep=args.keep,
                                        quiet_wait=args.quiet_wait)
    except KeyboardInterrupt:
        print("bench: interrupted; every started process has been stopped", file=sys.stderr)
        return 130
    except Exception:
        args.keep = True  # the logs of the failed run are in there
        raise
    finally:
        if args.keep:
            print(f"bench: kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    versions: dict[str, str | None] = {}
    for bench in selected.values():
        versions.update(bench.versions())
    machine = machine_info(work.parent, versions)
    machine["debian_packages"] = {deb: package_version(deb) for deb in dict.fromkeys(debs)}
    previous_path = args.results / "latest.json"
    previous = json.loads(previous_path.read_text()) if args.only and previous_path.exists() else None
    merged = report.merge(previous, machine, results)
    for path in report.write(args.results, merged, _docs(args)):
        print(f"bench: wrote {_show(path)}")
    print()
    print(report.markdown({"machine": machine, "benchmarks": results}).split("\n## ")[0])
    return 0


def _docs(args: argparse.Namespace) -> Path | None:
    """docs/benchmarks.md shows the committed results only, not those of a run elsewhere."""
    return DOCS if args.results.resolve() == RESULTS.resolve() else None


def _show(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


if __name__ == "__main__":
    sys.exit(main())
