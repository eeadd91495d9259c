"""The agentmail-style API under /api/v0 (the agentmail API reference), domains with live DNS verification, and
one inbox used through every front door (/api/v0, /v1/inboxes, native API, SMTP, IMAP).

One daemon hosts the platform domain and example.com (the reference's correspondents),
so every message stays on this machine; its resolver is the loopback DNS server
the domain tests publish records in.
"""

from __future__ import annotations

import base64
import imaplib
import smtplib
import uuid

import dns.rdatatype
import dns.zone
import httpx
import pytest
from conftest import Daemon
from support.curl import run_curl
from support.dnsserver import DNSServer
from support.mail import build_message, insecure_tls, wait_for
from support.pdf import pdf_with_text
from support.webhook_receiver import Receiver

from openmailserver.mailauth.dkim import generate_private_key, public_key_record

SEED_BASE = "https://your-instance.com"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("agentmail")
    dns = DNSServer().start()
    daemon = Daemon(base, "platform", dns_nameservers=[dns.address], webhook_allowed_hosts=["127.0.0.1"])
    try:
        daemon.start()
        people = {local: daemon.create_mailbox(local, "example.com")["api_key"]["key"]
                  for local in ("sender", "recipient", "cc", "forward", "extra-cc")}
        yield {"daemon": daemon, "dns": dns, "people": people}
    finally:
        try:
            daemon.stop()
        finally:
            daemon.kill()
        dns.stop()


def _admin(daemon: Daemon) -> httpx.Client:
    return httpx.Client(base_url=daemon.api_url, headers={"Authorization": f"Bearer {daemon.admin_key}"},
                        timeout=30)


def _inbox_of(daemon: Daemon, key: str, address: str, subject: str) -> dict:
    with daemon.http(key) as client:
        return wait_for(lambda: next((m for m in client.get(f"/v1/mailboxes/{address}/messages").json()
                                      if m["subject"] == subject), None), timeout=15)


# The reference's curl examples, in an order that keeps what later ones use (deletions last).
# (name, command, expected status, keys the documented response shows)
INBOX_KEYS = {"inbox_id", "email_address", "username", "domain", "display_name", "client_id", "created_at",
              "updated_at"}
PAGE_KEYS = {"data", "total", "page", "page_size"}
DOMAIN_KEYS = {"domain_id", "status", "feedback_enabled", "records", "created_at", "updated_at"}
WEBHOOK_KEYS = {"webhook_id", "url", "event_types", "inbox_ids", "enabled", "client_id", "created_at", "updated_at"}
MESSAGE_KEYS = {"inbox_id", "thread_id", "message_id", "direction", "labels", "timestamp", "from", "to", "cc",
                "subject", "preview", "size"}
FULL_MESSAGE_KEYS = MESSAGE_KEYS | {"reply_to", "bcc", "text", "html", "in_reply_to", "references", "headers",
                                    "created_at", "updated_at"}
