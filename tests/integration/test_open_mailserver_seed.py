"""Open Mailserver's API page, replayed as written (only host, key and ids replaced),
plus the native endpoints that page does not show: mailbox update, password, delete."""

from __future__ import annotations

import smtplib

from support.curl import run_curl
from support.mail import insecure_tls

# The examples of seeds/004, verbatim.
HEALTH = "curl http://127.0.0.1:8787/health"
PROVISION = """curl -X POST http://127.0.0.1:8787/v1/mailboxes \\
  -H "Content-Type: application/json" \\
  -H "X-OpenMailserver-Key: <admin-api-key>" \\
  -d '{
    "local_part": "agent",
    "domain": "yourdomain.com",
    "password": "choose-a-strong-password"
  }'"""
SEND = """curl -X POST http://127.0.0.1:8787/v1/mail/send \\
  -H "Content-Type: application/json" \\
  -H "X-OpenMailserver-Key: <mailbox-api-key>" \\
  -d '{
    "sender": "agent@example.com",
    "recipients": ["agent@example.com"],
    "subject": "hello",
    "text_body": "it works"
  }'"""
LIST = """curl http://127.0.0.1:8787/v1/mailboxes/agent@yourdomain.com/messages \\
  -H "X-OpenMailserver-Key: <mailbox-api-key>\""""
FETCH = """curl "http://127.0.0.1:8787/v1/messages/<message-id>?address=agent@yourdomain.com" \\
  -H "X-OpenMailserver-Key: <mailbox-api-key>\""""


def test_the_api_page_examples(make_daemon):
    daemon = make_daemon("seed", primary_domain="yourdomain.com")
    base = {"http://127.0.0.1:8787": daemon.api_url, "<admin-api-key>": daemon.admin_key}
    status, health = run_curl(HEALTH, base)
    assert status == 200 and health["status"] == "ok"
    status, created = run_curl(PROVISION, base)
    assert status == 201
    assert created["mailbox"]["email"] == "agent@yourdomain.com" and created["password"] == "choose-a-strong-password"
    key = created["api_key"]["key"]
    # The page sends as agent@example.com with the key of agent@yourdomain.com: that works when
    # example.com is hosted too and its agent@ is an alias of the provisioned mailbox.
    with daemon.http() as admin:
        assert admin.post("/v1/domains", json={"domain": "example.com"}).status_code == 201
        assert admin.post("/v1/aliases", json={"source": "agent@example.com",
                                               "destination": "agent@yourdomain.com"}).status_code == 201
    mailbox = {**base, "<mailbox-api-key>": key}
    status, sent = run_curl(SEND, mailbox)
    assert status == 200 and sent["state"] == "sent" and sent["recipients"] == ["agent@example.com"]
    status, listed = run_curl(LIST, mailbox)
    assert status == 200 and isinstance(listed, list)
    [message] = listed
    assert {"id", "subject", "from", "to", "date"} <= set(message) and message["subject"] == "hello"
    status, fetched = run_curl(FETCH, {**mailbox, "<message-id>": message["id"]})
    assert status == 200 and fetched["body"].strip() == "it works" and fetched["id"] == message["id"]


def test_mailbox_update_password_and_delete(make_daemon):
    daemon = make_daemon("mb")
    made = daemon.create_mailbox("agent", password="first-password")
    with daemon.http() as admin:
        patched = admin.patch("/v1/mailboxes/agent@mb.test", json={"quota": 5_000_000, "display_name": "Agent"})
        assert patched.status_code == 200 and patched.json()["quota"] == 5_000_000
        assert admin.patch("/v1/mailboxes/agent@mb.test", json={"quota": -1}).status_code == 422
    with daemon.http(made["api_key"]["key"]) as own:
        changed = own.post("/v1/mailboxes/agent@mb.test/password", json={"password": "second-password"})
        assert changed.status_code == 200 and changed.json()["password"] == "second-password"
        assert own.patch("/v1/mailboxes/agent@mb.test", json={"quota": 1}).status_code == 403  # admin only
    with smtplib.SMTP_SSL("127.0.0.1", daemon.settings["submission_port"], context=insecure_tls()) as client:
        client.login("agent@mb.test", "second-password")
    with daemon.http() as admin:
        assert admin.patch("/v1/mailboxes/agent@mb.test", json={"active": False}).json()["active"] is False
        with smtplib.SMTP_SSL("127.0.0.1", daemon.settings["submission_port"], context=insecure_tls()) as client:
            try:
                client.login("agent@mb.test", "second-password")
                raise AssertionError("an inactive mailbox logged in")
            except smtplib.SMTPAuthenticationError:
                pass
        assert admin.delete("/v1/mailboxes/agent@mb.test").status_code == 204
        assert admin.get("/v1/mailboxes/agent@mb.test").status_code == 404
        assert admin.delete("/v1/mailboxes/agent@mb.test").status_code == 404
