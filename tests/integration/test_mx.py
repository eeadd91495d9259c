"""The MX receiver against real clients: swaks, smtplib and raw sockets."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import time
from email import message_from_bytes

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support.mail import RawSMTP, build_message, send


def swaks(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--helo", "client.test", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def mx(make_daemon):
    daemon = make_daemon("a")
    daemon.create_mailbox("alice")
    daemon.create_mailbox("bob")
    return daemon


def _headers(raw: bytes):
    return message_from_bytes(raw)


def test_swaks_plain_and_starttls_deliver_with_trace_headers(mx):
    plain = swaks(mx.smtp_port, "--to", "alice@a.test", "--from", "sender@remote.test")
    assert plain.returncode == 0, plain.stdout
    assert "250-PIPELINING" in plain.stdout and "250-ENHANCEDSTATUSCODES" in plain.stdout
    assert "250-SIZE" in plain.stdout and "250-8BITMIME" in plain.stdout and "250-SMTPUTF8" in plain.stdout
    assert "250-STARTTLS" in plain.stdout and "AUTH" not in plain.stdout
    tls = swaks(mx.smtp_port, "--to", "alice@a.test", "--from", "sender@remote.test", "--tls")
    assert tls.returncode == 0, tls.stdout
    first, second = (_headers(m) for m in mx.messages_on_disk("alice@a.test"))
    for msg in (first, second):
        assert msg["Return-Path"] == "<sender@remote.test>"
        assert msg["Delivered-To"] == "alice@a.test"
        assert len(msg.get_all("Authentication-Results")) == 1
        assert msg["Authentication-Results"].startswith("mx.a.test;")
        assert "by mx.a.test" in msg["Received"]
    received = sorted(m["Received"] for m in (first, second))
    assert sum("TLSv1." in r for r in received) == 1 and sum("ESMTPS" in r for r in received) == 1


def test_swaks_pipelining(mx):
    result = swaks(mx.smtp_port, "--pipeline", "--to", "alice@a.test,bob@a.test", "--from", "p@remote.test")
    assert result.returncode == 0, result.stdout
    assert len(mx.messages_on_disk("alice@a.test")) == 1 and len(mx.messages_on_disk("bob@a.test")) == 1


def test_8bitmime_and_utf8_addresses(mx):
    mx.create_mailbox("jörg")
    body = "Grüße aus Köln — ünïcödé\r\n"
    data = ("From: zoë@remote.test\r\nTo: jörg@a.test\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + body).encode("utf-8")
    refused = send(mx.smtp_port, "zoë@remote.test", ["jörg@a.test"], data,
                   mail_options=["BODY=8BITMIME", "SMTPUTF8"])
    assert refused == {}
    [stored] = mx.messages_on_disk("jörg@a.test")
    assert body.encode("utf-8") in stored
    with mx.http() as client:
        [listed] = client.get("/v1/mailboxes/jörg@a.test/messages").json()
    assert listed["subject"] == "Grüße"


def test_aliases_subaddress_and_one_copy_per_mailbox(mx):
    with mx.http() as client:
        assert client.post("/v1/aliases", json={"source": "team@a.test",
                                                "destination": "alice@a.test,bob@a.test"}).status_code == 201
        assert client.post("/v1/aliases", json={"source": "all@a.test", "destination": "team@a.test"}
                           ).status_code == 201
    data = build_message("x@remote.test", "team@a.test", "fan out")
    refused = send(mx.smtp_port, "x@remote.test", ["alice@a.test", "alice+news@a.test", "all@a.test", "team@a.test"],
                   data)
    assert refused == {}
    [alice_copy] = mx.messages_on_disk("alice@a.test")
    [bob_copy] = mx.messages_on_disk("bob@a.test")
    assert _headers(alice_copy)["Delivered-To"] == "alice@a.test"
    assert _headers(bob_copy)["Delivered-To"] == "all@a.test"
    # A subaddress alone delivers to the base mailbox and keeps the tag.
    send(mx.smtp_port, "x@remote.test", ["Alice+Receipts@A.TEST"], build_message("x@remote.test", "a", "tagged"))
    assert len(mx.messages_on_disk("alice@a.test")) == 2
    db = sqlite3.connect(mx.data_dir / "openmailserver.db")
    assert db.execute("SELECT subaddress FROM messages WHERE subject = 'tagged'").fetchone() == ("receipts",)
    # Catch-all.
    with mx.http() as client:
        client.post("/v1/aliases", json={"source": "@a.test", "destination": "bob@a.test"})
    send(mx.smtp_port, "x@remote.test", ["anything@a.test"], build_message("x@remote.test", "a", "caught"))
    assert len(mx.messages_on_disk("bob@a.test")) == 2


def test_rejections_with_enhanced_codes(make_daemon):
    daemon = make_daemon("r", message_size_limit=20000)
    daemon.create_mailbox("full", quota=1000)
    daemon.create_mailbox("user")
    s = RawSMTP(daemon.smtp_port)
    assert s.greeting.startswith("220 mx.r.test")
    s.cmd("EHLO client.test")
    assert s.cmd("MAIL FROM:<a@remote.test> SIZE=999999").startswith("552 5.3.4")
    assert s.cmd("MAIL FROM:<a@remote.test>").startswith("250 2.1.0")
    assert s.cmd("RCPT TO:<nobody@r.test>").startswith("550 5.1.1")
    assert s.cmd("RCPT TO:<someone@gmail.com>").startswith("554 5.7.1")
    assert s.cmd("RCPT TO:<bad address@@r.test>")[0] == "5"
    assert s.cmd("RCPT TO:<full@r.test>").startswith("250 2.1.5")
    assert s.cmd("DATA").startswith("354")
    s.send(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 30 + b".\r\n")
    assert s.reply().startswith("552 5.3.4")
    # Fill the quota, then the next RCPT is refused for that mailbox only.
    assert s.cmd("MAIL FROM:<a@remote.test>").startswith("250")
    assert s.cmd("RCPT TO:<full@r.test>").startswith("250")
    s.cmd("DATA")
    s.send(b"Subject: fill\r\n\r\n" + (b"y" * 700 + b"\r\n") * 3 + b".\r\n")
    assert s.reply().startswith("250 2.0.0")
    assert s.cmd("MAIL FROM:<a@remote.test>").startswith("250")
    assert s.cmd("RCPT TO:<full@r.test>").startswith("452 4.2.2")
    for n in range(100):
        assert s.cmd(f"RCPT TO:<user+{n}@r.test>").startswith("250"), n
    assert s.cmd("RCPT TO:<user@r.test>").startswith("452 4.5.3")
    assert s.cmd("RSET").startswith("250")
    assert s.cmd("QUIT").startswith("221")
    s.close()


def test_malformed_input_gets_5xx_and_the_server_survives(mx):
    s = RawSMTP(mx.smtp_port)
    assert s.cmd("EHLO client.test").startswith("250")
    assert s.cmd("FROBNICATE now").startswith("500")
    assert s.cmd("RCPT TO:<alice@a.test>").startswith("503")
    assert s.cmd(b"MAIL FROM:<a\x00b@remote.test>\r\n").startswith("500 5.5.2")
    assert s.cmd(b"NOOP\n").startswith("500 5.5.2")  # bare LF
    assert s.cmd(b"NOOP " + b"z" * 5000 + b"\r\n").startswith("500")
    assert s.cmd("MAIL FROM:<<<>>>").startswith("5")
    assert s.cmd("MAIL FROM:<ok@remote.test>").startswith("250")
    assert s.cmd("RCPT TO:<alice@a.test>").startswith("250")
    s.cmd("DATA")
    s.send(b"Subject: smuggle\r\n\r\nline\n.\r\nMAIL FROM:<x@y>\r\n\r\n.\r\n")
    assert s.reply().startswith("554 5.6.0")
    assert s.cmd("MAIL FROM:<ok@remote.test>").startswith("250")
    s.cmd("RCPT TO:<alice@a.test>")
    s.cmd("DATA")
    s.send(b"Subject: nul\r\n\r\nbad\x00byte\r\n.\r\n")
    assert s.reply().startswith("554 5.6.0")
    assert s.cmd("NOOP").startswith("250")
    s.close()
    assert mx.messages_on_disk("alice@a.test") == []
    assert swaks(mx.smtp_port, "--to", "alice@a.test", "--from", "ok@remote.test").returncode == 0


def test_connection_limits_and_idle_timeout(make_daemon):
    daemon = make_daemon("lim", smtp_max_connections_per_ip=3, smtp_idle_timeout=1)
    sessions = [RawSMTP(daemon.smtp_port) for _ in range(3)]
    assert all(s.greeting.startswith("220") for s in sessions)
    extra = RawSMTP(daemon.smtp_port)
    assert extra.greeting.startswith("421 4.7.0")
    extra.close()
    time.sleep(1.5)
    for s in sessions:
        assert s.reply().startswith("421 4.4.2")
        s.close()
    time.sleep(0.2)
    again = RawSMTP(daemon.smtp_port)
    assert again.greeting.startswith("220")
    again.close()


def test_forged_authentication_results_are_removed(mx):
    data = build_message("x@remote.test", "alice@a.test", "forged")
    data = (b"Authentication-Results: MX.A.TEST; spf=pass smtp.mailfrom=ceo@a.test;\r\n dkim=pass\r\n"
            b"Authentication-Results: other.example; spf=fail\r\n" + data)
    send(mx.smtp_port, "x@remote.test", ["alice@a.test"], data)
    [stored] = mx.messages_on_disk("alice@a.test")
    results = _headers(stored).get_all("Authentication-Results")
    assert len(results) == 2
    assert results[0].startswith("mx.a.test;") and "ceo@a.test" not in stored.decode()
    assert results[1] == "other.example; spf=fail"


def test_threads_follow_in_reply_to_then_references(mx):
    send(mx.smtp_port, "x@remote.test", ["alice@a.test"],
         build_message("x@remote.test", "alice@a.test", "start", message_id="<m1@remote.test>"))
    send(mx.smtp_port, "x@remote.test", ["alice@a.test"],
         build_message("x@remote.test", "alice@a.test", "Re: start", message_id="<m2@remote.test>",
                       in_reply_to="<m1@remote.test>", references="<m1@remote.test>"))
    send(mx.smtp_port, "x@remote.test", ["alice@a.test"],
         build_message("x@remote.test", "alice@a.test", "Re: start", message_id="<m3@remote.test>",
                       references="<unknown@x> <m2@remote.test>"))
    send(mx.smtp_port, "x@remote.test", ["alice@a.test"],
         build_message("x@remote.test", "alice@a.test", "other", message_id="<m4@remote.test>"))
    with mx.http() as client:
        listed = client.get("/v1/mailboxes/alice@a.test/messages").json()
    threads = {m["message_id"]: m["thread_id"] for m in listed}
    assert threads["m1@remote.test"] == threads["m2@remote.test"] == threads["m3@remote.test"]
    assert threads["m4@remote.test"] != threads["m1@remote.test"]
    db = sqlite3.connect(mx.data_dir / "openmailserver.db")
    received = db.execute("SELECT COUNT(*) FROM events WHERE type = 'message.received'").fetchone()[0]
    assert received == 4


# ---- SPF, DKIM, DMARC through the loopback DNS server -------------------------

@pytest.fixture
def signing_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    import base64
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


@pytest.fixture
def authmx(make_daemon, dns_server, signing_key):
    _, public = signing_key
    dns_server.add("good.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns_server.add("sel._domainkey.good.test", "TXT", public)
    dns_server.add("_dmarc.good.test", "TXT", "v=DMARC1; p=reject")
    dns_server.add("strict.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns_server.add("_dmarc.strict.test", "TXT", "v=DMARC1; p=reject")
    daemon = make_daemon("auth", dns_nameservers=[dns_server.address])
    daemon.create_mailbox("alice")
    return daemon


def _signed(pem: bytes, sender: str, subject: str) -> bytes:
    message = build_message(sender, "alice@auth.test", subject, body="signed body\n")
    signature = dkim.sign(message, b"sel", sender.split("@")[1].encode(), pem,
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return signature + message


def _stored_results(daemon, subject: str) -> dict:
    with daemon.http() as client:
        [row] = [m for m in client.get("/v1/mailboxes/alice@auth.test/messages").json() if m["subject"] == subject]
        return client.get(f"/v1/messages/{row['id']}", params={"address": "alice@auth.test"}).json()


def test_spf_dkim_dmarc_pass(authmx, signing_key):
    pem, _ = signing_key
    send(authmx.smtp_port, "news@good.test", ["alice@auth.test"], _signed(pem, "news@good.test", "signed"))
    result = _stored_results(authmx, "signed")
    assert (result["spf"], result["dkim"], result["dmarc"]) == ("pass", "pass", "pass")
    header = result["authentication_results"]
    assert header.startswith("mx.auth.test;") and "spf=pass" in header and "dkim=pass" in header \
        and "dmarc=pass" in header and "header.d=good.test" in header


def test_altered_body_fails_dkim(authmx, signing_key):
    pem, _ = signing_key
    tampered = _signed(pem, "news@good.test", "tampered").replace(b"signed body", b"SIGNED BODY")
    send(authmx.smtp_port, "news@good.test", ["alice@auth.test"], tampered)
    result = _stored_results(authmx, "tampered")
    assert result["dkim"] == "fail" and result["spf"] == "pass" and result["dmarc"] == "pass"


def test_dmarc_reject_is_refused(authmx):
    s = RawSMTP(authmx.smtp_port)
    s.cmd("EHLO client.test")
    s.cmd("MAIL FROM:<ceo@strict.test>")
    assert s.cmd("RCPT TO:<alice@auth.test>").startswith("250")
    s.cmd("DATA")
    s.send(build_message("ceo@strict.test", "alice@auth.test", "wire money") + b".\r\n")
    reply = s.reply()
    assert reply.startswith("550 5.7.1"), reply
    s.close()
    assert authmx.messages_on_disk("alice@auth.test") == []


def test_dmarc_reject_can_only_mark(make_daemon, dns_server):
    dns_server.add("strict.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns_server.add("_dmarc.strict.test", "TXT", "v=DMARC1; p=reject")
    daemon = make_daemon("mark", dns_nameservers=[dns_server.address], dmarc_enforce=False)
    daemon.create_mailbox("alice")
    send(daemon.smtp_port, "ceo@strict.test", ["alice@mark.test"],
         build_message("ceo@strict.test", "alice@mark.test", "marked"))
    [stored] = daemon.messages_on_disk("alice@mark.test")
    header = _headers(stored)["Authentication-Results"]
    assert "spf=fail" in header and "dmarc=fail" in header


def test_many_concurrent_sessions(mx):
    import concurrent.futures

    def one(n: int) -> dict:
        return send(mx.smtp_port, f"s{n}@remote.test", ["alice@a.test", "bob@a.test"],
                    build_message(f"s{n}@remote.test", "alice@a.test", f"burst {n}"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        assert all(r == {} for r in pool.map(one, range(100)))
    assert len(mx.messages_on_disk("alice@a.test")) == 100 and len(mx.messages_on_disk("bob@a.test")) == 100
    assert not list((mx.maildir("alice@a.test") / "tmp").iterdir())


def test_helo_works_too(mx):
    s = RawSMTP(mx.smtp_port)
    assert s.cmd("HELO old.client.test").startswith("250 mx.a.test")
    assert s.cmd("MAIL FROM:<old@remote.test>").startswith("250")
    assert s.cmd("RCPT TO:<bob@a.test>").startswith("250")
    s.close()
    with socket.create_connection(("127.0.0.1", mx.smtp_port)) as raw:
        raw.sendall(b"QUIT\r\n")


def test_each_copy_names_its_own_recipient_whatever_the_client_says(mx):
    """The Received field's "for <rcpt>" is added per copy; text from the client (its HELO
    name) is taken as it is, never as part of the template."""
    s = RawSMTP(mx.smtp_port)
    assert s.cmd("HELO weird{for}.client.test").startswith("250")
    assert s.cmd("MAIL FROM:<x@remote.test>").startswith("250")
    assert s.cmd("RCPT TO:<alice@a.test>").startswith("250")
    assert s.cmd("RCPT TO:<bob@a.test>").startswith("250")
    assert s.cmd("DATA").startswith("354")
    assert s.cmd("Subject: trace\r\n\r\nbody\r\n.").startswith("250")
    s.close()
    for rcpt in ("alice@a.test", "bob@a.test"):
        [raw] = mx.messages_on_disk(rcpt)
        received = " ".join(_headers(raw)["Received"].split())
        assert received.startswith("from weird{for}.client.test ([127.0.0.1]) by mx.a.test")
        assert received.count(" for <") == 1 and f" for <{rcpt}>;" in received


def test_a_retried_message_is_stored_once_and_its_suppression_traced(mx):
    """A sender that lost our 250 sends again: the same message is not stored twice (RFC 1047),
    even when it comes back by another path (other relays' trace fields); each suppressed copy
    is in the log and in the original's delivery trace."""
    data = build_message("x@remote.test", "alice@a.test", "retried", message_id="<same@remote.test>")
    assert send(mx.smtp_port, "x@remote.test", ["alice@a.test"], data) == {}
    assert send(mx.smtp_port, "x@remote.test", ["alice@a.test", "bob@a.test"], data) == {}
    relayed = b"Received: from backup.remote.test by relay.remote.test; Mon, 7 Dec 2026 10:00:00 +0000\r\n" + data
    assert send(mx.smtp_port, "x@remote.test", ["alice@a.test"], relayed) == {}
    assert len(mx.messages_on_disk("alice@a.test")) == 1 and len(mx.messages_on_disk("bob@a.test")) == 1
    with mx.http() as admin:
        [row] = admin.get("/v1/mailboxes/alice@a.test/messages").json()
        events = admin.get(f"/v1/debug/messages/{row['id']}/trace").json()["events"]
    assert [e["outcome"] for e in events] == ["delivered", "duplicate_suppressed", "duplicate_suppressed"]
    assert all(e["envelope_from"] == "x@remote.test" and e["queue_id"] for e in events[1:])
    assert mx.output().count("duplicate suppressed") == 2


def test_a_reused_message_id_with_other_content_is_stored(mx):
    """Only the same content is a duplicate: a message sent first with another's Message-ID
    (forged, or a sender reusing ids) must not suppress the real one."""
    forged = build_message("x@remote.test", "alice@a.test", "first", body="forged", message_id="<same@remote.test>")
    real = build_message("x@remote.test", "alice@a.test", "first", body="the real one",
                         message_id="<same@remote.test>")
    assert send(mx.smtp_port, "x@remote.test", ["alice@a.test"], forged) == {}
    assert send(mx.smtp_port, "x@remote.test", ["alice@a.test"], real) == {}
    bodies = sorted(_headers(raw).get_payload() for raw in mx.messages_on_disk("alice@a.test"))
    assert [b.strip() for b in bodies] == ["forged", "the real one"]
    # A header the sender controls counts as content too.
    other_subject = real.replace(b"Subject: first", b"Subject: second")
    assert other_subject != real
    assert send(mx.smtp_port, "x@remote.test", ["alice@a.test"], other_subject) == {}
    assert len(mx.messages_on_disk("alice@a.test")) == 3


def test_imap_cache_written_at_delivery_matches_each_stored_copy(mx):
    """The header block and ENVELOPE indexed with each copy are those of its own file (the
    trace fields differ per recipient), so IMAP never needs to read the file for them."""
    from openmailserver.mime import structure

    send(mx.smtp_port, "x@remote.test", ["alice@a.test", "bob@a.test"],
         build_message("x@remote.test", "alice@a.test, bob@a.test", "Cached at delivery"))
    db = sqlite3.connect(mx.data_dir / "openmailserver.db")
    for address in ("alice@a.test", "bob@a.test"):
        [stored] = mx.messages_on_disk(address)
        header, envelope = db.execute(
            "SELECT c.header, c.envelope FROM message_cache c JOIN messages m ON m.id = c.message_id "
            "JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.address = ?", (address,)).fetchone()
        assert header == structure.split_header(stored)[0]
        assert f"Delivered-To: {address}".encode() in header
        assert envelope == structure.envelope_bytes(header)


def test_commands_pipelined_after_starttls_are_discarded(mx):
    """RFC 3207 §4.2 (the STARTTLS command-injection flaw, CVE-2011-0411): what a client sent
    in clear after STARTTLS must not be executed inside the TLS session; and the client must
    say EHLO again there."""
    import ssl

    s = RawSMTP(mx.smtp_port)
    s.cmd("EHLO client.test")
    s.send(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n")
    assert s.reply().startswith("220")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    tls = context.wrap_socket(s.sock, server_hostname="mx.a.test")
    tls.settimeout(10)
    tls.sendall(b"NOOP\r\n")
    assert tls.recv(1000).startswith(b"250 2.0.0")  # no reply to the injected MAIL came first
    tls.sendall(b"MAIL FROM:<x@remote.test>\r\n")
    assert tls.recv(1000).startswith(b"503")  # EHLO first: the session started over
    tls.sendall(b"EHLO client.test\r\n")
    ehlo = b""
    while not ehlo.endswith(b"250 HELP\r\n"):
        ehlo += tls.recv(1000)
    assert b"STARTTLS" not in ehlo
    tls.sendall(b"MAIL FROM:<x@remote.test>\r\n")
    assert tls.recv(1000).startswith(b"250 2.1.0")
    tls.close()