EXAMPLES = [
    ("organization", r'''curl https://your-instance.com/api/v0/organizations \
-H "Authorization: Bearer <API_KEY>"''', 200,
     {"org_id", "name", "inbox_count", "inbox_limit", "domain_count", "domain_limit", "created_at", "updated_at"}),
    ("create inbox", r'''curl -X POST https://your-instance.com/api/v0/inboxes \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{"username": "agent-1", "display_name": "Agent One"}' ''', 201, INBOX_KEYS),
    ("list inboxes", r'''curl https://your-instance.com/api/v0/inboxes \
-H "Authorization: Bearer <API_KEY>"''', 200, PAGE_KEYS),
    ("get inbox", r'''curl https://your-instance.com/api/v0/inboxes/nk8x2j... \
-H "Authorization: Bearer <API_KEY>"''', 200, INBOX_KEYS),
    ("update inbox", r'''curl -X PATCH https://your-instance.com/api/v0/inboxes/nk8x2j... \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{"display_name": "Updated Name"}' ''', 200, INBOX_KEYS),
    ("send", r'''curl -X POST https://your-instance.com/api/v0/inboxes/nk8x2j.../messages/send \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{
"to": "recipient@example.com",
"subject": "Hello from agentmail",
"text": "This is a test email."
}' ''', 200, {"message_id", "thread_id"}),
    ("list messages", r'''curl https://your-instance.com/api/v0/inboxes/nk8x2j.../messages \
-H "Authorization: Bearer <API_KEY>"''', 200, PAGE_KEYS),
    ("get message", r'''curl https://your-instance.com/api/v0/inboxes/nk8x2j.../messages/msg_abc123 \
-H "Authorization: Bearer <API_KEY>"''', 200, FULL_MESSAGE_KEYS),
    ("labels", r'''curl -X PATCH https://your-instance.com/api/v0/inboxes/nk8x2j.../messages/msg_abc123 \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{"labels": ["important", "follow-up"]}' ''', 200, FULL_MESSAGE_KEYS),
    ("reply", r'''curl -X POST https://your-instance.com/api/v0/inboxes/nk8x2j.../messages/msg_abc123/reply \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{"text": "Thanks for your email!"}' ''', 200, {"message_id", "thread_id"}),
    ("reply-all", r'''curl -X POST https://your-instance.com/api/v0/inboxes/nk8x2j.../messages/msg_abc123/reply-all \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{"text": "Thanks, everyone!"}' ''', 200, {"message_id", "thread_id"}),
    ("forward", r'''curl -X POST https://your-instance.com/api/v0/inboxes/nk8x2j.../messages/msg_abc123/forward \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{"to": "forward@example.com", "text": "FYI, see below."}' ''', 200, {"message_id", "thread_id"}),
    ("attachment", r'''curl https://your-instance.com/api/v0/inboxes/nk8x2j.../messages/msg_abc123/attachments/att_abc123 \
-H "Authorization: Bearer <API_KEY>"''', 200,
     {"attachment_id", "filename", "size", "content_type", "content_disposition", "content_id", "download_url",
      "expires_at"}),
    ("list threads", r'''curl https://your-instance.com/api/v0/inboxes/nk8x2j.../threads \
-H "Authorization: Bearer <API_KEY>"''', 200, PAGE_KEYS),
    ("get thread", r'''curl https://your-instance.com/api/v0/inboxes/nk8x2j.../threads/thr_xyz789 \
-H "Authorization: Bearer <API_KEY>"''', 200, {"inbox_id", "thread_id", "subject", "message_count", "preview",
                                               "messages"}),
    ("add domain", r'''curl -X POST https://your-instance.com/api/v0/domains \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{"domain": "yourdomain.com"}' ''', 201, DOMAIN_KEYS),
    ("list domains", r'''curl https://your-instance.com/api/v0/domains \
-H "Authorization: Bearer <API_KEY>"''', 200, PAGE_KEYS),
    ("get domain", r'''curl https://your-instance.com/api/v0/domains/yourdomain.com \
-H "Authorization: Bearer <API_KEY>"''', 200, DOMAIN_KEYS),
    ("verify domain", r'''curl -X POST https://your-instance.com/api/v0/domains/yourdomain.com/verify \
-H "Authorization: Bearer <API_KEY>"''', 200, DOMAIN_KEYS),
    ("create webhook", r'''curl -X POST https://your-instance.com/api/v0/webhooks \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{
"url": "https://your-app.com/webhooks/email",
"event_types": ["message.received", "message.sent"]
}' ''', 201, WEBHOOK_KEYS | {"secret"}),
    ("list webhooks", r'''curl https://your-instance.com/api/v0/webhooks \
-H "Authorization: Bearer <API_KEY>"''', 200, PAGE_KEYS),
    ("get webhook", r'''curl https://your-instance.com/api/v0/webhooks/wh_abc123 \
-H "Authorization: Bearer <API_KEY>"''', 200, WEBHOOK_KEYS),
    ("update webhook", r'''curl -X PATCH https://your-instance.com/api/v0/webhooks/wh_abc123 \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{"enabled": false}' ''', 200, WEBHOOK_KEYS),
    ("create key", r'''curl -X POST https://your-instance.com/api/v0/api-keys \
-H "Authorization: Bearer <API_KEY>" \
-H "Content-Type: application/json" \
-d '{"name": "my-agent-key"}' ''', 201, {"key_id", "name", "prefix", "key", "used_at", "created_at"}),
    ("list keys", r'''curl https://your-instance.com/api/v0/api-keys \
-H "Authorization: Bearer <API_KEY>"''', 200, PAGE_KEYS),
    ("delete key", r'''curl -X DELETE https://your-instance.com/api/v0/api-keys/key_abc123 \
-H "Authorization: Bearer <API_KEY>"''', 204, set()),
    ("delete webhook", r'''curl -X DELETE https://your-instance.com/api/v0/webhooks/wh_abc123 \
-H "Authorization: Bearer <API_KEY>"''', 204, set()),
    ("delete thread", r'''curl -X DELETE https://your-instance.com/api/v0/inboxes/nk8x2j.../threads/thr_xyz789 \
-H "Authorization: Bearer <API_KEY>"''', 204, set()),
    ("delete domain", r'''curl -X DELETE https://your-instance.com/api/v0/domains/yourdomain.com \
-H "Authorization: Bearer <API_KEY>"''', 204, set()),
    ("delete inbox", r'''curl -X DELETE https://your-instance.com/api/v0/inboxes/nk8x2j... \
-H "Authorization: Bearer <API_KEY>"''', 204, set()),
]


