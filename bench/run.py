"""`make bench`: run the benchmarks, openmailserver against its anchors.

    python -m bench.run                      # everything, 3 repetitions each
    python -m bench.run --only imap --reps 5
    python -m bench.run --quick --reps 1     # every benchmark at a small size, results under /tmp
    python -m bench.run --profile            # plus one py-spy-profiled run of ours
    python -m bench.run --report-only        # rewrite the tables and chart from latest.json

Benchmarks: smtp_ingest, outbound, imap, api_send, idle_latency, memory; then
the `reliability` check (crash-safety and fuzz tests, run bigger than in
`make test`). Installs the anchors' Debian packages when missing, runs every
server as a private instance on loopback in a directory under /tmp, and writes
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

from bench.api_send import ApiSend
from bench.harness import report, runner
from bench.harness.procs import raise_on_termination, raise_open_files_limit
from bench.harness.system import ensure_debs, machine_info, package_version
from bench.idle_latency import IdleLatency
from bench.imap import ImapOperations
from bench.memory import Memory
from bench.outbound import Outbound
from bench.reliability import Reliability
from bench.smtp_ingest import SmtpIngest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"


# --quick: every benchmark at a small size, to see that it works (figures are not comparable).
QUICK = {"messages": 500, "warmup": 50, "outbound_messages": 500, "imap_messages": 1000, "imap_appends": 50,
         "api_requests": 200, "idle_deliveries": 20, "connections": 200, "reliability_scale": 1.0,
         "fuzz_examples": 300, "socket_fuzz_sessions": 150}


def benchmarks(args: argparse.Namespace) -> dict[str, runner.Benchmark | runner.Check]:
    return {
        "smtp_ingest": SmtpIngest(messages=args.messages, sessions=args.sessions, size=args.size,
                                  warmup=args.warmup),
        "outbound": Outbound(messages=args.outbound_messages, sessions=args.outbound_sessions),
        "imap": ImapOperations(messages=args.imap_messages, appends=args.imap_appends),
        "api_send": ApiSend(requests=args.api_requests, clients=args.api_clients),
        "idle_latency": IdleLatency(deliveries=args.idle_deliveries),
        "memory": Memory(connections=args.connections, users=args.connection_mailboxes),
        "reliability": Reliability(scale=args.reliability_scale, fuzz_examples=args.fuzz_examples,
                                   socket_sessions=args.socket_fuzz_sessions),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per target (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes everywhere (a smoke run); results go under /tmp unless --results")
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--messages", type=int, default=5000, help="smtp_ingest: messages (default 5000)")
    sizes.add_argument("--sessions", type=int, default=20, help="smtp_ingest: concurrent sessions (default 20)")
    sizes.add_argument("--size", type=int, default=2048, help="smtp_ingest: body bytes (default 2048)")
    sizes.add_argument("--warmup", type=int, default=100, help="smtp_ingest: untimed messages first (default 100)")
    sizes.add_argument("--outbound-messages", type=int, default=5000, help="outbound: messages (default 5000)")
    sizes.add_argument("--outbound-sessions", type=int, default=10,
                       help="outbound: submission sessions (default 10)")
    sizes.add_argument("--imap-messages", type=int, default=10_000, help="imap: mailbox size (default 10000)")
    sizes.add_argument("--imap-appends", type=int, default=500, help="imap: APPENDs (default 500)")
    sizes.add_argument("--api-requests", type=int, default=1000,
                       help="api_send: requests per recipient kind (default 1000)")
    sizes.add_argument("--api-clients", type=int, default=10, help="api_send: concurrent clients (default 10)")
    sizes.add_argument("--idle-deliveries", type=int, default=100, help="idle_latency: deliveries (default 100)")
    sizes.add_argument("--connections", type=int, default=1000,
                       help="memory: IMAP sessions, and WebSocket subscribers (default 1000)")
    sizes.add_argument("--connection-mailboxes", type=int, default=10,
                       help="memory: mailboxes the connections are spread over (default 10)")
    sizes.add_argument("--reliability-scale", type=float, default=4.0,
                       help="reliability: OMS_RELIABILITY_SCALE (default 4)")
    sizes.add_argument("--fuzz-examples", type=int, default=5000,
                       help="reliability: OMS_FUZZ_EXAMPLES (default 5000)")
    sizes.add_argument("--socket-fuzz-sessions", type=int, default=1000,
                       help="reliability: OMS_SOCKET_FUZZ_SESSIONS (default 1000)")
    parser.add_argument("--debs", default="", help="extra Debian packages to install first (space-separated)")
    parser.add_argument("--profile", action="store_true",
                        help="after measuring, profile one more run of openmailserver with py-spy "
                             "(report in bench/results/profile/)")
    parser.add_argument("--quiet-wait", type=float, default=60.0, metavar="SECONDS",
                        help="before each run, wait up to this long for other work on the machine to stop "
                             "(default 60)")
    parser.add_argument("--results", type=Path, default=None, help="where latest.* go (default bench/results)")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite latest.md, latest.png and docs from latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the working directory under /tmp")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
        if args.results is None:
            args.results = Path(tempfile.gettempdir()) / "openmailserver-bench-quick"
    if args.results is None:
        args.results = RESULTS
    return args


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
    if args.reps < 3 and any(isinstance(bench, runner.Benchmark) for bench in selected.values()):
        print(f"bench: note: {args.reps} repetition(s); published figures use at least 3", flush=True)
    print(f"bench: open-file limit {raise_open_files_limit()}", flush=True)

    debs = [*args.debs.split(), *(deb for bench in selected.values() for deb in getattr(bench, "debs", ()))]
    ensure_debs(debs)

    work = Path(tempfile.mkdtemp(prefix="openmailserver-bench-", dir="/tmp"))
    work.chmod(0o755)  # private Postfix and Dovecot processes run unprivileged and must reach their directories
    print(f"bench: working directory {work}", flush=True)
    results: dict[str, dict] = {}
    checks: dict[str, dict] = {}
    try:
        for name, bench in selected.items():
            if isinstance(bench, runner.Check):
                print(f"bench: {bench.title}", flush=True)
                checks[name] = runner.run_check(bench, work, keep=args.keep)
                continue
            print(f"bench: {bench.title} — {args.reps} repetitions{' each, alternating' if bench.anchor else ''}",
                  flush=True)
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
        if isinstance(bench, runner.Benchmark):
            versions.update(bench.versions())
    machine = machine_info(work.parent, versions)
    machine["debian_packages"] = {deb: package_version(deb) for deb in dict.fromkeys(debs)}
    previous_path = args.results / "latest.json"
    previous = json.loads(previous_path.read_text()) if args.only and previous_path.exists() else None
    merged = report.merge(previous, machine, results, checks)
    for path in report.write(args.results, merged, _docs(args)):
        print(f"bench: wrote {_show(path)}")
    print()
    print(report.markdown({"machine": machine, "benchmarks": results, "checks": checks}).split("\n## ")[0])
    for check in checks.values():
        verdict = "passed" if check["passed"] else "FAILED"
        print(f"{check['title']}: {verdict} ({', '.join(f'{n} {k}' for k, n in check['counts'].items() if n)})")
    return 0 if all(check["passed"] for check in checks.values()) else 1


def _docs(args: argparse.Namespace) -> Path | None:
    """docs/benchmarks.md shows the committed results only, not those of a run elsewhere."""
    return DOCS if args.results.resolve() == RESULTS.resolve() else None


def _show(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


if __name__ == "__main__":
    sys.exit(main())
