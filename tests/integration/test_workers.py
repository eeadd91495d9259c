"""The daemon as a supervisor and two worker processes: every worker serves every listener,
and what must hold for the whole daemon holds across them. Each test puts its connections
on named workers (the SMTP greeting, the IMAP ID response and the HTTP header say which
worker took a connection) and asserts it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import imaplib
import json
import os
import re
import signal
import smtplib
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websockets
from support.mail import build_message, insecure_tls, wait_for
from support.webhook_receiver import Receiver

PASSWORD = "worker test password"
TRIES = 200  # connections tried before giving up on reaching a given worker


def smtp_on(daemon, worker: int, port: int | None = None) -> smtplib.SMTP:
    """An SMTP session that worker `worker` accepted."""
    for _ in range(TRIES):
        client = smtplib.SMTP(timeout=30)
        code, banner = client.connect("127.0.0.1", port or daemon.smtp_port)
        if f"(worker {worker})".encode() in banner:
            return client
        client.close()
    raise AssertionError(f"no SMTP connection reached worker {worker}")


def imap_worker(client: imaplib.IMAP4) -> int:
    typ, data = client.xatom("ID", "NIL")
    found = re.search(rb'"worker" "(\d+)"', b"".join(client.untagged_responses.pop("ID", [])))
    assert found, data
    return int(found.group(1))


def imap_on(daemon, worker: int, user: str | None = None) -> imaplib.IMAP4:
    for _ in range(TRIES):
        client = imaplib.IMAP4("127.0.0.1", daemon.settings["imap_port"], timeout=30)
        if imap_worker(client) == worker:
            if user:
                client.login(user, PASSWORD)
            return client
        client.logout()
    raise AssertionError(f"no IMAP connection reached worker {worker}")


def http_worker(response: httpx.Response) -> int:
    return int(response.headers["x-openmailserver-worker"])


@pytest.fixture
def daemon(make_daemon):
    daemon = make_daemon("w", workers=2, webhook_allowed_hosts="127.0.0.1", webhook_retry_schedule="1s")
    daemon.create_mailbox("alice", password=PASSWORD)
    daemon.create_mailbox("bob", password=PASSWORD)
    return daemon


def test_every_worker_serves_every_listener_and_health_counts_them(daemon):
    for worker in (1, 2):
        smtp_on(daemon, worker).quit()
        imap_on(daemon, worker).logout()
    answered = {http_worker(httpx.get(f"{daemon.api_url}/health", headers={"Connection": "close"}))
                for _ in range(TRIES) if True}
    assert answered == {1, 2}
    health = httpx.get(f"{daemon.api_url}/health").json()
    workers = health["workers"]
    assert workers["count"] == 2 and workers["serving"] == 2 and workers["status"] == "ok"
    assert len({w["pid"] for w in workers["workers"]}) == 2
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert [w["serving"] for w in status["workers"]] == [True, True]


def test_idle_on_one_worker_hears_a_delivery_on_the_other(daemon):
    idler = imap_on(daemon, 1, "alice@w.test")
    idler.select("INBOX")
    tag = idler._new_tag().decode()
    idler.send(f"{tag} IDLE\r\n".encode())
    assert idler.readline().startswith(b"+")
    client = smtp_on(daemon, 2)
    client.sendmail("x@remote.test", ["alice@w.test"], build_message("x@remote.test", "alice@w.test", "cross"))
    acknowledged = time.monotonic()
    client.quit()
    idler.sock.settimeout(5)
    line = idler.readline()
    assert re.match(rb"\* 1 EXISTS", line), line
    assert time.monotonic() - acknowledged < 1.0
    idler.send(b"DONE\r\n")
    while not idler.readline().startswith(tag.encode()):
        pass
    idler.logout()


def test_two_sessions_on_one_mailbox_in_different_workers(daemon):
    first = imap_on(daemon, 1, "bob@w.test")
    second = imap_on(daemon, 2, "bob@w.test")
    for client in (first, second):
        client.select("INBOX")
    assert first.append("INBOX", None, None, build_message("x@remote.test", "bob@w.test", "one"))[0] == "OK"
    first.append("INBOX", None, None, build_message("x@remote.test", "bob@w.test", "two"))
    second.noop()
    assert second.untagged_responses.pop("EXISTS", [b""])[-1] == b"2"
    first.store("1", "+FLAGS", "(\\Flagged)")
    second.noop()
    fetched = b" ".join(second.untagged_responses.pop("FETCH", []))
    assert b"\\Flagged" in fetched, fetched
    first.store("2", "+FLAGS", "(\\Deleted)")
    first.expunge()
    second.noop()  # RFC 3501 §7.4.1: the expunge is announced to the other session
    assert second.untagged_responses.pop("EXPUNGE", []) == [b"2"]
    typ, data = second.search(None, "ALL")
    assert data == [b"1"]
    for client in (first, second):
        client.logout()


def test_new_mail_is_recent_in_one_session_of_all_workers(daemon):
    """RFC 3501 §2.3.2: a message is \\Recent in one session only, whichever worker runs it:
    a delivery, and an APPEND by one of the sessions, while both have the folder selected."""
    daemon.create_mailbox("carol", password=PASSWORD)
    sessions = [imap_on(daemon, 1, "carol@w.test"), imap_on(daemon, 2, "carol@w.test")]
    for client in sessions:
        client.select("INBOX")
    client = smtp_on(daemon, 1)
    client.sendmail("x@remote.test", ["carol@w.test"], build_message("x@remote.test", "carol@w.test", "r1"))
    client.quit()
    sessions[0].append("INBOX", None, None, build_message("x@remote.test", "carol@w.test", "r2"))

    def recent(client: imaplib.IMAP4) -> list[bytes]:
        client.noop()
        return client.uid("SEARCH", "RECENT")[1][0].split()

    wait_for(lambda: all(c.uid("SEARCH", "ALL")[1][0].split() == [b"1", b"2"] for c in sessions), timeout=10)
    seen = [recent(c) for c in sessions]
    assert sorted(seen[0] + seen[1]) == [b"1", b"2"], seen
    typ, data = sessions[1].status("INBOX", "(RECENT)")
    assert b"RECENT 0" in data[0]  # none left for a session yet to come
    for client in sessions:
        client.logout()


def test_flag_renames_in_two_workers_leave_the_name_the_index_holds(daemon):
    """Each worker renames message files after flag changes, later and on its own thread. A
    rename queued by an earlier change in a busy worker runs after that of a later change in
    an idle one: the file must keep the later change's name (the one in the index)."""
    daemon.create_mailbox("dave", password=PASSWORD)
    earlier, later, busy = (imap_on(daemon, 1, "dave@w.test"), imap_on(daemon, 2, "dave@w.test"),
                            imap_on(daemon, 1, "dave@w.test"))
    earlier.append("INBOX", None, None, build_message("x@remote.test", "dave@w.test", "renamed"))
    for client in (earlier, later):
        client.select("INBOX")
    folder = daemon.maildir("dave@w.test")
    on_disk = lambda: sorted(p.name for sub in ("new", "cur") for p in (folder / sub).iterdir())  # noqa: E731
    indexed = lambda: [Path(daemon.sqlite("SELECT filename FROM messages")[0][0]).name]  # noqa: E731
    wait_for(lambda: on_disk() == indexed())
    earlier.store("1", "+FLAGS", "(\\Seen)")  # worker 1 queues its rename, then stays busy
    later.store("1", "+FLAGS", "(\\Flagged)")  # worker 2 renames within some 50 ms
    until = time.monotonic() + 0.8
    while time.monotonic() < until:
        busy.noop()
    assert indexed()[0].endswith(":2,FS")
    wait_for(lambda: on_disk() == indexed(), timeout=5)
    time.sleep(2.5)  # worker 1's rename has surely run by now (it waits 2 s at most)
    assert on_disk() == indexed()
    for client in (earlier, later, busy):
        client.logout()