def test_every_curl_example_of_the_agentmail_reference(world):
    daemon, people = world["daemon"], world["people"]
    receiver = Receiver()
    ids = {SEED_BASE: daemon.api_url, "<API_KEY>": daemon.admin_key}
    results: dict[str, object] = {}
    contract = pdf_with_text("Contract 7")
    with receiver:
        ids["https://your-app.com/webhooks/email"] = receiver.url
        for name, command, status, keys in EXAMPLES:
            got, body = run_curl(command, ids)
            assert got == status, (name, body)
            assert keys <= set(body or {}), (name, body)
            results[name] = body
            if name == "create inbox":
                ids["nk8x2j..."] = body["inbox_id"]
                # Someone writes to the new inbox: the message the later examples read and answer.
                with daemon.http(people["sender"]) as client:
                    sent = client.post("/v1/mail/send", json={
                        "sender": "sender@example.com", "recipients": [body["email_address"]],
                        "cc": ["cc@example.com"], "subject": "Hello", "text_body": "Hi there!",
                        "attachments": [{"filename": "document.pdf", "content_type": "application/pdf",
                                         "content": base64.b64encode(contract).decode()}]})
                    assert sent.status_code == 200, sent.text
                inbound = _inbox_of(daemon, daemon.admin_key, body["email_address"], "Hello")
                ids["msg_abc123"], ids["thr_xyz789"] = inbound["id"], inbound["thread_id"]
            elif name == "get message":
                ids["att_abc123"] = body["attachments"][0]["attachment_id"]
            elif name == "attachment":  # the signed URL works without a key, and only as signed
                download = httpx.get(body["download_url"])
                assert download.status_code == 200 and download.content == contract
                assert download.headers["content-type"] == "application/pdf"
                assert httpx.get(body["download_url"].replace("signature=", "signature=0")).status_code == 403
            elif name == "create webhook":
                ids["wh_abc123"] = body["webhook_id"]
            elif name == "create key":
                ids["key_abc123"] = body["key_id"]
    inbox = results["create inbox"]
    assert inbox["username"] == "agent-1" and inbox["display_name"] == "Agent One" and inbox["client_id"] is None
    assert inbox["email_address"] == "agent-1@platform.test" and inbox["domain"] == "platform.test"
    assert results["update inbox"]["display_name"] == "Updated Name"
    assert results["organization"]["inbox_count"] == 5 and results["organization"]["domain_count"] == 2
    listed = results["list inboxes"]
    assert listed["page"] == 1 and listed["page_size"] == 20 and listed["total"] == 6
    assert all(INBOX_KEYS <= set(i) for i in listed["data"])
    messages = results["list messages"]
    assert [m["subject"] for m in messages["data"]] == ["Hello from agentmail", "Hello"]
    assert all(MESSAGE_KEYS <= set(m) for m in messages["data"])
    assert messages["data"][0]["from"] == "Updated Name <agent-1@platform.test>"
    assert messages["data"][0]["to"] == ["recipient@example.com"] and messages["data"][0]["cc"] is None
    assert messages["data"][1]["cc"] == ["cc@example.com"] and messages["data"][1]["direction"] == "inbound"
    message = results["get message"]
    assert message["text"] == "Hi there!\n" and message["preview"] == "Hi there!"
    assert message["attachments"][0]["filename"] == "document.pdf"
    assert results["labels"]["labels"] == ["follow-up", "important"]
    replies = {name: results[name] for name in ("reply", "reply-all", "forward")}
    assert replies["reply"]["thread_id"] == replies["reply-all"]["thread_id"] == ids["thr_xyz789"]
    assert replies["forward"]["thread_id"] != ids["thr_xyz789"]  # a forward starts a new thread
    with daemon.http(people["sender"]) as client:
        answers = wait_for(lambda: (lambda rows: rows if len(rows) == 2 else None)(
            [m for m in client.get("/v1/mailboxes/sender@example.com/messages").json() if m["subject"] == "Re: Hello"]))
    assert sorted(m["to"] for m in answers) == ["sender@example.com", "sender@example.com, cc@example.com"]
    everyone = _inbox_of(daemon, people["cc"], "cc@example.com", "Re: Hello")
    assert everyone["to"] == "sender@example.com, cc@example.com"
    forwarded = _inbox_of(daemon, people["forward"], "forward@example.com", "Fwd: Hello")
    with daemon.http(people["forward"]) as client:
        shown = client.get(f"/v1/messages/{forwarded['id']}").json()
    assert shown["text"].startswith("FYI, see below.") and "Hi there!" in shown["text"]
    assert [a["filename"] for a in shown["attachments"]] == ["document.pdf"]
    thread = results["get thread"]
    assert [m["direction"] for m in thread["messages"]] == ["inbound", "outbound", "outbound"]
    assert thread["message_count"] == 3 and thread["preview"].startswith("Thanks, everyone!")
    assert results["list threads"]["total"] == 3
    domain = results["add domain"]
    assert domain["domain_id"] == "yourdomain.com" and domain["status"] == "PENDING"
    assert [(r["type"], r["status"]) for r in domain["records"]] == [("MX", "MISSING")] + [("TXT", "MISSING")] * 3
    assert results["verify domain"]["status"] == "PENDING"
    assert results["create webhook"]["secret"].startswith("whsec_")
    assert results["update webhook"]["enabled"] is False
    assert results["create key"]["key"].startswith("om_") and "key" not in results["list keys"]["data"][0]
    with httpx.Client(base_url=daemon.api_url, headers={"Authorization": f"Bearer {results['create key']['key']}"}
                      ) as revoked:
        assert revoked.get("/api/v0/organizations").status_code == 403
    with _admin(daemon) as admin:
        assert admin.get(f"/api/v0/inboxes/{inbox['inbox_id']}").status_code == 404
        assert admin.get("/api/v0/domains/yourdomain.com").status_code == 404
        assert admin.get("/api/v0/webhooks").json()["total"] == 0


