"""`POST /v1/mail/send`, outbound records and the queue API against two real daemons."""

from __future__ import annotations

import base64
import concurrent.futures
import subprocess
from email import message_from_bytes, policy

import httpx
import pytest

from support.mail import wait_for


@pytest.fixture
def pair(make_daemon, dns_server):
    b = make_daemon("b", dns_nameservers=[dns_server.address])
    a = make_daemon("a", dns_nameservers=[dns_server.address], remote_smtp_port=b.smtp_port,
                    retry_schedule="1s", max_sends_per_hour=50)
    dns_server.add("b.test", "MX", "10 mx.b.test")
    dns_server.add("mx.b.test", "A", "127.0.0.1")
    agent = a.create_mailbox("agent")
    other = a.create_mailbox("other")
    b.create_mailbox("bob")
    return a, b, agent, other


def _send(a, key, **body):
    with a.http(key) as client:
        return client.post("/v1/mail/send", json=body)


def test_seed_curl_example_runs_as_written(pair):
    a, _, agent, _ = pair
    key = agent["api_key"]["key"]
    result = subprocess.run([
        "curl", "-sS", "-X", "POST", f"{a.api_url}/v1/mail/send",
        "-H", "Content-Type: application/json", "-H", f"X-OpenMailserver-Key: {key}",
        "-d", '{"sender": "agent@a.test", "recipients": ["agent@a.test"], "subject": "hello", '
              '"text_body": "it works"}'], capture_output=True, text=True, timeout=30)
    import json
    body = json.loads(result.stdout)
    assert set(body) >= {"id", "sender", "recipients", "subject", "state", "message_id", "queue_id", "error",
                         "created_at", "sent_at"}
    assert body["state"] == "sent" and body["recipients"] == ["agent@a.test"]
    inbox = a.messages_on_disk("agent@a.test")
    assert len(inbox) == 1 and b"it works" in inbox[0]
    with a.http(key) as client:
        [listed] = client.get("/v1/mailboxes/agent@a.test/messages").json()
        assert listed["subject"] == "hello"
        full = client.get(f"/v1/messages/{listed['id']}", params={"address": "agent@a.test"}).json()
        assert full["body"].strip() == "it works"


def test_api_send_reaches_the_other_daemon_with_attachments(pair):
    a, b, agent, _ = pair
    pdf = b"%PDF-1.4 fake but binary \x00\x01\x02"
    response = _send(a, agent["api_key"]["key"], sender="agent@a.test", recipients=["bob@b.test"],
                     cc=[], subject="report", text_body="see attached", html_body="<p>see attached</p>",
                     reply_to="agent@a.test", headers={"X-Agent-Run": "42"},
                     attachments=[{"filename": "r.pdf", "content_type": "application/pdf",
                                   "content": base64.b64encode(pdf).decode()}])
    assert response.status_code == 200, response.text
    sent = response.json()
    assert sent["state"] in ("queued", "sent") and sent["queue_id"]
    [received] = wait_for(lambda: b.messages_on_disk("bob@b.test"))
    msg = message_from_bytes(received, policy=policy.default)
    assert msg["X-Agent-Run"] == "42" and msg["Reply-To"] == "agent@a.test" and msg["DKIM-Signature"]
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "r.pdf" and attachment.get_content() == pdf
    assert msg.get_body(("html",)).get_content().strip() == "<p>see attached</p>"
    with a.http(agent["api_key"]["key"]) as client:
        record = wait_for(lambda: (r := client.get(f"/v1/outbound/{sent['id']}").json())["state"] == "sent" and r)
        assert record["sent_at"]
        assert [o["id"] for o in client.get("/v1/outbound").json()] == [sent["id"]]
        [entry] = client.get("/v1/queue").json()
        assert set(entry) >= {"id", "state", "queue_id", "message_id", "error", "created_at"}
        assert entry["state"] == "delivered"
    assert len(a.messages_on_disk("agent@a.test", "Sent")) == 1


def test_multipart_form_with_files(pair):
    a, b, agent, _ = pair
    with a.http(agent["api_key"]["key"]) as client:
        response = client.post("/v1/mail/send", data={
            "sender": "agent@a.test", "recipients": "bob@b.test", "subject": "form", "text_body": "files"},
            files=[("attachments", ("a.txt", b"alpha", "text/plain")),
                   ("attachments", ("b.csv", b"x,y\n1,2\n", "text/csv"))])
    assert response.status_code == 200, response.text
    [received] = wait_for(lambda: b.messages_on_disk("bob@b.test"))
    msg = message_from_bytes(received, policy=policy.default)
    assert sorted(p.get_filename() for p in msg.iter_attachments()) == ["a.txt", "b.csv"]


def test_idempotency(pair):
    a, b, agent, _ = pair
    key = agent["api_key"]["key"]
    body = {"sender": "agent@a.test", "recipients": ["bob@b.test"], "subject": "once", "text_body": "only once"}
    headers = {"X-OpenMailserver-Key": key, "Idempotency-Key": "order-1234"}

    def post(_):
        return httpx.post(f"{a.api_url}/v1/mail/send", json=body, headers=headers, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(post, range(20)))
    ok = [r for r in responses if r.status_code == 200]
    assert ok and all(r.status_code in (200, 409) for r in responses)
    assert len({r.json()["id"] for r in ok}) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"] == "idempotency_in_progress"
    replay = post(0)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == ok[0].json()["id"]
    different = httpx.post(f"{a.api_url}/v1/mail/send", json={**body, "subject": "changed"}, headers=headers)
    assert different.status_code == 409 and different.json()["error"] == "idempotency_conflict"
    wait_for(lambda: b.messages_on_disk("bob@b.test"))
    with a.http() as admin:
        assert len(admin.get("/v1/outbound").json()) == 1
    assert len(b.messages_on_disk("bob@b.test")) == 1


