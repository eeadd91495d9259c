"""Threads, reply, reply-all and forward across two daemons, as an agent drives them."""

from __future__ import annotations

import base64
import imaplib
from email import message_from_bytes, policy

import pytest

from support.mail import wait_for


@pytest.fixture
def pair(make_daemon, dns_server):
    a = make_daemon("a", dns_nameservers=[dns_server.address])
    b = make_daemon("b", dns_nameservers=[dns_server.address])
    a.settings["remote_smtp_port"] = b.smtp_port
    a.restart()
    b.settings["remote_smtp_port"] = a.smtp_port
    b.restart()
    for name in ("a", "b"):
        dns_server.add(f"{name}.test", "MX", f"10 mx.{name}.test")
        dns_server.add(f"mx.{name}.test", "A", "127.0.0.1")
    alice = a.create_mailbox("alice")
    bob = b.create_mailbox("bob")
    return a, b, alice["api_key"]["key"], bob["api_key"]["key"]


def _newest(daemon, key, address, subject=None, count=1):
    with daemon.http(key) as client:
        def found():
            rows = client.get(f"/v1/mailboxes/{address}/messages").json()
            rows = [r for r in rows if subject is None or r["subject"] == subject]
            return rows if len(rows) >= count else None
        return wait_for(found, timeout=15)[0]


def test_five_message_conversation_is_one_thread_on_both_sides(pair):
    a, b, alice, bob = pair
    with a.http(alice) as client:
        first = client.post("/v1/mail/send", json={"sender": "alice@a.test", "recipients": ["bob@b.test"],
                                                   "subject": "Plan", "text_body": "message 1"})
        assert first.status_code == 200, first.text
    turn = [(b, bob, "bob@b.test"), (a, alice, "alice@a.test")]
    for n in range(2, 6):
        daemon, key, address = turn[n % 2]
        latest = _newest(daemon, key, address, count=n // 2)
        with daemon.http(key) as client:
            reply = client.post(f"/v1/messages/{latest['id']}/reply", json={"text": f"message {n}"})
            assert reply.status_code == 200, reply.text
    last = _newest(b, bob, "bob@b.test", count=3)
    for daemon, key, address in ((a, alice, "alice@a.test"), (b, bob, "bob@b.test")):
        with daemon.http(key) as client:
            threads = client.get(f"/v1/mailboxes/{address}/threads").json()["threads"]
            assert len(threads) == 1, threads
            thread = client.get(f"/v1/threads/{threads[0]['id']}").json()
            texts = [m["extracted_text"].strip() for m in thread["messages"]]
            assert texts == [f"message {n}" for n in range(1, 6)]
            assert {m["subject"] for m in thread["messages"]} == {"Plan", "Re: Plan"}
            assert [m["direction"] for m in thread["messages"]] == (
                ["outbound", "inbound", "outbound", "inbound", "outbound"] if daemon is a else
                ["inbound", "outbound", "inbound", "outbound", "inbound"])
    with b.http(bob) as client:
        raw = client.get(f"/v1/messages/{last['id']}/raw").content
    msg = message_from_bytes(raw)
    refs = msg["References"].split()
    assert len(refs) == 4 and msg["In-Reply-To"] == refs[-1]
    assert "> message 4" in raw.decode() and msg["Subject"] == "Re: Plan"
    # A real client's view: IMAP FETCH of the threading headers of every message in Bob's INBOX.
    with b.http() as admin:
        admin.post("/v1/mailboxes/bob@b.test/password", json={"password": "bob-password-1"})
    imap = imaplib.IMAP4("127.0.0.1", b.settings["imap_port"])
    imap.login("bob@b.test", "bob-password-1")
    imap.select("INBOX")
    _, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES)])")
    headers = [message_from_bytes(item[1]) for item in data if isinstance(item, tuple)]
    imap.logout()
    assert len(headers) == 3  # messages 1, 3 and 5 of the conversation
    root = headers[0]["Message-ID"]
    assert headers[0]["In-Reply-To"] is None and headers[0]["References"] is None
    for n, header in ((3, headers[1]), (5, headers[2])):
        refs = header["References"].split()
        assert len(refs) == n - 1 and refs[0] == root and refs[-1] == header["In-Reply-To"]
    assert set(headers[1]["References"].split()) < set(headers[2]["References"].split())