def _publish(dns: DNSServer, records: list[dict], skip: str = "", dkim_value: str | None = None) -> None:
    for record in records:
        if record["type"] == "MX":
            dns.set(record["name"], "MX", [f"{record['priority']} {record['value']}"])
        elif record["name"].startswith("_dmarc.") and skip == "dmarc":
            dns.remove(record["name"])
        else:
            value = dkim_value if "._domainkey." in record["name"] and dkim_value else record["value"]
            dns.set(record["name"], "TXT", [value])


def test_domain_verifies_against_live_dns(world):
    daemon, dns_server = world["daemon"], world["dns"]
    with _admin(daemon) as admin:
        added = admin.post("/v1/domains", json={"domain": "Verify.Test"})
        assert added.status_code == 201, added.text
        domain = added.json()
        assert domain["domain"] == "verify.test" and domain["status"] == "PENDING"
        records = {r["type"] + ":" + r["name"]: r for r in domain["records"]}
        assert records["MX:verify.test"]["value"] == "mx.platform.test" and records["MX:verify.test"]["priority"] == 10
        dkim = records[f"TXT:{domain['dkim_selector']}._domainkey.verify.test"]
        assert dkim["value"].startswith("v=DKIM1; k=rsa; p=") and len(dkim["value"]) > 300
        assert admin.post("/v1/domains", json={"domain": "verify.test"}).status_code == 409
        assert admin.post("/v1/domains", json={"domain": "not a domain"}).status_code == 422

        # Published with someone else's DKIM key and without DMARC: per-record statuses say so.
        _publish(dns_server, domain["records"], skip="dmarc", dkim_value=public_key_record(generate_private_key()))
        checked = admin.post("/v1/domains/verify.test/verify").json()
        assert checked["status"] == "PENDING"
        assert [r["status"] for r in checked["records"]] == ["VALID", "VALID", "INVALID", "MISSING"]
        assert "not the one this server signs with" in checked["records"][2]["detail"]
        dns_server.set("verify.test", "MX", ["10 mx.elsewhere.test"])
        assert admin.post("/v1/domains/verify.test/verify").json()["records"][0]["status"] == "INVALID"
        assert admin.get("/v1/events", params={"types": "domain.verified"}).json()["events"] == []

        _publish(dns_server, domain["records"])
        verified = admin.post("/v1/domains/verify.test/verify").json()
        assert verified["status"] == "VERIFIED" and verified["verified_at"]
        assert {r["status"] for r in verified["records"]} == {"VALID"}
        again = admin.post("/api/v0/domains/verify.test/verify").json()
        assert again["status"] == "VERIFIED" and again["domain_id"] == "verify.test"
        [event] = admin.get("/v1/events", params={"types": "domain.verified"}).json()["events"]
        assert event["data"]["domain"] == "verify.test" and event["inbox_id"] is None
        assert admin.get("/v1/domains/verify.test").json()["status"] == "VERIFIED"

        zone = admin.get("/v1/domains/verify.test/zone")
        assert zone.status_code == 200 and zone.headers["content-type"].startswith("text/plain")
        parsed = _parse_zone(zone.text)
        assert parsed[("verify.test.", "MX")] == ["10 mx.platform.test."]
        assert parsed[(f"{domain['dkim_selector']}._domainkey.verify.test.", "TXT")] == [dkim["value"]]

        # Inboxes of the compatibility dialects only on hosted domains; deleting needs an empty domain.
        assert admin.post("/api/v0/inboxes", json={"username": "x", "domain": "unhosted.test"}).json()["error"] == \
            "unknown_domain"
        made = admin.post("/api/v0/inboxes", json={"username": "bot", "domain": "verify.test"})
        assert made.status_code == 201 and made.json()["email_address"] == "bot@verify.test"
        assert admin.delete("/v1/domains/verify.test").status_code == 409
        assert admin.delete("/v1/domains/platform.test").status_code == 409  # the primary domain stays
        assert admin.delete(f"/api/v0/inboxes/{made.json()['inbox_id']}").status_code == 204
        assert admin.delete("/v1/domains/verify.test").status_code == 204
    with daemon.http(world["people"]["sender"]) as mailbox_key:
        assert mailbox_key.post("/v1/domains", json={"domain": "x.test"}).status_code == 403


