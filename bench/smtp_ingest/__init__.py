"""SMTP ingest: Postfix's smtp-source against our MX and against a private Postfix
delivering to Maildir with virtual(8); messages/s until the last one is durable."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bench.anchors import postfix
from bench.anchors.postfix import PrivatePostfix
from bench.harness.dns import DNSServer
from bench.harness.measure import CpuSample, background_load, maildir_count, wait_for_count
from bench.harness.procs import Processes
from bench.harness.profile import PySpy
from bench.harness.runner import OURS, Benchmark, Metric
from bench.targets.openmailserver import OpenMailserver

SMTP_SOURCE = "/usr/sbin/smtp-source"
DOMAIN = "bench.test"
LOCAL = "user"
SENDER = "load@sender.example"
CLIENT_HELO = "client.sender.example"


class SmtpIngest(Benchmark):
    name = "smtp_ingest"
    anchor = "postfix"
    metrics = (Metric("value", "messages durably delivered", "messages/s", target_ratio=1.2),)
    debs = ("postfix",)
    columns = {
        "seconds": "seconds to last durable",
        "accept_rate": "accepted/s (smtp-source done)",
        "server_cpu_ms_per_message": "server CPU ms / message",
        "machine_cpu_busy_cores": "machine CPU busy (cores)",
        "background_cpu_cores": "busy before run, other work (cores)",
        "dns_queries_per_message": "DNS queries / message",
    }

    def __init__(self, messages: int = 5000, sessions: int = 20, size: int = 2048, warmup: int = 100,
                 timeout: float = 600.0) -> None:
        self.messages, self.sessions, self.size, self.warmup, self.timeout = messages, sessions, size, warmup, timeout
        self.title = (f"SMTP ingest: smtp-source, {sessions} sessions, {messages} × {size // 1024 or size} "
                      f"{'KB' if size >= 1024 else 'B'}, to Maildir")
        self.short_title = "SMTP ingest (smtp-source → Maildir)"
        self.description = (
            f"Postfix's `smtp-source` opens {sessions} concurrent SMTP sessions to the target on loopback and "
            f"sends {messages} messages with a {size}-byte body to one mailbox, one message per connection. "
            f"The clock runs from just before `smtp-source` starts (first connect) until the last of the "
            f"{messages} messages is in the mailbox's Maildir (`new/` + `cur/`). openmailserver answers 250 "
            f"only after the message is fsynced and indexed, and evaluates SPF, DKIM and DMARC with lookups "
            f"through a loopback DNS server; the anchor is a stock private Postfix instance (no DNS lookups) "
            f"whose virtual(8) agent delivers to Maildir. Each repetition starts both on fresh directories and "
            f"sends {warmup} warm-up messages first (not timed). Server CPU is that of the daemon's (or all "
            f"Postfix daemons') processes.")

    def versions(self) -> dict[str, str | None]:
        return {"postfix": postfix.version()}

    def parameters(self) -> dict:
        return {"messages": self.messages, "sessions": self.sessions, "body_bytes": self.size,
                "warmup_messages": self.warmup, "one_message_per_connection": True}

    def smtp_source(self, port: int, count: int) -> list[str]:
        return [SMTP_SOURCE, "-s", str(self.sessions), "-m", str(count), "-l", str(self.size),
                "-M", CLIENT_HELO, "-f", SENDER, "-t", f"{LOCAL}@{DOMAIN}", f"127.0.0.1:{port}"]

    def command(self) -> str:
        return " ".join(self.smtp_source(0, self.messages)).replace(":0", ":PORT")

    def setup(self) -> None:
        # The sender's domain publishes SPF and DMARC, so our MX does the lookups a real one does.
        self.dns = DNSServer().start()
        self.dns.add("sender.example", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
        self.dns.add("_dmarc.sender.example", "TXT", "v=DMARC1; p=none")
        self.dns.add(CLIENT_HELO, "A", "127.0.0.1")

    def teardown(self) -> None:
        self.dns.stop()

    def run_once(self, target: str, work: Path, procs: Processes, profile: Path | None = None) -> dict:
        work.mkdir(parents=True)
        work.chmod(0o755)
        if target == OURS:
            server = OpenMailserver(procs, work / "openmailserver", DOMAIN, self.dns.address).start()
            server.create_mailbox(LOCAL)
        else:
            server = PrivatePostfix(procs, work / "postfix", DOMAIN, [LOCAL]).start()
        try:
            maildir = server.maildir(LOCAL)
            if self.warmup:
                self._warm_up(procs, server, maildir, work / "warmup.out")
            result = self._measure(procs, server, maildir, work, profile)
        finally:
            server.stop()
        if result["delivered"] != self.messages:
            raise RuntimeError(f"{target}: {result['delivered']} messages arrived in the Maildir, "
                               f"expected {self.messages}")
        return result

    def _measure(self, procs: Processes, server, maildir: Path, work: Path, profile: Path | None) -> dict:
        """The timed part: smtp-source starts, the clock stops when the last message is in the Maildir."""
        before = maildir_count(maildir)
        os.sync()  # leave no earlier writes for this run's fsyncs to wait on
        background = background_load()
        profiler = PySpy(procs, server.pid, profile / f"{self.name}.raw") if profile else None
        queries_before = len(self.dns.queries)
        cpu_before = CpuSample.take([server.pgid])
        start = time.monotonic()
        load = self._send(procs, server, self.messages, work / "smtp-source.out")
        finished: list[float] = []  # when smtp-source exited: every message had its reply

        def check() -> None:
            if finished or load.poll() is None:
                return
            finished.append(time.monotonic())
            if load.returncode != 0:
                raise RuntimeError(f"smtp-source exited with {load.returncode}: "
                                   f"{_tail(work / 'smtp-source.out')}\n{server.log_tail()}")

        done = wait_for_count(lambda: maildir_count(maildir), before + self.messages, self.timeout, check=check)
        if not finished:  # the last message was durable before smtp-source read its 250
            load.wait(timeout=60)
            check()
        cpu = cpu_before.until(CpuSample.take([server.pgid]))
        dns_queries = len(self.dns.queries) - queries_before
        if profiler:
            profiler.stop()
        seconds = done - start
        return {
            "value": round(self.messages / seconds, 1),
            "seconds": round(seconds, 3),
            "accept_rate": round(self.messages / (finished[0] - start), 1),
            "delivered": maildir_count(maildir) - before,
            "background_cpu_cores": round(background, 3),
            "dns_queries_per_message": round(dns_queries / self.messages, 2),
            "server_cpu_ms_per_message": round(1000 * cpu["server_cpu_seconds"] / self.messages, 2),
            **cpu,
        }

    def _send(self, procs: Processes, server, count: int, log: Path) -> subprocess.Popen:
        return procs.spawn(self.smtp_source(server.port, count), log=log)

    def _warm_up(self, procs: Processes, server, maildir: Path, log: Path) -> None:
        code = self._send(procs, server, self.warmup, log).wait(timeout=120)
        if code != 0:
            raise RuntimeError(f"warm-up smtp-source exited with {code}: {_tail(log)}\n{server.log_tail()}")
        wait_for_count(lambda: maildir_count(maildir), self.warmup, 60)


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
