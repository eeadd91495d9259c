"""Submission on 465/587 and the outbound queue, with two daemons on loopback.

A (a.test) submits and queues; B (b.test) is the receiving MX. The loopback
DNS server publishes B's MX and A's SPF, DKIM and DMARC records, and A's
`remote_smtp_port` is B's MX port: together they stand in for two hosts on
the internet.
"""

from __future__ import annotations

import asyncio
import base64
import json
import smtplib
import sqlite3
import subprocess
from email import message_from_bytes

import aiosmtplib
import pytest
from support.mail import RawSMTP, build_message, insecure_tls, wait_for

from openmailserver.mailauth.dkim import public_key_record

PASSWORD = "alice-password-1"


@pytest.fixture
def pair(make_daemon, dns_server):
    b = make_daemon("b", dns_nameservers=[dns_server.address])
    a = make_daemon("a", dns_nameservers=[dns_server.address], remote_smtp_port=b.smtp_port,
                    retry_schedule="1s", max_sends_per_hour=20)
    db = sqlite3.connect(a.data_dir / "openmailserver.db")
    (selector, key), = db.execute("SELECT dkim_selector, dkim_private_key FROM domains WHERE name = 'a.test'")
    db.close()
    dns_server.add("b.test", "MX", "10 mx.b.test")
    dns_server.add("mx.b.test", "A", "127.0.0.1")
    dns_server.add("a.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns_server.add(f"{selector}._domainkey.a.test", "TXT", public_key_record(key))
    dns_server.add("_dmarc.a.test", "TXT", "v=DMARC1; p=reject")
    a.create_mailbox("alice", password=PASSWORD)
    a.create_mailbox("carol")
    b.create_mailbox("bob")
    return a, b


def swaks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--helo", "client.test", *args], capture_output=True, text=True, timeout=60)


def submit_465(a, to: str, subject: str, sender: str = "alice@a.test", password: str = PASSWORD, **kw):
    return swaks("--server", f"127.0.0.1:{a.settings['submission_port']}", "--tlsc", "--auth", "PLAIN",
                 "--auth-user", "alice@a.test", "--auth-password", password, "--from", sender, "--to", to,
                 "--header", f"Subject: {subject}", *kw.get("extra", ()))


def queue_json(daemon, *args: str):
    return json.loads(daemon.cli("queue", *args, "--json").stdout)


def test_submission_465_reaches_b_signed_and_leaves_a_sent_copy(pair):
    a, b = pair
    result = submit_465(a, "bob@b.test", "over the wire")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0" in result.stdout and "250 2.0.0" in result.stdout
    [received] = wait_for(lambda: b.messages_on_disk("bob@b.test"))
    msg = message_from_bytes(received)
    results = msg["Authentication-Results"]
    assert results.startswith("mx.b.test;")
    assert "dkim=pass" in results and "header.d=a.test" in results and "spf=pass" in results \
        and "dmarc=pass" in results
    assert msg["Message-ID"] and msg["Date"] and msg["DKIM-Signature"]
    [sent] = a.messages_on_disk("alice@a.test", "Sent")
    assert message_from_bytes(sent)["Message-ID"] == msg["Message-ID"]
    [row] = wait_for(lambda: [r for r in queue_json(a, "list") if r["state"] == "delivered"])
    shown = queue_json(a, "show", row["outbound_id"])
    assert shown["state"] == "sent"
    [attempt] = shown["attempts"]
    assert attempt["mx_host"] == "mx.b.test" and attempt["ip"] == "127.0.0.1" and attempt["code"] == 250
    assert attempt["tls"] and attempt["tls"].startswith("TLSv1")


def test_submission_587_starttls_with_aiosmtplib_and_local_delivery(pair):
    a, b = pair

    async def go():
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=a.settings["submission_starttls_port"],
                                 start_tls=False, tls_context=insecure_tls())
        await client.connect()
        await client.ehlo()
        assert "auth" not in client.esmtp_extensions  # not offered before TLS
        refused = await client.execute_command(b"AUTH", b"PLAIN", b"AGFsaWNlQGEudGVzdABhbGljZS1wYXNzd29yZC0x")
        assert refused.code == 530
        await client.starttls(tls_context=insecure_tls())
        await client.login("alice@a.test", PASSWORD)
        data = build_message("alice@a.test", "carol@a.test, bob@b.test", "mixed recipients")
        await client.sendmail("alice@a.test", ["carol@a.test", "bob@b.test"], data)
        await client.quit()

    asyncio.run(go())
    assert len(a.messages_on_disk("carol@a.test")) == 1  # delivered at once, no network
    wait_for(lambda: b.messages_on_disk("bob@b.test"))