def test_rate_limit_is_429_with_retry_after(make_daemon):
    a = make_daemon("a", max_sends_per_hour=1)
    agent = a.create_mailbox("agent")
    body = {"sender": "agent@a.test", "recipients": ["agent@a.test"], "subject": "x", "text_body": "y"}
    assert _send(a, agent["api_key"]["key"], **body).status_code == 200
    limited = _send(a, agent["api_key"]["key"], **body)
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 3601


def test_mailbox_keys_are_isolated(pair):
    a, _, agent, other = pair
    forged = _send(a, agent["api_key"]["key"], sender="other@a.test", recipients=["bob@b.test"], subject="x",
                   text_body="y")
    assert forged.status_code == 403 and forged.json()["error"] == "sender_not_allowed"
    header_forgery = _send(a, agent["api_key"]["key"], sender="agent@a.test", recipients=["bob@b.test"],
                           subject="x", text_body="y", headers={"From": "other@a.test"})
    assert header_forgery.status_code == 422
    mine = _send(a, other["api_key"]["key"], sender="other@a.test", recipients=["other@a.test"], subject="mine",
                 text_body="private").json()
    with a.http(agent["api_key"]["key"]) as client:
        assert client.get(f"/v1/outbound/{mine['id']}").status_code == 404
        assert client.get("/v1/outbound").json() == []
        assert client.get("/v1/queue").json() == []
        assert client.get("/v1/mailboxes/other@a.test/messages").status_code == 404
        [row] = httpx.get(f"{a.api_url}/v1/mailboxes/other@a.test/messages",
                          headers={"X-OpenMailserver-Key": other["api_key"]["key"]}).json()
        assert client.get(f"/v1/messages/{row['id']}", params={"address": "other@a.test"}).status_code == 404
        assert client.get(f"/v1/messages/{row['id']}").status_code == 404
        assert client.get(f"/v1/messages/{row['id']}/raw").status_code == 404
        assert client.get(f"/v1/messages/{row['id']}", params={"address": "../../x@y"}).status_code == 422
        assert client.post(f"/v1/queue/{mine['queue_id']}/retry").status_code == 403


@pytest.mark.parametrize("body,status", [
    ({"sender": "agent@a.test", "subject": "x", "text_body": "y"}, 422),
    ({"sender": "agent@a.test", "recipients": "not an address", "text_body": "y"}, 422),
    ({"sender": "agent@a.test", "recipients": ["bob@b.test"]}, 422),
    ({"sender": "agent@a.test", "recipients": ["bob@b.test"], "text_body": 5}, 422),
    ({"sender": "agent@a.test", "recipients": ["bob@b.test"], "text_body": "y", "subject": "x" * 2000}, 422),
    ({"sender": "agent@a.test", "recipients": ["bob@b.test"], "text_body": "y",
      "headers": {"X-Evil": "a\r\nBcc: victim@b.test"}}, 422),
    ({"sender": "agent@a.test", "recipients": ["bob@b.test"], "text_body": "y",
      "attachments": [{"filename": "../../etc/passwd", "content": "eA=="}]}, 422),
    ({"sender": "agent@a.test", "recipients": ["bob@b.test"], "text_body": "y",
      "attachments": [{"filename": "a.bin", "content": "%%%"}]}, 422),
    ({"sender": "agent@a.test", "recipients": ["ghost@a.test"], "text_body": "y"}, 422),
])
def test_bad_send_requests(pair, body, status):
    a, _, agent, _ = pair
    response = _send(a, agent["api_key"]["key"], **body)
    assert response.status_code == status, response.text
    assert set(response.json()) >= {"error", "message"}


def test_admin_queue_operations(pair):
    a, b, agent, _ = pair
    b.stop()
    sent = _send(a, agent["api_key"]["key"], sender="agent@a.test", recipients=["bob@b.test"], subject="q",
                 text_body="queued").json()
    with a.http() as admin:
        held = admin.post(f"/v1/queue/{sent['queue_id']}/hold")
        assert held.status_code == 200 and held.json()["state"] == "held"
        assert admin.post(f"/v1/queue/{sent['queue_id']}/hold").status_code == 409
        b.start()
        assert admin.post(f"/v1/queue/{sent['id']}/release").status_code == 200
        wait_for(lambda: b.messages_on_disk("bob@b.test"), timeout=15)
        assert admin.post(f"/v1/queue/{sent['id']}/frobnicate").status_code == 404
        assert admin.delete("/v1/queue/nothing").status_code == 404


def test_a_full_local_mailbox_is_refused(make_daemon):
    a = make_daemon("a")
    agent = a.create_mailbox("agent")
    a.create_mailbox("tiny", quota=100)
    response = _send(a, agent["api_key"]["key"], sender="agent@a.test", recipients=["tiny@a.test"], subject="big",
                     text_body="x" * 500)
    assert response.status_code == 422 and response.json()["error"] == "mailbox_full"
    assert a.messages_on_disk("tiny@a.test") == [] and a.messages_on_disk("agent@a.test", "Sent") == []