def _parse_zone(text: str) -> dict[tuple[str, str], list[str]]:
    """The zone snippet read by dnspython's zone-file parser: {(owner, type): [data]}."""
    zone = dns.zone.from_text(text, origin="verify.test.", relativize=False, check_origin=False)
    out: dict[tuple[str, str], list[str]] = {}
    for name, rdataset in zone.iterate_rdatasets():
        for rdata in rdataset:
            if rdataset.rdtype == dns.rdatatype.TXT:
                value = b"".join(rdata.strings).decode()
            else:
                value = rdata.to_text()
            out.setdefault((name.to_text(), dns.rdatatype.to_text(rdataset.rdtype)), []).append(value)
    return out


def test_one_inbox_through_every_front_door(world):
    daemon, people = world["daemon"], world["people"]
    with _admin(daemon) as admin:
        made = admin.post("/api/v0/inboxes", json={"username": "cross", "display_name": "Cross Agent",
                                                   "client_id": "crm-7"}).json()
        inbox_id, address = made["inbox_id"], made["email_address"]
        # The OpenMail dialect sees and sends from it.
        assert admin.get(f"/v1/inboxes/{inbox_id}").json()["address"] == address
        sent = admin.post(f"/v1/inboxes/{inbox_id}/send", headers={"Idempotency-Key": str(uuid.uuid4())},
                          json={"to": "recipient@example.com", "subject": "via openmail", "body": "one"})
        assert sent.status_code == 200, sent.text
        key = admin.post("/api/v0/api-keys", json={"name": "cross only", "inbox_id": inbox_id}).json()
        someone_else = next(i["inbox_id"] for i in admin.get("/api/v0/inboxes").json()["data"]
                            if i["inbox_id"] != inbox_id)
        assert key["inbox_id"] == inbox_id
    # The native API: the same mailbox; its password set here serves SMTP and IMAP.
    with daemon.http() as native:
        mailbox = native.get(f"/v1/mailboxes/{address}").json()
        assert mailbox["id"] == inbox_id and mailbox["display_name"] == "Cross Agent"
        password = native.post(f"/v1/mailboxes/{address}/password", json={"password": "cross-password-1"})
        assert password.status_code == 200
    with smtplib.SMTP_SSL("127.0.0.1", int(daemon.settings["submission_port"]), context=insecure_tls(),
                          timeout=30) as smtp:
        smtp.login(address, "cross-password-1")
        smtp.sendmail(address, ["recipient@example.com"],
                      build_message(address, "recipient@example.com", "via smtp", "two\n"))
    assert _inbox_of(daemon, people["recipient"], "recipient@example.com", "via smtp")
    with daemon.http(people["sender"]) as client:
        client.post("/v1/mail/send", json={"sender": "sender@example.com", "recipients": [address],
                                           "subject": "to cross", "text_body": "three"})
    with httpx.Client(base_url=daemon.api_url, headers={"Authorization": f"Bearer {key['key']}"}) as own:
        listing = wait_for(lambda: (lambda page: page if page["total"] == 3 else None)(
            own.get(f"/api/v0/inboxes/{inbox_id}/messages").json()), timeout=15)
        assert [m["subject"] for m in listing["data"]] == ["to cross", "via smtp", "via openmail"]
        inbound = listing["data"][0]
        labelled = own.patch(f"/api/v0/inboxes/{inbox_id}/messages/{inbound['message_id']}",
                             json={"labels": ["crm", "urgent"]})
        assert labelled.json()["labels"] == ["crm", "urgent"]
        assert own.patch(f"/api/v0/inboxes/{inbox_id}/messages/{inbound['message_id']}",
                         json={"labels": ["unread"]}).status_code == 422  # a system label
        assert own.get("/api/v0/inboxes").json()["total"] == 1
        assert own.get(f"/v1/inboxes/{inbox_id}/messages").json()["total"] == 3
        assert own.get(f"/api/v0/inboxes/{someone_else}").status_code == 404
        assert own.get(f"/v1/inboxes/{someone_else}/messages").status_code == 404
    # IMAP: the mail is there, and the labels are keywords.
    imap = imaplib.IMAP4_SSL("127.0.0.1", int(daemon.settings["imaps_port"]), ssl_context=insecure_tls())
    try:
        imap.login(address, "cross-password-1")
        imap.select("INBOX")
        status, found = imap.uid("SEARCH", None, "SUBJECT", '"to cross"')
        assert status == "OK" and len(found[0].split()) == 1
        status, flags = imap.uid("FETCH", found[0].split()[0], "(FLAGS)")
        assert b"crm" in flags[0] and b"urgent" in flags[0]
        imap.select("Sent")
        status, sent_items = imap.uid("SEARCH", None, "ALL")
        assert len(sent_items[0].split()) == 2
    finally:
        imap.logout()


