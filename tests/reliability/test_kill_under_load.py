"""SIGKILL under continuous SMTP and API load, five times: nothing acknowledged is lost.

Two runs. In one, a worker process is killed each time and the supervisor starts
a replacement while the other worker serves on. In the other, the supervisor is
killed (its workers die with it) and the daemon is started again.

Afterwards: each message the MX acknowledged is in the mailbox exactly once;
each message the API acknowledged reaches the receiving daemon exactly once, and
no message reaches it twice (no outbound row is sent twice); every
`message.received` event reaches the webhook at least once (duplicates carry the
same `event_id`). `OMS_RELIABILITY_SCALE` (default 1) multiplies the load;
`make bench` runs it bigger.
"""

from __future__ import annotations

import os
import random
import re
import signal
import smtplib
import threading
import time
import uuid
from collections import Counter
from email import message_from_bytes

import httpx
import pytest

from support.mail import build_message, wait_for
from support.webhook_receiver import Receiver

KILLS = 5
SCALE = float(os.environ.get("OMS_RELIABILITY_SCALE", "1"))


def _smtp_load(port: int, acked: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        token = f"in-{uuid.uuid4().hex[:12]}"
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                client.sendmail("load@remote.test", ["alice@a.test"],
                                build_message("load@remote.test", "alice@a.test", token))
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)
            continue
        acked.append(token)


def _api_load(url: str, key: str, acked: list[str], stop: threading.Event) -> None:
    """An agent that retries with the same Idempotency-Key until the API answers."""
    while not stop.is_set():
        subject, idem = f"out-{uuid.uuid4().hex[:12]}", str(uuid.uuid4())
        body = {"sender": "alice@a.test", "recipients": ["bob@b.test"], "subject": subject, "text_body": subject}
        while True:
            try:
                response = httpx.post(f"{url}/v1/mail/send", json=body, timeout=5,
                                      headers={"X-OpenMailserver-Key": key, "Idempotency-Key": idem})
                if response.status_code == 200:
                    acked.append(subject)
                    break
            except httpx.HTTPError:
                pass
            if stop.is_set():
                return  # an unacknowledged send may or may not have happened: not counted
            time.sleep(0.1)
        time.sleep(0.2 / SCALE)


def _kill_a_worker(daemon) -> None:
    """SIGKILL one worker at random; return once the supervisor has replaced it."""
    workers = httpx.get(f"{daemon.api_url}/health", timeout=5).json()["workers"]["workers"]
    victim = random.choice(workers)
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        try:
            now = httpx.get(f"{daemon.api_url}/health", timeout=5).json()["workers"]
        except httpx.HTTPError:
            return False
        return now["serving"] == len(workers) and victim["pid"] not in {w["pid"] for w in now["workers"]}

    wait_for(replaced, timeout=30)


@pytest.mark.parametrize("victim", ["worker", "supervisor"])
def test_five_sigkills_under_load_lose_nothing(make_daemon, dns_server, victim):
    b = make_daemon("b", dns_nameservers=[dns_server.address])
    b.create_mailbox("bob")
    a = make_daemon("a", dns_nameservers=[dns_server.address], remote_smtp_port=b.smtp_port, retry_schedule="1s",
                    webhook_allowed_hosts="127.0.0.1", webhook_retry_schedule="1s,1s,1s,1s,1s,1s,1s,1s",
                    max_sends_per_hour=100000)
    dns_server.add("b.test", "MX", "10 mx.b.test")
    dns_server.add("mx.b.test", "A", "127.0.0.1")
    key = a.create_mailbox("alice")["api_key"]["key"]
    inbound, outbound = [], []
    with Receiver() as receiver:
        with a.http(key) as client:
            receiver.secret = client.post("/v1/webhooks", json={"url": receiver.url,
                                                                "event_types": ["message.received"]}).json()["secret"]
        stop = threading.Event()
        workers = [threading.Thread(target=_smtp_load, args=(a.smtp_port, inbound, stop))
                   for _ in range(max(1, int(3 * SCALE)))]
        workers += [threading.Thread(target=_api_load, args=(a.api_url, key, outbound, stop))
                    for _ in range(max(1, int(2 * SCALE)))]
        for worker in workers:
            worker.start()
        try:
            for _ in range(KILLS):
                time.sleep(random.uniform(0.7, 1.5) * SCALE)
                if victim == "worker":
                    _kill_a_worker(a)
                else:
                    a.kill()
                    a.start()
            time.sleep(1.0)
        finally:
            stop.set()
            for worker in workers:
                worker.join()

        subjects_at_b = lambda: Counter(message_from_bytes(m)["Subject"] for m in b.messages_on_disk("bob@b.test"))
        wait_for(lambda: all(s in subjects_at_b() for s in outbound), timeout=60)
        at_b = subjects_at_b()
        at_a = Counter(message_from_bytes(m)["Subject"] for m in a.messages_on_disk("alice@a.test"))
        with a.http(key) as client:
            events = client.get("/v1/events", params={"types": "message.received", "limit": 1000}).json()["events"]
        wanted = {e["event_id"] for e in events}
        wait_for(lambda: wanted <= {r["body"]["event_id"] for r in receiver.events()}, timeout=60)
        hooks = receiver.events()
        duplicates = Counter(r["body"]["event_id"] for r in hooks)
        print(f"\nkill under load: {KILLS} SIGKILLs of the {victim}; inbound acknowledged {len(inbound)}, found "
              f"{sum(at_a[t] for t in inbound)}, duplicates {sum(1 for t in inbound if at_a[t] > 1)}; "
              f"outbound acknowledged {len(outbound)}, delivered {sum(at_b[s] for s in outbound)}, "
              f"duplicates {sum(1 for s in outbound if at_b[s] > 1)}; webhook events {len(wanted)}, "
              f"posts {len(hooks)} ({sum(1 for n in duplicates.values() if n > 1)} redelivered)")
        assert len(inbound) > 10 and len(outbound) > 5
        assert [t for t in inbound if at_a[t] != 1] == []
        assert [s for s in outbound if at_b[s] != 1] == []
        assert [s for s, n in at_b.items() if n > 1] == []  # not even a send that was never acknowledged
        if victim == "worker":
            health = httpx.get(f"{a.api_url}/health").json()["workers"]
            assert sum(w["restarts"] for w in health["workers"]) == KILLS and health["serving"] == 2
            assert len(re.findall(r"worker \d \(pid \d+\) died \(signal SIGKILL\)", a.output(tail=None))) == KILLS
        assert all(r["valid"] for r in hooks)
        assert {r["body"]["message"]["subject"] for r in hooks} >= set(inbound)