def test_one_idempotency_key_sends_once_across_workers(daemon):
    key = daemon.create_mailbox("agent")["api_key"]["key"]
    idem = str(uuid.uuid4())
    body = {"sender": "agent@w.test", "recipients": ["alice@w.test"], "subject": "exactly once", "text_body": "x"}

    def attempt(_: int) -> httpx.Response:
        return httpx.post(f"{daemon.api_url}/v1/mail/send", json=body, timeout=30,
                          headers={"X-OpenMailserver-Key": key, "Idempotency-Key": idem, "Connection": "close"})

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(attempt, range(20)))
    assert {http_worker(r) for r in responses} == {1, 2}
    assert {r.status_code for r in responses} <= {200, 409}, [r.text for r in responses]
    sent = {r.json()["id"] for r in responses if r.status_code == 200}
    assert len(sent) == 1
    conflicts = [r.json() for r in responses if r.status_code == 409]
    assert all(c["error"] == "idempotency_in_progress" for c in conflicts)
    replay = attempt(0)
    assert replay.status_code == 200 and replay.json()["id"] in sent
    with daemon.http() as admin:
        subjects = [m["subject"] for m in admin.get("/v1/mailboxes/alice@w.test/messages").json()]
    assert subjects.count("exactly once") == 1


def test_failed_logins_count_over_every_worker_and_protocol(make_daemon):
    daemon = make_daemon("t", workers=2, auth_failure_limit=4)
    daemon.create_mailbox("victim", password=PASSWORD)
    for worker in (1, 2):  # two wrong passwords over IMAP on each worker
        client = imap_on(daemon, worker)
        for _ in range(2):
            with pytest.raises(imaplib.IMAP4.error):
                client.login("victim@t.test", "wrong")
        client.logout()
    client = imap_on(daemon, 1)  # now even the right password is refused, on either worker
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        client.login("victim@t.test", PASSWORD)
    client.logout()
    submission = daemon.settings["submission_starttls_port"]
    for _ in range(10):  # submission refuses the address too, at connect time or at AUTH, in both workers
        client = smtplib.SMTP(timeout=30)
        code, banner = client.connect("127.0.0.1", submission)
        if code == 421:
            assert b"failed logins" in banner
            client.close()
            continue
        client.starttls(context=insecure_tls())
        client.ehlo("client.test")
        with pytest.raises(smtplib.SMTPException) as refused:
            client.login("victim@t.test", PASSWORD)
        assert getattr(refused.value, "smtp_code", 0) == 421, refused.value
        client.close()