def test_attachment_urls_labels_and_thread_deletion(world, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    daemon, people = world["daemon"], world["people"]
    (tmp_path / "notes.txt").write_bytes(b"fetched by url\n")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with _admin(daemon) as admin:
            inbox = admin.post("/api/v0/inboxes", json={"username": "fetcher"}).json()
            url = f"/api/v0/inboxes/{inbox['inbox_id']}/messages/send"
            body = {"to": "recipient@example.com", "subject": "by url", "text": "see file",
                    "attachments": [{"filename": "notes.txt",
                                     "url": f"http://127.0.0.1:{server.server_port}/notes.txt"}]}
            sent = admin.post(url, json=body)
            assert sent.status_code == 200, sent.text
            for private in ("http://10.1.2.3/notes.txt", "http://[::1]/x", "file:///etc/passwd"):
                refused = admin.post(url, json={**body, "attachments": [{"filename": "x", "url": private}]})
                assert refused.status_code == 422 and refused.json()["error"] == "invalid_attachment_url", private
            missing = admin.post(url, json={**body, "attachments": [
                {"filename": "x", "url": f"http://127.0.0.1:{server.server_port}/missing.txt"}]})
            assert missing.status_code == 422 and missing.json()["error"] == "attachment_fetch_failed"
    finally:
        server.shutdown()
    got = _inbox_of(daemon, people["recipient"], "recipient@example.com", "by url")
    with daemon.http(people["recipient"]) as client:
        shown = client.get(f"/v1/messages/{got['id']}").json()
        assert [(a["filename"], a["parsed_text"]) for a in shown["attachments"]] == [("notes.txt", "fetched by url\n")]
        # Native labels: add and remove; system labels follow state.
        labelled = client.patch(f"/v1/messages/{got['id']}", json={"add_labels": ["todo", "$Label1"]})
        assert labelled.status_code == 200 and labelled.json()["labels"] == ["$Label1", "todo"]
        assert set(labelled.json()["system_labels"]) == {"inbound", "unread"}
        assert client.patch(f"/v1/messages/{got['id']}", json={"remove_labels": ["todo"]}).json()["labels"] == [
            "$Label1"]
        assert client.patch(f"/v1/messages/{got['id']}", json={"add_labels": ["bad label"]}).status_code == 422
        # Native thread deletion removes the messages from the index and the Maildir.
        before = len(daemon.messages_on_disk("recipient@example.com"))
        assert client.delete(f"/v1/threads/{got['thread_id']}").status_code == 204
        assert client.get(f"/v1/messages/{got['id']}").status_code == 404
        assert client.get(f"/v1/threads/{got['thread_id']}").status_code == 404
        assert len(daemon.messages_on_disk("recipient@example.com")) == before - 1
