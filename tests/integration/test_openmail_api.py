"""The OpenMail-style API (OpenMail's quickstart, integration guide and send reference) against two real daemons, as its documentation runs.

Daemon A hosts the agents (yourco.openmail.sh), daemon B the other side of the
conversations (airline.com and example.com); the loopback DNS server gives
both their MX records. The curl examples of the quickstart and the integration guide run with real
curl, the Python snippets of the integration guide run as written, and the SKILL.md of
`openmailserver skill` runs command by command; only the base URL, the key and
example ids are replaced.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from werkzeug.serving import make_server

from conftest import Daemon
from support.curl import run_curl
from support.dnsserver import DNSServer
from support.mail import wait_for
from support.pdf import pdf_with_text
from support.webhook_receiver import Receiver

SEED_BASE = "https://api.openmail.sh"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("openmail")
    dns = DNSServer().start()
    a = Daemon(base, "a", primary_domain="yourco.openmail.sh", hostname="mx.yourco.openmail.sh",
               dns_nameservers=[dns.address], webhook_allowed_hosts=["127.0.0.1"], webhook_retry_schedule="1s")
    b = Daemon(base, "b", primary_domain="airline.com", hostname="mx.airline.com", dns_nameservers=[dns.address])
    a.settings["remote_smtp_port"], b.settings["remote_smtp_port"] = b.smtp_port, a.smtp_port
    for domain, host in (("yourco.openmail.sh", "mx.yourco.openmail.sh"), ("airline.com", "mx.airline.com"),
                         ("example.com", "mx.airline.com")):
        dns.add(domain, "MX", f"10 {host}")
        dns.add(host, "A", "127.0.0.1")
    try:
        a.start()
        b.start()
        support = b.create_mailbox("support")["api_key"]["key"]
        recipient = b.create_mailbox("recipient", "example.com")["api_key"]["key"]
        yield {"a": a, "b": b, "support": support, "recipient": recipient}
    finally:
        for daemon in (a, b):
            try:
                daemon.stop()
            finally:
                daemon.kill()
        dns.stop()


def _admin(daemon: Daemon) -> httpx.Client:
    return httpx.Client(base_url=daemon.api_url, headers={"Authorization": f"Bearer {daemon.admin_key}"},
                        timeout=30)


def _newest(daemon: Daemon, key: str, address: str, subject: str, before: set[str] = frozenset()) -> dict:
    """The newest message with `subject` in the INBOX, waiting for one whose id is not in `before`."""
    with daemon.http(key) as client:
        return wait_for(lambda: next((m for m in client.get(f"/v1/mailboxes/{address}/messages").json()
                                      if m["subject"] == subject and m["id"] not in before), None), timeout=20)


def _ids(daemon: Daemon, key: str, address: str) -> set[str]:
    with daemon.http(key) as client:
        return {m["id"] for m in client.get(f"/v1/mailboxes/{address}/messages").json()}


def _send_from_b(world, to: str, subject: str, text: str) -> None:
    with world["b"].http(world["support"]) as client:
        response = client.post("/v1/mail/send", json={"sender": "support@airline.com", "recipients": [to],
                                                      "subject": subject, "text_body": text})
    assert response.status_code == 200, response.text


# ---- OpenMail's quickstart, step by step ------------------------------------

CREATE_INBOX = r'''curl -X POST https://api.openmail.sh/v1/inboxes \
-H "Authorization: Bearer om_live_..." \
-H "Content-Type: application/json" \
-d '{
"externalId": "agent-123",
"username": "jane"
}'
'''
SEND = r'''curl -X POST https://api.openmail.sh/v1/inboxes/inb_8f3a1b2c/send \
-H "Authorization: Bearer om_live_..." \
-H "Content-Type: application/json" \
-H "Idempotency-Key: $(uuidgen)" \
-d '{
"to": "support@airline.com",
"subject": "Refund request #4421",
"body": "Hi, I would like to request a refund for flight AA1234."
}'
'''
REPLY_IN_THREAD = r'''curl -X POST https://api.openmail.sh/v1/inboxes/inb_8f3a1b2c/send \
-H "Authorization: Bearer om_live_..." \
-H "Content-Type: application/json" \
-H "Idempotency-Key: $(uuidgen)" \
-d '{
"to": "support@airline.com",
"subject": "Re: Refund request #4421",
"body": "Thank you! Can you confirm when the refund will appear?",
"threadId": "thr_9d4e5f6a"
}'
'''
READ_THREAD = r'''curl https://api.openmail.sh/v1/threads/thr_9d4e5f6a/messages \
-H "Authorization: Bearer om_live_..."
'''

SEND_KEYS = {"messageId", "threadId", "providerMessageId", "status"}
WEBHOOK_KEYS = {"event", "event_id", "occurred_at", "delivered_at", "attempt", "inbox_id", "external_id",
                "thread_id", "message"}
WEBHOOK_MESSAGE_KEYS = {"id", "rfc_message_id", "from", "to", "cc", "subject", "body_text", "attachments",
                        "received_at"}
THREAD_MESSAGE_KEYS = {"id", "direction", "fromAddr", "toAddr", "subject", "bodyText", "status", "createdAt"}


def test_quickstart_curl_examples_webhook_and_thread(world):
    a, b = world["a"], world["b"]
    ids = {SEED_BASE: a.api_url, "om_live_...": a.admin_key}
    status, inbox = run_curl(CREATE_INBOX, ids)
    assert status == 201 and {"id", "address", "externalId", "createdAt"} <= set(inbox)
    assert inbox["address"] == "jane@yourco.openmail.sh" and inbox["externalId"] == "agent-123"
    assert inbox["id"].startswith("mbx_") and inbox["createdAt"].endswith("Z")
    ids["inb_8f3a1b2c"] = inbox["id"]

    receiver = Receiver()
    with receiver, _admin(a) as admin:  # "configure your webhook URL": here with the native webhook API
        hook = admin.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["message.received"],
                                                "inbox_ids": [inbox["id"]]})
        assert hook.status_code == 201, hook.text
        receiver.secret = hook.json()["secret"]

        status, sent = run_curl(SEND, ids)
        assert status == 200 and set(sent) == SEND_KEYS, sent
        assert sent["status"] in ("pending", "sent") and sent["messageId"].startswith("msg_")
        ids["thr_9d4e5f6a"] = sent["threadId"]

        # The airline answers with a receipt; the reply reaches A and its webhook.
        request = _newest(b, world["support"], "support@airline.com", "Refund request #4421")
        pdf = pdf_with_text("Refund 342.00 confirmed")
        with b.http(world["support"]) as client:
            answer = client.post(f"/v1/messages/{request['id']}/reply", json={
                "text": "Hello, we've processed your refund of $342.00.", "include_quote": False,
                "attachments": [{"filename": "receipt.pdf", "content_type": "application/pdf",
                                 "content": base64.b64encode(pdf).decode()}]})
            assert answer.status_code == 200, answer.text
        [delivery] = wait_for(lambda: receiver.events("message.received"), timeout=20)
    event = delivery["body"]
    assert delivery["valid"] and delivery["headers"]["X-Event-Id"] == event["event_id"]
    assert WEBHOOK_KEYS <= set(event) and WEBHOOK_MESSAGE_KEYS <= set(event["message"])
    assert event["event"] == "message.received" and event["attempt"] == 1 and event["event_id"].startswith("evt_")
    assert event["inbox_id"] == inbox["id"] and event["external_id"] == "agent-123"
    assert event["thread_id"] == sent["threadId"]
    message = event["message"]
    assert message["from"] == "support@airline.com" and message["to"] == "jane@yourco.openmail.sh"
    assert message["cc"] == [] and message["subject"] == "Re: Refund request #4421"
    assert message["body_text"].strip() == "Hello, we've processed your refund of $342.00."
    assert re.fullmatch(r"<[^<>@]+@mx\.airline\.com>", message["rfc_message_id"])
    [attachment] = message["attachments"]
    assert attachment["filename"] == "receipt.pdf" and attachment["contentType"] == "application/pdf"
    assert attachment["sizeBytes"] == len(pdf) and "342.00" in attachment["parsedText"]
    assert attachment["url"] == f"{a.api_url}/v1/attachments/{message['id']}/receipt.pdf"
    download = httpx.get(attachment["url"], headers={"Authorization": f"Bearer {a.admin_key}"})
    assert download.status_code == 200 and download.content == pdf

    status, follow_up = run_curl(REPLY_IN_THREAD, ids)
    assert status == 200 and follow_up["threadId"] == sent["threadId"], follow_up

    status, thread = run_curl(READ_THREAD, ids)
    assert status == 200 and {"threadId", "subject", "data"} <= set(thread)
    assert thread["threadId"] == sent["threadId"] and thread["subject"] == "Refund request #4421"
    assert [m["direction"] for m in thread["data"]] == ["outbound", "inbound", "outbound"]
    assert all(THREAD_MESSAGE_KEYS <= set(m) for m in thread["data"])
    assert [m["id"] for m in thread["data"]] == [sent["messageId"], message["id"], follow_up["messageId"]]
    assert thread["data"][0]["fromAddr"] == "jane@yourco.openmail.sh"
    assert thread["data"][0]["toAddr"] == "support@airline.com"
    assert thread["data"][1]["status"] == "received" and thread["data"][0]["status"] == "sent"
    assert thread["data"][2]["bodyText"].startswith("Thank you! Can you confirm")
    assert "> Hello, we've processed your refund" in thread["data"][2]["bodyText"]  # includeQuote defaults on

    # On B the follow-up threads under the airline's answer (In-Reply-To/References set by A).
    last = _newest(b, world["support"], "support@airline.com", "Re: Refund request #4421")
    assert last["thread_id"] == request["thread_id"]


def test_send_contract_of_the_send_reference(world):
    a = world["a"]
    with _admin(a) as admin:
        made = admin.post("/v1/inboxes", json={"mailboxName": "contract"})
        assert made.status_code == 201 and made.json()["address"] == "contract@yourco.openmail.sh"
        inbox = made.json()
        anon = admin.post("/v1/inboxes", json={})
        assert anon.status_code == 201 and re.fullmatch(r"agent-[a-z2-7]{10}@yourco\.openmail\.sh",
                                                        anon.json()["address"])
        url = f"/v1/inboxes/{inbox['id']}/send"
        body = {"to": "recipient@example.com", "subject": "Report", "body": "<p>Hello <b>there</b></p>"}
        assert admin.post(url, json=body).json()["error"] == "missing_idempotency_key"
        assert admin.post(url, json=body).status_code == 400
        for bad, field in (({**body, "to": "not an address"}, "to"), ({**body, "replyTo": "x@"}, "replyTo"),
                           ({**body, "subject": "s" * 999}, "subject"), ({**body, "body": ""}, "body"),
                           ({**body, "bodyHtml": "h" * 500_001}, "bodyHtml")):
            refused = admin.post(url, json=bad, headers={"Idempotency-Key": str(uuid.uuid4())})
            assert refused.status_code == 400, (field, refused.text)
        missing = admin.post(url, json={**body, "threadId": "thr_missing"}, headers={"Idempotency-Key": "t"})
        assert missing.status_code == 404
        assert admin.post("/v1/inboxes/mbx_missing/send", json=body,
                          headers={"Idempotency-Key": "u"}).status_code == 404
        key = str(uuid.uuid4())
        first = admin.post(url, json={**body, "replyTo": "desk@yourco.openmail.sh"},
                           headers={"Idempotency-Key": key})
        again = admin.post(url, json={**body, "replyTo": "desk@yourco.openmail.sh"},
                           headers={"Idempotency-Key": key})
        assert first.status_code == again.status_code == 200 and first.json() == again.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert admin.post(url, json={**body, "subject": "other"}, headers={"Idempotency-Key": key}).status_code == 409
        files = [("attachments", ("a.txt", b"first file", "text/plain")),
                 ("attachments", ("b.csv", b"x,y\n1,2\n", "text/csv"))]
        multipart = admin.post(url, data={"to": "recipient@example.com", "subject": "Files", "body": "two files",
                                          "includeQuote": "false"}, files=files,
                               headers={"Idempotency-Key": str(uuid.uuid4())})
        assert multipart.status_code == 200, multipart.text
        mine = admin.get(f"/v1/inboxes/{inbox['id']}/messages", params={"direction": "outbound"}).json()
        assert mine["total"] == 2 and {m["direction"] for m in mine["data"]} == {"outbound"}
        by_subject = {m["subject"]: m for m in mine["data"]}
        assert [x["filename"] for x in by_subject["Files"]["attachments"]] == ["a.txt", "b.csv"]
        assert by_subject["Report"]["bodyHtml"].startswith("<p>Hello") and by_subject["Report"]["bodyText"].startswith(
            "Hello there")
        assert admin.get(f"/v1/inboxes/{inbox['id']}/messages", params={"direction": "sideways"}).status_code == 422
    with httpx.Client(base_url=a.api_url, headers={"Authorization": f"Bearer {inbox['apiKey']}"}) as own:
        assert own.get(f"/v1/inboxes/{inbox['id']}").json()["address"] == "contract@yourco.openmail.sh"
        assert own.get(f"/v1/inboxes/{anon.json()['id']}").status_code == 404  # another inbox: not found
        assert own.get("/v1/inboxes").json()["total"] == 1
        assert own.post("/v1/inboxes", json={}).status_code == 403
    delivered = _newest(world["b"], world["recipient"], "recipient@example.com", "Files")
    with world["b"].http(world["recipient"]) as client:
        shown = client.get(f"/v1/messages/{delivered['id']}").json()
    assert [x["filename"] for x in shown["attachments"]] == ["a.txt", "b.csv"]
    with _admin(a) as admin:
        assert admin.post("/v1/inboxes", json={"username": "x", "domain": "elsewhere.test"}).json()["error"] == \
            "unknown_domain"
        assert admin.delete(f"/v1/inboxes/{anon.json()['id']}").status_code == 204
        assert admin.get(f"/v1/inboxes/{anon.json()['id']}").status_code == 404


# ---- the integration guide: the Python snippets and the SKILL.md examples -------------------

CREATE_AGENT_INBOX = '''
import os, requests

OPENMAIL_API_KEY = os.environ["OPENMAIL_API_KEY"]

def create_agent_inbox(user_id: str, container_env_path: str) -> dict:
    response = requests.post(
        "https://api.openmail.sh/v1/inboxes",
        headers={"Authorization": f"Bearer {OPENMAIL_API_KEY}"},
        json={"mailboxName": user_id},
    )
    response.raise_for_status()
    inbox = response.json()
    # inbox["id"]      → "inb_8f3a1b2c"
    # inbox["address"] → "jane@openmail.sh"

    with open(container_env_path, "a") as f:
        f.write(f"OPENMAIL_API_KEY={OPENMAIL_API_KEY}\\n")
        f.write(f"OPENMAIL_INBOX_ID={inbox['id']}\\n")
        f.write(f"OPENMAIL_ADDRESS={inbox['address']}\\n")

    return inbox
'''
WEBSOCKET_LISTENER = '''
import asyncio, json, os, websockets

OPENMAIL_API_KEY = os.environ["OPENMAIL_API_KEY"]

async def listen():
    uri = "wss://api.openmail.sh/v1/ws"
    headers = {"Authorization": f"Bearer {OPENMAIL_API_KEY}"}

    async for ws in websockets.connect(uri, extra_headers=headers):
        try:
            await ws.send(json.dumps({"type": "subscribe"}))
            async for raw in ws:
                event = json.loads(raw)
                if event.get("event") == "message.received":
                    container = get_container_by_inbox_id(event["inbox_id"])
                    container.deliver_email(thread_id=event["thread_id"], message=event["message"])
        except websockets.ConnectionClosed:
            continue
asyncio.run(listen())
'''
WEBHOOK_HANDLER = '''
import hmac, hashlib, os

@app.post("/webhooks/openmail")
def handle_webhook():
    payload = request.get_data(as_text=True)
    timestamp = request.headers.get("X-Timestamp")
    signature = request.headers.get("X-Signature")
    expected = hmac.new(
        os.environ["OPENMAIL_WEBHOOK_SECRET"].encode(),
        f"{timestamp}.{payload}".encode(),
        hashlib.sha256,
    ).hexdigest()

    if not hmac.compare_digest(signature, expected):
        return "Invalid signature", 401

    data = request.json
    if data["event"] == "message.received":
        container = get_container_by_inbox_id(data["inbox_id"])
        container.deliver_email(thread_id=data["thread_id"], message=data["message"])

    return "OK", 200
'''
# What the snippets leave to the integrator: the container lookup (and, for the WebSocket one,
# stopping after the first email). The WebSocket snippet was written for websockets < 14, whose
# `connect` took `extra_headers`; with today's websockets that client lives in `websockets.legacy`.
LISTENER_PRELUDE = '''
import json, os, sys
import websockets, websockets.legacy.client
websockets.connect = websockets.legacy.client.connect

class Container:
    def __init__(self, inbox_id):
        self.inbox_id = inbox_id
    def deliver_email(self, thread_id, message):
        if self.inbox_id == os.environ["EXPECTED_INBOX"]:
            print(json.dumps({"thread_id": thread_id, "message": message}), flush=True)
            sys.exit(0)

def get_container_by_inbox_id(inbox_id):
    return Container(inbox_id)
'''


def _python(code: str, env: dict[str, str], *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_integration_guide_python_snippets(world, tmp_path, monkeypatch):
    a = world["a"]
    env = {"OPENMAIL_API_KEY": a.admin_key}
    ws_url = a.api_url.replace("http://", "ws://")
    # Step 1: create the inbox and write the container's env file.
    env_file = tmp_path / "agent.env"
    creator = _python(CREATE_AGENT_INBOX.replace(SEED_BASE, a.api_url) +
                      "\nimport json, sys\nprint(json.dumps(create_agent_inbox(sys.argv[1], sys.argv[2])))\n",
                      env, "agent-42", str(env_file))
    out, err = creator.communicate(timeout=60)
    assert creator.returncode == 0, err
    inbox = json.loads(out)
    assert inbox["address"] == "agent-42@yourco.openmail.sh"
    assert env_file.read_text().splitlines() == [f"OPENMAIL_API_KEY={a.admin_key}", f"OPENMAIL_INBOX_ID={inbox['id']}",
                                                 f"OPENMAIL_ADDRESS={inbox['address']}"]

    # Step 4, webhook: the integration guide's Flask handler verifies the signature of what the daemon posts.
    from flask import Flask, request
    delivered: list[dict] = []

    class Container:
        def deliver_email(self, thread_id, message):
            delivered.append({"thread_id": thread_id, "message": message})

    namespace = {"app": Flask("openmail_webhooks"), "request": request,
                 "get_container_by_inbox_id": lambda inbox_id: Container()}
    exec(compile(WEBHOOK_HANDLER, "integration-guide-webhook", "exec"), namespace)
    server = make_server("127.0.0.1", 0, namespace["app"], threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with _admin(a) as admin:
            hook = admin.post("/v1/webhooks", json={
                "url": f"http://127.0.0.1:{server.server_port}/webhooks/openmail",
                "event_types": ["message.received"], "inbox_ids": [inbox["id"]]}).json()
        monkeypatch.setenv("OPENMAIL_WEBHOOK_SECRET", hook["secret"])
        # Step 4, WebSocket: the integration guide's listener, run as written.
        listener = _python(LISTENER_PRELUDE + WEBSOCKET_LISTENER.replace("wss://api.openmail.sh", ws_url),
                           {**env, "EXPECTED_INBOX": inbox["id"]})
        try:
            # A plain subscribe streams from now on: keep writing until the listener has one.
            deadline = time.monotonic() + 20
            while listener.poll() is None and time.monotonic() < deadline:
                _send_from_b(world, "agent-42@yourco.openmail.sh", "Your order", "Thanks for following up...")
                time.sleep(0.7)
            out, err = listener.communicate(timeout=10)
        finally:
            listener.kill()
        assert listener.returncode == 0, err
        streamed = json.loads(out)
        assert streamed["message"]["subject"] == "Your order" and streamed["thread_id"]
        assert streamed["message"]["to"] == "agent-42@yourco.openmail.sh"
        wait_for(lambda: delivered, timeout=20)
        assert delivered[0]["message"]["from"] == "support@airline.com"
        assert delivered[0]["message"]["body_text"].strip() == "Thanks for following up..."
        # A forged signature gets the snippet's 401.
        body = json.dumps({"event": "message.received", "inbox_id": inbox["id"]})
        stamp = str(int(time.time()))
        forged = hmac.new(b"wrong secret", f"{stamp}.{body}".encode(), hashlib.sha256).hexdigest()
        refused = httpx.post(f"http://127.0.0.1:{server.server_port}/webhooks/openmail", content=body,
                             headers={"X-Timestamp": stamp, "X-Signature": forged,
                                      "Content-Type": "application/json"})
        assert refused.status_code == 401
    finally:
        server.shutdown()


SKILL_EXAMPLES = [
    ("send", r'''curl -s -X POST "https://api.openmail.sh/v1/inboxes/$OPENMAIL_INBOX_ID/send" \
  -H "Authorization: Bearer $OPENMAIL_API_KEY" \
  -H "Content-Type: application/json" \
  -H "Idempotency-Key: $(uuidgen)" \
  -d '{
    "to": "recipient@example.com",
    "subject": "Subject",
    "body": "Message body"
  }'
'''),
    ("reply", r'''curl -s -X POST "https://api.openmail.sh/v1/inboxes/$OPENMAIL_INBOX_ID/send" \
  -H "Authorization: Bearer $OPENMAIL_API_KEY" \
  -H "Content-Type: application/json" \
  -H "Idempotency-Key: $(uuidgen)" \
  -d '{
    "to": "recipient@example.com",
    "subject": "Re: Original subject",
    "body": "Reply body",
    "threadId": "thr_..."
  }'
'''),
    ("check", r'''curl -s "https://api.openmail.sh/v1/inboxes/$OPENMAIL_INBOX_ID/messages?direction=inbound&limit=10" \
  -H "Authorization: Bearer $OPENMAIL_API_KEY"
'''),
    ("threads", r'''curl -s "https://api.openmail.sh/v1/inboxes/$OPENMAIL_INBOX_ID/threads?limit=10" \
  -H "Authorization: Bearer $OPENMAIL_API_KEY"
'''),
    ("read", r'''curl -s "https://api.openmail.sh/v1/threads/{thread_id}/messages" \
  -H "Authorization: Bearer $OPENMAIL_API_KEY"
'''),
    ("attach", r'''curl -s -X POST "https://api.openmail.sh/v1/inboxes/$OPENMAIL_INBOX_ID/send" \
  -H "Authorization: Bearer $OPENMAIL_API_KEY" \
  -H "Idempotency-Key: $(uuidgen)" \
  -F "to=recipient@example.com" \
  -F "subject=Report attached" \
  -F "body=See the attached file." \
  -F "attachments=@/path/to/report.pdf"
'''),
]


def test_skill_examples_of_the_integration_guide(world, tmp_path):
    a = world["a"]
    with _admin(a) as admin:
        inbox = admin.post("/v1/inboxes", json={"username": "skilled"}).json()
    env = {"OPENMAIL_API_KEY": a.admin_key, "OPENMAIL_INBOX_ID": inbox["id"], "OPENMAIL_ADDRESS": inbox["address"]}
    _send_from_b(world, inbox["address"], "Question", "Can you help?")
    before = _ids(world["b"], world["recipient"], "recipient@example.com")
    report = tmp_path / "report.pdf"
    report.write_bytes(pdf_with_text("Q3 report"))
    ids = {SEED_BASE: a.api_url, "/path/to/report.pdf": str(report)}
    results = {}
    for name, command in SKILL_EXAMPLES:
        status, results[name] = run_curl(command, ids, env=env)
        assert status == 200, (name, results[name])
        if name == "send":
            ids["thr_..."] = ids["{thread_id}"] = results["send"]["threadId"]
    assert results["reply"]["threadId"] == results["send"]["threadId"]
    assert [m["subject"] for m in results["check"]["data"]] == ["Question"]
    assert {t["id"] for t in results["threads"]["data"]} >= {results["send"]["threadId"]}
    assert [m["subject"] for m in results["read"]["data"]] == ["Subject", "Re: Original subject"]
    got = _newest(world["b"], world["recipient"], "recipient@example.com", "Report attached", before)
    with world["b"].http(world["recipient"]) as client:
        assert [x["filename"] for x in client.get(f"/v1/messages/{got['id']}").json()["attachments"]] == [
            "report.pdf"]


def _bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, re.S)


def test_openmailserver_skill_runs_as_written(world, tmp_path):
    a = world["a"]
    with _admin(a) as admin:
        made = admin.post("/v1/inboxes", json={"username": "skill-agent", "externalId": "skill"}).json()
    skill = a.cli("skill", "--inbox", made["address"]).stdout
    assert skill.startswith("---\nname: email\n")
    assert f"{a.api_url}/v1/inboxes/$OPENMAIL_INBOX_ID/send" in skill and made["id"] in skill
    for name in ("OPENMAIL_API_KEY", "OPENMAIL_INBOX_ID", "OPENMAIL_ADDRESS", "Idempotency-Key", "/v1/ws",
                 "threadId"):
        assert name in skill
    assert a.admin_key not in skill and made["apiKey"] not in skill
    _send_from_b(world, made["address"], "Meeting", "Are you free on Tuesday?")
    _newest(a, made["apiKey"], made["address"], "Meeting")
    before = _ids(world["b"], world["recipient"], "recipient@example.com")
    blocks = _bash_blocks(skill)
    assert len(blocks) == 8
    marker = "@@@ block done @@@"
    script = "set -e\n" + "".join(f"{block}\necho '{marker}'\n" for block in blocks)
    # The agent's python3 has `websockets` installed (the skill says so): the test's interpreter has.
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
           "OPENMAIL_API_KEY": made["apiKey"], "OPENMAIL_INBOX_ID": made["id"], "OPENMAIL_ADDRESS": made["address"]}
    result = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = [json.loads(part) for part in result.stdout.split(marker + "\n")[:-1]]
    sent, reply, inbound, answered, threads, thread, attached, event = outputs
    assert sent["status"] in ("pending", "sent") and reply["threadId"] == sent["threadId"]
    assert [m["subject"] for m in inbound["data"]] == ["Meeting"]
    assert answered["recipients"] == ["support@airline.com"] and answered["subject"] == "Re: Meeting"
    assert sent["threadId"] in {t["id"] for t in threads["data"]}
    assert [m["subject"] for m in thread["data"]] == ["Hello", "Re: Hello"]
    assert attached["messageId"].startswith("msg_")
    assert event["event"] == "message.received" and event["message"]["subject"] == "Meeting"
    got = _newest(world["b"], world["recipient"], "recipient@example.com", "Report attached", before)
    with world["b"].http(world["recipient"]) as client:
        shown = client.get(f"/v1/messages/{got['id']}").json()
    assert [x["filename"] for x in shown["attachments"]] == ["report.txt"]
    assert a.cli("skill", "--inbox", "nobody@yourco.openmail.sh", check=False).returncode == 1
