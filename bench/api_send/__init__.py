"""Rate and latency of `POST /v1/mail/send`: N requests from 10 concurrent clients, to a
local recipient (delivered before the answer) and to a remote one (queued before the answer,
then delivered to smtp-sink while the load goes on). The daemon with its default worker
processes (one per core) against the same daemon with one worker: no other server has this
API, so the comparison is with ourselves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from bench.harness.dns import DNSServer
from bench.harness.measure import CpuSample, background_load
from bench.harness.procs import Processes
from bench.harness.profile import PySpy
from bench.harness.runner import Benchmark, Metric
from bench.harness.sink import SmtpSink
from bench.harness.stats import percentile
from bench.targets.openmailserver import OpenMailserver

DOMAIN = "bench.test"
SINK_DOMAIN = "sink.test"
UNLIMITED_SENDS = 1_000_000_000
ONE_WORKER = "1 worker"
BODY = "Hello from the API send benchmark.\n" * 40  # about 1.4 KB of text


class ApiSend(Benchmark):
    name = "api_send"
    anchor = ONE_WORKER
    columns = {
        "remote_delivered_seconds": "remote: s until the sink had all",
        "server_cpu_ms_per_request": "server CPU ms / request",
        "machine_cpu_busy_cores": "machine CPU busy (cores)",
        "background_cpu_cores": "busy before run, other work (cores)",
    }

    def __init__(self, requests: int = 1000, clients: int = 10, warmup: int = 50, timeout: float = 600.0) -> None:
        self.requests, self.clients, self.warmup, self.timeout = requests, clients, warmup, timeout
        self.metrics = (
            Metric("local_requests_per_second", "local recipient", "requests/s"),
            Metric("remote_requests_per_second", "remote recipient", "requests/s"),
            Metric("local_p50_ms", "local recipient p50", "ms", higher_is_better=False),
            Metric("local_p99_ms", "local recipient p99", "ms", higher_is_better=False),
            Metric("remote_p50_ms", "remote recipient p50", "ms", higher_is_better=False),
            Metric("remote_p99_ms", "remote recipient p99", "ms", higher_is_better=False),
        )
        self.title = (f"API send: {requests} × POST /v1/mail/send, {clients} concurrent clients, default "
                      f"workers vs 1 worker")
        self.short_title = "API send (default workers vs 1)"
        self.description = (
            f"{clients} concurrent HTTP clients (httpx, one keep-alive connection each) send {requests} "
            f"`POST /v1/mail/send` requests in all, with the sending mailbox's API key, each with a text body of "
            f"about 1.4 KB; the latency of each request is measured at the client, from sending the request to "
            f"reading the whole answer. First {requests} requests to a local recipient (a mailbox on the same "
            f"server: the answer comes after the message is durably in the recipient's INBOX and in the sender's "
            f"`Sent`), then {requests} to a remote recipient (the answer comes after the message is durably "
            f"queued and in `Sent`; meanwhile the queue delivers to Postfix's `smtp-sink` found through a "
            f"loopback DNS MX record, which competes for the CPU as it would in service). Every answer must be "
            f"200. {warmup} untimed requests go first. `max_sends_per_hour` is raised out of the way. "
            f"Postfix and Dovecot have no HTTP send API, so the anchor is openmailserver itself with "
            f"`workers = 1`; **openmailserver** here is the default, one worker per core.")

    def parameters(self) -> dict:
        return {"requests_per_recipient_kind": self.requests, "concurrent_clients": self.clients,
                "warmup_requests": self.warmup, "text_body_bytes": len(BODY)}

    def setup(self) -> None:
        self.dns = DNSServer().start()
        self.dns.add(SINK_DOMAIN, "MX", f"10 mx.{SINK_DOMAIN}")
        self.dns.add(f"mx.{SINK_DOMAIN}", "A", "127.0.0.1")

    def teardown(self) -> None:
        self.dns.stop()

    def run_once(self, target: str, work: Path, procs: Processes, profile: Path | None = None) -> dict:
        work.mkdir(parents=True)
        sink = SmtpSink(procs, work / "smtp-sink.log", hostname=f"mx.{SINK_DOMAIN}").start()
        server = OpenMailserver(procs, work / "openmailserver", DOMAIN, self.dns.address,
                                remote_smtp_port=sink.port, max_sends_per_hour=UNLIMITED_SENDS,
                                workers=1 if target == ONE_WORKER else 0).start()
        try:
            key = server.create_mailbox("agent")["api_key"]["key"]
            server.create_mailbox("inbox")
            return asyncio.run(self._measure(server, sink, key, procs, profile))
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{server.log_tail()}") from exc
        finally:
            server.stop()
            sink.stop()

    async def _measure(self, server: OpenMailserver, sink: SmtpSink, key: str, procs: Processes,
                       profile: Path | None) -> dict:
        clients = [httpx.AsyncClient(base_url=server.api_url, headers={"X-OpenMailserver-Key": key}, timeout=60,
                                     limits=httpx.Limits(max_connections=1)) for _ in range(self.clients)]
        try:
            await self._load(clients, f"inbox@{DOMAIN}", self.warmup, "warm-up")
            background = background_load()
            profiler = PySpy(procs, server.pid, profile / f"{self.name}.raw") if profile else None
            cpu_before = CpuSample.take([server.pgid])
            local, local_seconds = await self._load(clients, f"inbox@{DOMAIN}", self.requests, "local")
            remote_start = time.monotonic()
            remote, remote_seconds = await self._load(clients, f"rcpt@{SINK_DOMAIN}", self.requests, "remote")
            delivered = await sink.wait_for(self.requests, self.timeout)
            cpu = cpu_before.until(CpuSample.take([server.pgid]))
            if profiler:
                profiler.stop()
        finally:
            for client in clients:
                await client.aclose()
        return {
            "local_p50_ms": round(percentile(local, 50), 2),
            "local_p99_ms": round(percentile(local, 99), 2),
            "remote_p50_ms": round(percentile(remote, 50), 2),
            "remote_p99_ms": round(percentile(remote, 99), 2),
            "local_mean_ms": round(sum(local) / len(local), 2),
            "remote_mean_ms": round(sum(remote) / len(remote), 2),
            "local_requests_per_second": round(self.requests / local_seconds, 1),
            "remote_requests_per_second": round(self.requests / remote_seconds, 1),
            "remote_delivered_seconds": round(delivered - remote_start, 2),
            "background_cpu_cores": round(background, 3),
            "server_cpu_ms_per_request": round(1000 * cpu["server_cpu_seconds"] / (2 * self.requests), 2),
            **cpu,
        }

    async def _load(self, clients: list[httpx.AsyncClient], recipient: str, count: int,
                    label: str) -> tuple[list[float], float]:
        """`count` sends spread over the clients, each client one request at a time;
        returns each request's latency in ms and the seconds the whole batch took."""
        latencies: list[float] = []
        numbers = iter(range(count))

        async def worker(client: httpx.AsyncClient) -> None:
            for n in numbers:
                body = {"sender": f"agent@{DOMAIN}", "recipients": [recipient],
                        "subject": f"api send benchmark {label} {n}", "text_body": BODY}
                started = time.perf_counter()
                response = await client.post("/v1/mail/send", json=body)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"POST /v1/mail/send answered {response.status_code}: {response.text[:300]}")
                latencies.append(1000 * elapsed)

        started = time.monotonic()
        await asyncio.gather(*(worker(client) for client in clients))
        return latencies, time.monotonic() - started
