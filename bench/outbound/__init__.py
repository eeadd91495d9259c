"""Outbound delivery: queue N messages through submission and deliver them to Postfix's
smtp-sink; openmailserver against a private Postfix relaying to the same sink."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import aiosmtplib

from bench.anchors import postfix
from bench.anchors.postfix import PrivatePostfix
from bench.harness.dns import DNSServer
from bench.harness.measure import CpuSample, background_load
from bench.harness.procs import Processes
from bench.harness.profile import PySpy
from bench.harness.runner import OURS, Benchmark, Metric
from bench.harness.sink import SmtpSink
from bench.harness.tlscert import self_signed
from bench.targets.openmailserver import OpenMailserver

DOMAIN = "bench.test"
SENDER = f"sender@{DOMAIN}"
PASSWORD = "bench-sender-password-1"
SINK_DOMAIN = "sink.test"
RECIPIENT = f"rcpt@{SINK_DOMAIN}"
UNLIMITED_SENDS = 1_000_000_000


def _message(n: int, size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog; queued for the benchmark sink.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return (f"From: Sender <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: outbound benchmark message {n}\r\n"
            f"\r\n").encode() + body


def _insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Submitter:
    """`sessions` SMTP sessions, each over STARTTLS (and AUTH when given credentials), kept open:
    first a warm-up batch, then, on `go`, the timed batch."""

    def __init__(self, port: int, sessions: int, size: int, credentials: tuple[str, str] | None) -> None:
        self.port, self.sessions, self.size, self.credentials = port, sessions, size, credentials
        self.clients: list[aiosmtplib.SMTP] = []

    async def connect(self) -> None:
        for _ in range(self.sessions):
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, start_tls=False, use_tls=False,
                                     local_hostname="client.bench.test", timeout=300)
            await client.connect()
            self.clients.append(client)
            await client.starttls(tls_context=_insecure_tls())
            if self.credentials:
                await client.login(*self.credentials)

    async def send(self, first: int, count: int) -> None:
        """Messages first..first+count-1, spread over the sessions, each session one after another."""
        async def one_session(client: aiosmtplib.SMTP, numbers: range) -> None:
            for n in numbers:
                await client.sendmail(SENDER, [RECIPIENT], _message(n, self.size))

        await asyncio.gather(*(one_session(client, range(first + i, first + count, self.sessions))
                               for i, client in enumerate(self.clients)))

    async def close(self) -> None:
        for client in self.clients:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        self.clients.clear()


class Outbound(Benchmark):
    name = "outbound"
    anchor = "postfix"
    debs = ("postfix",)
    columns = {
        "seconds": "seconds to last 250 at the sink",
        "accept_rate": "accepted/s (all 250s to the client)",
        "server_cpu_ms_per_message": "server CPU ms / message",
        "sink_extra": "extra messages at the sink",
        "machine_cpu_busy_cores": "machine CPU busy (cores)",
        "background_cpu_cores": "busy before run, other work (cores)",
    }

    def __init__(self, messages: int = 5000, sessions: int = 10, size: int = 2048, warmup: int = 100,
                 timeout: float = 900.0) -> None:
        self.messages, self.sessions, self.size, self.warmup, self.timeout = messages, sessions, size, warmup, timeout
        self.metrics = (Metric("value", "messages delivered to the sink", "messages/s", target_ratio=1.0),)
        self.title = f"Outbound: {messages} × {size // 1024 or size} {'KB' if size >= 1024 else 'B'} queued " \
                     f"over {sessions} submission sessions, delivered to smtp-sink"
        self.short_title = "Outbound (submission → queue → smtp-sink)"
        self.description = (
            f"Postfix's `smtp-sink` listens on a loopback port and answers 250 to every message, counting them. "
            f"A Python client (aiosmtplib) holds {sessions} SMTP sessions to the target, each with STARTTLS, and "
            f"submits {messages} messages of {size} bytes to one remote recipient at `{SINK_DOMAIN}`, the "
            f"sessions in parallel and each session's messages one after another. The clock runs from the first "
            f"MAIL FROM of the timed batch until the sink has answered 250 to the last of its messages (its "
            f"counter, read live), so the figure is messages per second queued *and* delivered; the rate at "
            f"which the client got all its 250s is recorded too. Sessions are opened, TLS-negotiated and "
            f"authenticated and {warmup} warm-up messages delivered before the clock starts. "
            f"**openmailserver** takes the mail on its STARTTLS submission port with AUTH PLAIN (argon2id "
            f"password), DKIM-signs it, stores a copy in the sender's `Sent` folder and queues it durably before "
            f"answering 250; its queue finds the sink through an MX record in a loopback DNS zone "
            f"(`{SINK_DOMAIN}` MX → 127.0.0.1, `remote_smtp_port` = the sink's port) and delivers with its "
            f"default concurrency. **Postfix** (Debian's package, stock settings, a private instance) takes the "
            f"mail on its smtpd port with STARTTLS (relaying is allowed from 127.0.0.0/8, no AUTH: that would "
            f"need a SASL server), queues it and relays it to `relayhost = [127.0.0.1]:SINK` with its default "
            f"concurrency; it neither signs nor keeps a copy. Neither side's client uses TLS to the sink "
            f"(smtp-sink offers none). \"Extra messages at the sink\" would count duplicates (should be 0).")

    def versions(self) -> dict[str, str | None]:
        return {"postfix": postfix.version()}

    def parameters(self) -> dict:
        return {"messages": self.messages, "sessions": self.sessions, "body_bytes": self.size,
                "warmup_messages": self.warmup, "recipients_per_message": 1}

    def setup(self) -> None:
        self.dns = DNSServer().start()
        self.dns.add(SINK_DOMAIN, "MX", f"10 mx.{SINK_DOMAIN}")
        self.dns.add(f"mx.{SINK_DOMAIN}", "A", "127.0.0.1")

    def teardown(self) -> None:
        self.dns.stop()

    def run_once(self, target: str, work: Path, procs: Processes, profile: Path | None = None) -> dict:
        work.mkdir(parents=True)
        work.chmod(0o755)
        sink = SmtpSink(procs, work / "smtp-sink.log", hostname=f"mx.{SINK_DOMAIN}").start()
        if target == OURS:
            server = OpenMailserver(procs, work / "openmailserver", DOMAIN, self.dns.address,
                                    remote_smtp_port=sink.port, max_sends_per_hour=UNLIMITED_SENDS).start()
            server.create_mailbox("sender", password=PASSWORD)
            port, credentials = server.settings["submission_starttls_port"], (SENDER, PASSWORD)
        else:
            tls = self_signed(work / "tls", f"mx.{DOMAIN}")
            server = PrivatePostfix(procs, work / "postfix", DOMAIN, [], relayhost=f"[127.0.0.1]:{sink.port}",
                                    tls=tls).start()
            port, credentials = server.port, None
        try:
            return asyncio.run(self._measure(server, sink, port, credentials, procs, profile))
        except Exception as exc:
            raise RuntimeError(f"{target}: {exc}\n{server.log_tail()}") from exc
        finally:
            server.stop()
            sink.stop()

    async def _measure(self, server, sink: SmtpSink, port: int, credentials, procs: Processes,
                       profile: Path | None) -> dict:
        submitter = Submitter(port, self.sessions, self.size, credentials)
        try:
            await submitter.connect()
            if self.warmup:
                await submitter.send(0, self.warmup)
                await sink.wait_for(self.warmup, 120)
            background = background_load()
            profiler = PySpy(procs, server.pid, profile / f"{self.name}.raw") if profile else None
            cpu_before = CpuSample.take([server.pgid])
            start = time.monotonic()
            await submitter.send(self.warmup, self.messages)
            accepted = time.monotonic()
            done = await sink.wait_for(self.warmup + self.messages, self.timeout)
            cpu = cpu_before.until(CpuSample.take([server.pgid]))
            if profiler:
                profiler.stop()
        finally:
            await submitter.close()
        await asyncio.sleep(1.0)  # a duplicate delivery would show up by now
        seconds = done - start
        return {
            "value": round(self.messages / seconds, 1),
            "seconds": round(seconds, 3),
            "accept_rate": round(self.messages / (accepted - start), 1),
            "sink_extra": sink.count - self.warmup - self.messages,
            "background_cpu_cores": round(background, 3),
            "server_cpu_ms_per_message": round(1000 * cpu["server_cpu_seconds"] / self.messages, 2),
            **cpu,
        }