def test_reply_all_forward_and_thread_id(pair, make_daemon):
    a, b, alice, bob = pair
    carol = a.create_mailbox("carol")["api_key"]["key"]
    with b.http(bob) as client:
        client.post("/v1/mail/send", json={
            "sender": "bob@b.test", "recipients": ["alice@a.test"], "cc": ["carol@a.test"], "subject": "RE: Re: hi",
            "text_body": "hello both", "attachments": [{"filename": "n.txt", "content_type": "text/plain",
                                                        "content": base64.b64encode(b"notes").decode()}]})
    original = _newest(a, alice, "alice@a.test")
    with a.http(alice) as client:
        everyone = client.post(f"/v1/messages/{original['id']}/reply-all",
                               json={"text": "to all", "include_quote": False})
        assert everyone.status_code == 200, everyone.text
        assert sorted(everyone.json()["recipients"]) == ["bob@b.test", "carol@a.test"]
        assert everyone.json()["subject"] == "Re: hi"
        fwd = client.post(f"/v1/messages/{original['id']}/forward", json={"to": ["bob@b.test"], "text": "FYI"})
        assert fwd.status_code == 200 and fwd.json()["subject"] == "Fwd: RE: Re: hi"
        assert fwd.json()["thread_id"] != everyone.json()["thread_id"]  # a forward starts a new thread
        follow_up = client.post("/v1/mail/send", json={"sender": "alice@a.test", "recipients": ["bob@b.test"],
                                                       "text_body": "one more", "thread_id": original["thread_id"]})
        assert follow_up.status_code == 200 and follow_up.json()["thread_id"] == original["thread_id"]
        assert follow_up.json()["subject"] == "Re: hi"
    forwarded = _newest(b, bob, "bob@b.test", subject="Fwd: RE: Re: hi")
    with b.http(bob) as client:
        raw = client.get(f"/v1/messages/{forwarded['id']}/raw").content
    msg = message_from_bytes(raw, policy=policy.default)
    assert "In-Reply-To" not in msg and "---------- Forwarded message ----------" in raw.decode()
    assert [p.get_filename() for p in msg.iter_attachments()] == ["n.txt"]
    with a.http(carol) as client:
        assert client.get("/v1/mailboxes/carol@a.test/messages").json()[0]["subject"] == "Re: hi"


def test_loop_guard_and_isolation(pair):
    a, b, alice, bob = pair
    with a.http(alice) as client:
        client.post("/v1/mail/send", json={"sender": "alice@a.test", "recipients": ["nobody@b.test"],
                                           "subject": "to nobody", "text_body": "x"})
    bounce = _newest(a, alice, "alice@a.test", subject="Undelivered Mail Returned to Sender")
    with a.http(alice) as client:
        refused = client.post(f"/v1/messages/{bounce['id']}/reply", json={"text": "why?"})
        assert refused.status_code == 422 and refused.json()["error"] == "loop_guard"
        assert client.post("/v1/messages/msg_nothing/reply", json={"text": "x"}).status_code == 404
        assert client.get("/v1/threads/thr_nothing").status_code == 404
        assert client.get("/v1/mailboxes/alice@a.test/threads", params={"cursor": "%%%"}).status_code == 422
    carol = a.create_mailbox("carol")["api_key"]["key"]
    with a.http(carol) as client:
        assert client.post(f"/v1/messages/{bounce['id']}/forward", json={"to": ["x@b.test"], "text": "x"}
                           ).status_code == 404
        assert client.get(f"/v1/threads/{bounce['thread_id']}").status_code == 404