def test_unknown_user_at_b_bounces_to_the_sender(pair):
    a, _ = pair
    assert submit_465(a, "nobody@b.test", "to nobody").returncode == 0
    bounce = wait_for(lambda: [m for m in a.messages_on_disk("alice@a.test") if b"multipart/report" in m])[0]
    msg = message_from_bytes(bounce)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    text = bounce.decode()
    assert "nobody@b.test" in text and "550 5.1.1" in text and "User unknown" in text
    assert "Final-Recipient: rfc822; nobody@b.test" in text and "Status: 5.1.1" in text
    [row] = [r for r in queue_json(a, "list") if r["recipient"] == "nobody@b.test"]
    assert row["state"] == "bounced"


def test_b_down_defers_then_delivers_on_retry(pair):
    a, b = pair
    b.stop()
    assert submit_465(a, "bob@b.test", "patience").returncode == 0
    row = wait_for(lambda: [r for r in queue_json(a, "list") if r["attempts"] >= 2])[0]
    assert row["state"] == "deferred" and "4.4.1" in row["last_error"]
    shown = queue_json(a, "show", row["outbound_id"])
    assert shown["state"] == "deferred" and len(shown["attempts"]) >= 2
    assert all(att["outcome"] == "deferred" for att in shown["attempts"])
    b.start()
    wait_for(lambda: b.messages_on_disk("bob@b.test"), timeout=15)
    assert queue_json(a, "show", row["outbound_id"])["state"] == "sent"


def test_sigkill_with_queued_mail_delivers_exactly_once_after_restart(pair):
    a, b = pair
    b.stop()
    for n in range(5):
        assert submit_465(a, "bob@b.test", f"survivor {n}").returncode == 0
    a.kill()
    b.start()
    a.start()
    wait_for(lambda: len(b.messages_on_disk("bob@b.test")) >= 5, timeout=20)
    subjects = sorted(message_from_bytes(m)["Subject"] for m in b.messages_on_disk("bob@b.test"))
    assert subjects == [f"survivor {n}" for n in range(5)]
    wait_for(lambda: all(r["state"] == "delivered" for r in queue_json(a, "list")))
    assert not list((a.data_dir / "queue").glob("*.eml"))  # spool cleaned once delivered


def test_a_lost_spool_file_bounces_that_message_and_the_others_still_go(pair):
    """Three messages wait for B; one loses its spool file (an admin's mistake, a disk error):
    when B is back it bounces with its own reason, and the other two arrive."""
    a, b = pair
    b.stop()
    for n in range(3):
        assert submit_465(a, "bob@b.test", f"queued {n}").returncode == 0
    spools = sorted((a.data_dir / "queue").glob("*.eml"))
    assert len(spools) == 3
    next(p for p in spools if b"queued 1" in p.read_bytes()).unlink()
    b.start()
    wait_for(lambda: len(b.messages_on_disk("bob@b.test")) == 2, timeout=20)
    subjects = sorted(message_from_bytes(m)["Subject"] for m in b.messages_on_disk("bob@b.test"))
    assert subjects == ["queued 0", "queued 2"]
    bounce = wait_for(lambda: [m for m in a.messages_on_disk("alice@a.test") if b"5.3.0" in m], timeout=20)
    assert b"queued message file is missing" in bounce[0]
    wait_for(lambda: not list((a.data_dir / "queue").glob("*.eml")))


def test_queue_hold_release_and_delete(pair):
    a, b = pair
    b.stop()
    assert submit_465(a, "bob@b.test", "held back").returncode == 0
    [row] = wait_for(lambda: queue_json(a, "list"))
    assert queue_json(a, "hold", row["outbound_id"])["state"] == "held"
    b.start()
    assert queue_json(a, "release", row["id"])["state"] in ("queued", "sent", "deferred")
    wait_for(lambda: b.messages_on_disk("bob@b.test"), timeout=15)
    b.stop()
    assert submit_465(a, "bob@b.test", "never mind").returncode == 0
    pending = wait_for(lambda: [r for r in queue_json(a, "list") if r["state"] != "delivered"])[0]
    assert queue_json(a, "delete", pending["queue_id"])["state"] == "failed"


def test_submission_refusals(pair):
    a, _ = pair
    bad = submit_465(a, "bob@b.test", "x", password="wrong-password")
    assert "535 5.7.8" in bad.stdout
    forged_env = submit_465(a, "bob@b.test", "x", sender="carol@a.test")
    assert "553 5.7.1" in forged_env.stdout
    forged_header = submit_465(a, "bob@b.test", "x", extra=("--header", "From: Carol <carol@a.test>"))
    assert "553 5.7.1" in forged_header.stdout
    with smtplib.SMTP("127.0.0.1", a.settings["submission_starttls_port"]) as plain:
        plain.ehlo()
        code, text = plain.docmd("MAIL FROM:<alice@a.test>")
        assert code == 530
    s = RawSMTP(a.settings["submission_starttls_port"])
    s.cmd("EHLO x")
    assert s.cmd("AUTH PLAIN AGFsaWNlQGEudGVzdABhbGljZS1wYXNzd29yZC0x").startswith("530")
    s.close()


