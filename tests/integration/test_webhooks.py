"""Signed webhooks delivered at least once: retries, restarts, replay, rotation and the SSRF guard."""

from __future__ import annotations

import hashlib
import hmac

from support.mail import build_message, send, wait_for
from support.webhook_receiver import Receiver


def _deliver(daemon, subject: str) -> None:
    send(daemon.smtp_port, "x@remote.test", ["agent@wh.test"], build_message("x@remote.test", "agent@wh.test", subject))


def _hook_daemon(make_daemon, **settings):
    daemon = make_daemon("wh", webhook_allowed_hosts="127.0.0.1", webhook_retry_schedule="1s,1s,1s", **settings)
    agent = daemon.create_mailbox("agent")
    return daemon, agent


def test_retries_until_delivered_and_signatures_verify(make_daemon):
    daemon, agent = _hook_daemon(make_daemon)
    with Receiver(fail_first=2) as receiver:
        with daemon.http(agent["api_key"]["key"]) as client:
            made = client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["message.received"]})
            assert made.status_code == 201, made.text
            hook = made.json()
            receiver.secret = hook["secret"]
            assert client.get(f"/v1/webhooks/{hook['id']}").json().get("secret") is None  # shown once
            assert client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["nope"]}
                               ).status_code == 422
            assert client.post("/v1/webhooks", json={"url": receiver.url, "inbox_ids": ["mbx_other"]}
                               ).status_code == 404
        _deliver(daemon, "webhook me")
        attempts = wait_for(lambda: len(receiver.events()) >= 3 and receiver.events(), timeout=20)
        assert [a["body"]["attempt"] for a in attempts] == [1, 2, 3]
        assert all(a["valid"] for a in attempts)
        first = attempts[0]
        body, headers = first["body"], first["headers"]
        assert body["event"] == "message.received" and body["inbox_id"] == agent["mailbox"]["id"]
        assert body["message"]["subject"] == "webhook me" and body["thread_id"] and body["delivered_at"]
        assert headers["X-Event-Id"] == body["event_id"] == attempts[2]["body"]["event_id"]
        # The integration guide's Node check re-serialises the parsed body: our raw body must be that serialisation.
        import json
        assert json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() == first["raw"]
        with daemon.http(agent["api_key"]["key"]) as client:
            [delivery] = wait_for(lambda: [d for d in client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()
                                           if d["state"] == "delivered"])
            assert delivery["attempts"] == 3 and [a["status"] for a in delivery["attempt_log"]] == [500, 500, 200]
            replayed = client.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/replay")
            assert replayed.status_code == 202
        wait_for(lambda: len(receiver.events()) == 4, timeout=10)
        assert receiver.events()[3]["body"]["event_id"] == body["event_id"] and receiver.events()[3]["valid"]


def test_pending_delivery_survives_a_restart(make_daemon):
    daemon, agent = _hook_daemon(make_daemon, webhook_timeout=2)
    with Receiver(fail_first=1000) as receiver:
        with daemon.http(agent["api_key"]["key"]) as client:
            hook = client.post("/v1/webhooks", json={"url": receiver.url}).json()
        receiver.secret = hook["secret"]
        _deliver(daemon, "across restarts")
        wait_for(lambda: receiver.events("message.received"), timeout=10)
        daemon.kill()
        receiver.fail_first = 0
        daemon.start()
        ok = wait_for(lambda: [e for e in receiver.events("message.received") if e["body"]["attempt"] >= 2],
                      timeout=20)
        assert ok[0]["valid"] and ok[0]["body"]["message"]["subject"] == "across restarts"


def test_ssrf_guard_and_validation(make_daemon):
    daemon = make_daemon("guard")
    agent = daemon.create_mailbox("agent")
    with daemon.http(agent["api_key"]["key"]) as client:
        for url in ("http://127.0.0.1:9/x", "http://10.1.2.3/hook", "http://[::1]/x", "http://169.254.169.254/",
                    "http://localhost/x", "ftp://example.com/", "not a url", "http://user:pw@example.com/"):
            refused = client.post("/v1/webhooks", json={"url": url})
            assert refused.status_code == 422 and refused.json()["error"] == "invalid_url", url
        assert client.post("/v1/webhooks", json={"url": "http://192.0.2.1/x"}).status_code == 422  # TEST-NET


def test_rotation_sends_both_signatures_and_410_disables(make_daemon):
    daemon, agent = _hook_daemon(make_daemon)
    with Receiver() as receiver:
        with daemon.http(agent["api_key"]["key"]) as client:
            hook = client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["message.received"]}
                               ).json()
            rotated = client.patch(f"/v1/webhooks/{hook['id']}", json={"rotate_secret": True}).json()
        assert rotated["secret"] != hook["secret"]
        receiver.secret = rotated["secret"]
        _deliver(daemon, "rotated")
        [event] = wait_for(lambda: receiver.events("message.received"), timeout=10)
        assert event["valid"]
        previous = hmac.new(hook["secret"].encode(), f"{event['headers']['X-Timestamp']}.".encode() + event["raw"],
                            hashlib.sha256).hexdigest()
        assert event["headers"]["X-Signature-Previous"] == previous
        receiver.fail_first, receiver.fail_status = 100, 410
        _deliver(daemon, "gone")
        wait_for(lambda: len(receiver.events("message.received")) == 2, timeout=10)
        with daemon.http(agent["api_key"]["key"]) as client:
            disabled = wait_for(lambda: (h := client.get(f"/v1/webhooks/{hook['id']}").json())["enabled"] is False
                                and h, timeout=10)
            assert "410" in disabled["disabled_reason"]
            assert client.get("/v1/events", params={"types": "webhook.disabled"}).json()["events"]
        _deliver(daemon, "after disable")
        import time
        time.sleep(1.5)
        assert len(receiver.events("message.received")) == 2