def test_services_run_once_and_webhooks_arrive_once(daemon):
    key = daemon.create_mailbox("hooked")["api_key"]["key"]
    with Receiver() as receiver, daemon.http(key) as client:
        hook = client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["message.received"]}).json()
        receiver.secret = hook["secret"]
        for n in range(20):
            sender = smtp_on(daemon, 1 + n % 2)
            sender.sendmail("x@remote.test", ["hooked@w.test"], build_message("x@remote.test", "h", f"hook {n}"))
            sender.quit()
        wait_for(lambda: len(receiver.events("message.received")) >= 20, timeout=30)
        time.sleep(2)  # a second dispatcher would post again meanwhile
        ids = [r["body"]["event_id"] for r in receiver.events("message.received")]
        assert len(ids) == len(set(ids)) == 20 and all(r["valid"] for r in receiver.requests)
    db_leases = daemon.sqlite("SELECT name, holder FROM leases ORDER BY name")
    assert [name for name, _ in db_leases] == ["queue", "webhooks"]
    pids = {w["pid"] for w in httpx.get(f"{daemon.api_url}/health").json()["workers"]["workers"]}
    assert {int(holder.rsplit(":", 1)[1]) for _, holder in db_leases} <= pids


def test_websocket_on_one_worker_streams_a_delivery_on_the_other(daemon):
    key = daemon.create_mailbox("streamer")["api_key"]["key"]
    url = daemon.api_url.replace("http", "ws") + f"/v1/ws?key={key}"

    async def scenario() -> dict:
        for _ in range(TRIES):
            async with websockets.connect(url) as ws:
                if ws.response.headers.get("x-openmailserver-worker") != "1":
                    continue
                await ws.send(json.dumps({"type": "subscribe"}))
                assert json.loads(await ws.recv())["type"] == "subscribed"
                sender = await asyncio.to_thread(smtp_on, daemon, 2)
                await asyncio.to_thread(sender.sendmail, "x@remote.test", ["streamer@w.test"],
                                        build_message("x@remote.test", "s", "streamed"))
                await asyncio.to_thread(sender.quit)
                return json.loads(await asyncio.wait_for(ws.recv(), 5))
        raise AssertionError("no WebSocket reached worker 1")

    event = asyncio.run(scenario())
    assert event["event"] == "message.received" and event["message"]["subject"] == "streamed"


def test_a_killed_worker_is_replaced_and_the_daemon_serves_on(daemon):
    health = httpx.get(f"{daemon.api_url}/health").json()
    victim = next(w for w in health["workers"]["workers"] if w["worker"] == 2)
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced():
        try:
            workers = httpx.get(f"{daemon.api_url}/health", headers={"Connection": "close"}).json()["workers"]
        except httpx.HTTPError:  # a connection the dying worker had accepted
            return False
        second = workers["workers"][1]
        return workers["serving"] == 2 and second["pid"] != victim["pid"] and second["restarts"] == 1 and workers

    wait_for(replaced, timeout=20)
    assert re.search(r"worker 2 \(pid \d+\) died \(signal SIGKILL\)", daemon.output())
    smtp_on(daemon, 2).quit()
    socket.create_connection(("127.0.0.1", daemon.smtp_port)).close()