def test_rate_limit_gives_450(make_daemon, dns_server):
    a = make_daemon("a", dns_nameservers=[dns_server.address], max_sends_per_hour=2)
    a.create_mailbox("alice", password=PASSWORD)
    a.create_mailbox("carol")
    for n in range(2):
        assert "250 2.0.0" in submit_465(a, "carol@a.test", f"n{n}").stdout
    over = submit_465(a, "carol@a.test", "one too many")
    assert "450 4.7.1" in over.stdout


def test_a_mailbox_disabled_during_the_transaction_sends_nothing(make_daemon, dns_server):
    """MAIL was accepted, then the admin disables the mailbox: its DATA is refused."""
    a = make_daemon("a", dns_nameservers=[dns_server.address])
    a.create_mailbox("alice", password=PASSWORD)
    a.create_mailbox("carol")

    async def go() -> aiosmtplib.SMTPResponse:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=a.settings["submission_starttls_port"],
                                 start_tls=False, tls_context=insecure_tls())
        await client.connect()
        await client.starttls(tls_context=insecure_tls())
        await client.login("alice@a.test", PASSWORD)
        await client.mail("alice@a.test")
        await client.rcpt("carol@a.test")
        with a.http() as api:
            assert api.patch("/v1/mailboxes/alice@a.test", json={"active": False}).status_code == 200
        try:
            await client.data(build_message("alice@a.test", "carol@a.test", "after the disable"))
        except aiosmtplib.SMTPDataError as exc:
            return aiosmtplib.SMTPResponse(exc.code, exc.message)
        finally:
            client.close()
        raise AssertionError("DATA was accepted")

    refused = asyncio.run(go())
    assert refused.code == 550 and "disabled" in refused.message
    assert a.messages_on_disk("carol@a.test") == []
    assert a.messages_on_disk("alice@a.test", "Sent") == []


def test_alias_may_be_used_as_sender(pair):
    a, b = pair
    with a.http() as client:
        assert client.post("/v1/aliases", json={"source": "sales@a.test", "destination": "alice@a.test"}
                           ).status_code == 201
    result = submit_465(a, "bob@b.test", "from the alias", sender="sales@a.test",
                        extra=("--header", "From: Sales <sales@a.test>"))
    assert "250 2.0.0" in result.stdout, result.stdout
    wait_for(lambda: b.messages_on_disk("bob@b.test"))
    a.create_mailbox("dave")
    with a.http() as client:
        for source, destination in (("team@a.test", "sales@a.test"), ("elsewhere@a.test", "dave@a.test")):
            assert client.post("/v1/aliases", json={"source": source, "destination": destination}
                               ).status_code == 201
    # An alias of an alias of the mailbox is the mailbox's too; one that leads elsewhere is not.
    chained = submit_465(a, "bob@b.test", "via two aliases", sender="team@a.test",
                         extra=("--header", "From: Team <team@a.test>"))
    assert "250 2.0.0" in chained.stdout, chained.stdout
    for sender, header in (("elsewhere@a.test", "alice@a.test"), ("alice@a.test", "elsewhere@a.test")):
        refused = submit_465(a, "bob@b.test", "not ours", sender=sender, extra=("--header", f"From: <{header}>"))
        assert "553 5.7.1" in refused.stdout, refused.stdout


def test_failed_logins_are_throttled(pair):
    a, _ = pair
    port = a.settings["submission_port"]
    replies = []
    for _ in range(12):
        try:
            client = smtplib.SMTP_SSL("127.0.0.1", port, context=insecure_tls())
        except smtplib.SMTPConnectError as exc:  # a blocked address is refused at the greeting
            replies.append(exc.smtp_code)
            continue
        with client:
            client.ehlo()
            code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@a.test\0nope-nope").decode())
            replies.append(code)
    assert replies[:10] == [535] * 10 and set(replies[10:]) == {421}


def test_relay_host_smarthost_mode(make_daemon, dns_server):
    """With relay_host set, everything goes to the smarthost whatever the MX records say."""
    b = make_daemon("b", dns_nameservers=[dns_server.address])
    b.create_mailbox("bob")
    a = make_daemon("a", dns_nameservers=[dns_server.address], relay_host=f"127.0.0.1:{b.smtp_port}",
                    remote_smtp_port=1)  # the MX route would fail: there is no MX and port 1 is closed
    a.create_mailbox("alice", password=PASSWORD)
    assert "250 2.0.0" in submit_465(a, "bob@b.test", "via the smarthost").stdout
    [received] = wait_for(lambda: b.messages_on_disk("bob@b.test"))
    assert message_from_bytes(received)["Subject"] == "via the smarthost"
    [row] = queue_json(a, "list")
    assert row["state"] == "delivered"
