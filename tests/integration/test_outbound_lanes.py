"""The queue's connections to one destination: a busy domain keeps its few connections and
sends chunk after chunk on them; a connection the remote dropped between messages is
replaced without deferring anything; every message arrives once.

The remote is a real SMTP server (aiosmtpd) on loopback that records each connection
and each message, standing in for another MTA.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from email import message_from_bytes
from typing import Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from conftest import free_port
from support.mail import wait_for

SINK_DOMAIN = "sink.test"


class RecordingMX:
    """Records connections and messages; optionally slow, optionally hangs up after every
    `drop_after` messages on a connection (as a server with a per-connection limit does).
    Until `gate` is set, it holds every message at DATA."""

    def __init__(self, delay: float = 0.0, drop_after: int = 0) -> None:
        self.delay, self.drop_after = delay, drop_after
        self.gate = threading.Event()
        self.gate.set()
        self.connections = 0
        self.message_ids: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Recording(SMTP):
            def connection_made(self, transport):
                with outer.lock:
                    outer.connections += 1
                self.transactions = 0
                super().connection_made(transport)

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                while not outer.gate.is_set():
                    await asyncio.sleep(0.01)
                if outer.delay:
                    await asyncio.sleep(outer.delay)
                with outer.lock:
                    outer.message_ids.append(message_from_bytes(envelope.original_content)["Message-ID"])
                server.transactions += 1
                if outer.drop_after and server.transactions >= outer.drop_after:
                    # Accept this one, then hang up before the next MAIL.
                    asyncio.get_running_loop().call_soon(server.transport.close)
                return "250 2.0.0 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=free_port(),
                                     server_hostname="mx.sink.test")
        self.controller.factory = lambda: Recording(self.controller.handler, hostname="mx.sink.test")

    @property
    def port(self) -> int:
        return self.controller.port

    def __enter__(self) -> Self:
        self.controller.start()
        with self.lock:
            self.connections = 0  # the controller's own test connection, made by start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


def _sender(make_daemon, dns_server, mx: RecordingMX, **settings):
    dns_server.add(SINK_DOMAIN, "MX", f"10 mx.{SINK_DOMAIN}")
    dns_server.add(f"mx.{SINK_DOMAIN}", "A", "127.0.0.1")
    a = make_daemon("a", dns_nameservers=[dns_server.address], remote_smtp_port=mx.port,
                    retry_schedule="1h", max_sends_per_hour=1000, **settings)
    agent = a.create_mailbox("agent")
    return a, agent["api_key"]["key"]


def _send_many(a, key: str, count: int) -> list[str]:
    """Send `count` messages, over four API connections at once."""
    def send(n: int) -> str:
        with a.http(key) as client:
            response = client.post("/v1/mail/send", json={
                "sender": "agent@a.test", "recipients": [f"rcpt{n % 3}@{SINK_DOMAIN}"],
                "subject": f"lane test {n}", "text_body": f"message {n}"})
        assert response.status_code in (200, 201, 202), response.text
        return response.json()["message_id"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(send, range(count)))


def _all_delivered(a) -> list[dict] | None:
    rows = json.loads(a.cli("queue", "list", "--json").stdout)
    return rows if rows and all(r["state"] == "delivered" for r in rows) else None


def test_busy_domain_reuses_its_connections(make_daemon, dns_server):
    with RecordingMX(delay=0.05) as mx:
        a, key = _sender(make_daemon, dns_server, mx, delivery_concurrency_per_domain=2)
        mx.gate.clear()  # the first messages wait at DATA until all 40 are queued
        sent = _send_many(a, key, 40)
        mx.gate.set()
        wait_for(lambda: len(mx.message_ids) >= 40, timeout=60)
        time.sleep(0.5)  # a duplicate would arrive by now
        assert sorted(mx.message_ids) == sorted(f"<{i.strip('<>')}>" for i in sent)
        # The domain has more mail than its lanes take at once: the two lanes stay open and take
        # chunk after chunk instead of reconnecting for each batch the dispatcher sees.
        assert mx.connections <= 2, mx.connections
        wait_for(lambda: _all_delivered(a))


def test_connection_dropped_between_messages_is_replaced(make_daemon, dns_server):
    with RecordingMX(delay=0.05, drop_after=3) as mx:
        a, key = _sender(make_daemon, dns_server, mx, delivery_concurrency_per_domain=1)
        # Queue them while the lane is busy so one connection has to carry several.
        sent = _send_many(a, key, 12)
        wait_for(lambda: len(mx.message_ids) >= 12, timeout=60)
        time.sleep(0.5)
        assert sorted(mx.message_ids) == sorted(f"<{i.strip('<>')}>" for i in sent)
        rows = wait_for(lambda: _all_delivered(a), timeout=30)
        assert mx.connections >= 4  # the remote did hang up on connections that carried three
        # Nothing waited for a retry (the schedule is an hour): each row took one attempt.
        assert len(rows) == 12 and all(r["attempts"] == 1 for r in rows), rows

