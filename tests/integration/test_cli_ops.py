"""The operator's commands: doctor, reindex, send, logs."""

from __future__ import annotations

import json
import sqlite3

from support.mail import wait_for

from openmailserver.mailauth.dkim import public_key_record


def _publish_domain(daemon, dns_server, domain: str) -> None:
    db = sqlite3.connect(daemon.data_dir / "openmailserver.db")
    selector, key = db.execute("SELECT dkim_selector, dkim_private_key FROM domains WHERE name = ?",
                               (domain,)).fetchone()
    db.close()
    host = daemon.settings["hostname"]
    dns_server.add(domain, "MX", f"10 {host}")
    dns_server.add(host, "A", "127.0.0.1")
    dns_server.add("1.0.0.127.in-addr.arpa", "PTR", host)
    dns_server.add(domain, "TXT", "v=spf1 mx -all")
    dns_server.add(f"{selector}._domainkey.{domain}", "TXT", public_key_record(key))
    dns_server.add(f"_dmarc.{domain}", "TXT", "v=DMARC1; p=quarantine")


def test_doctor_passes_a_published_domain_and_names_what_is_missing(make_daemon, dns_server):
    daemon = make_daemon("doc", dns_nameservers=[dns_server.address])
    _publish_domain(daemon, dns_server, "doc.test")
    healthy = daemon.cli("doctor", "--json")
    findings = {f["check"]: f for f in json.loads(healthy.stdout)}
    assert healthy.returncode == 0, healthy.stdout
    for name in ("mx", "host", "spf", "dkim", "dmarc", "ptr"):
        assert findings[f"doc.test {name}"]["status"] == "pass", findings
    assert findings["daemon"]["status"] == "pass" and findings["listener smtp"]["status"] == "pass"
    assert findings["tls certificate"]["status"] == "pass"
    daemon.create_mailbox("ops", "broken.test")
    dns_server.add("broken.test", "MX", "10 mx.doc.test")
    broken = daemon.cli("doctor", "--json", check=False)
    assert broken.returncode == 1
    findings = {f["check"]: f for f in json.loads(broken.stdout)}
    assert findings["broken.test mx"]["status"] == "pass"
    assert findings["broken.test dkim"]["status"] == "fail"
    assert "._domainkey.broken.test" in findings["broken.test dkim"]["fix"] and "p=" in findings["broken.test dkim"]["fix"]
    assert findings["broken.test spf"]["status"] == "fail" and "v=spf1" in findings["broken.test spf"]["fix"]
    human = daemon.cli("doctor", check=False).stdout
    assert "broken.test dkim" in human and "fail" in human


def test_send_reindex_and_logs(make_daemon):
    daemon = make_daemon("ops")
    daemon.create_mailbox("alice")
    daemon.create_mailbox("bob")
    sent = json.loads(daemon.cli("send", "--from", "alice@ops.test", "--to", "bob@ops.test", "--subject",
                                 "from the cli", "--json").stdout)
    assert sent["state"] == "sent" and sent["queue_id"]
    [copy] = daemon.messages_on_disk("bob@ops.test")
    assert b"from the cli" in copy and b"DKIM-Signature" in copy
    refused = daemon.cli("send", "--from", "nobody@ops.test", "--to", "bob@ops.test", check=False)
    assert refused.returncode == 1
    assert daemon.cli("reindex", check=False).returncode == 1  # not while the daemon runs
    entries = [json.loads(line) for line in daemon.cli("logs", "--json", "-n", "200").stdout.splitlines()]
    assert any("listening: smtp" in e["message"] for e in entries)
    assert all(e["level"] in ("warning", "error", "critical")
               for e in map(json.loads, daemon.cli("logs", "--json", "--level", "warning").stdout.splitlines()))
    daemon.cli("send", "--from", "alice@ops.test", "--to", "bob@ops.test", "--subject", "cut short")
    daemon.stop()
    inbox = daemon.maildir("bob@ops.test")
    (inbox / "new" / "1700000000.M1P1Q1.elsewhere").write_bytes(b"Subject: dropped in\r\n\r\nby hand\r\n")
    # What a power loss between the rename and the fsync can leave: a file shorter than the
    # S= size in its name (the message was never acknowledged). Its row goes, and the file.
    [cut] = [f for f in (inbox / "new").iterdir() if b"cut short" in f.read_bytes()]
    cut.write_bytes(cut.read_bytes()[:100])
    report = json.loads(daemon.cli("reindex", "--json").stdout)
    assert report["adopted"] == 1 and report["dropped"] == 1 and report["incomplete_removed"] == 1
    assert not cut.exists()
    daemon.start()
    with daemon.http() as admin:
        subjects = {m["subject"] for m in admin.get("/v1/mailboxes/bob@ops.test/messages").json()}
    assert subjects == {"from the cli", "dropped in"}


def test_cli_send_to_a_remote_domain_is_delivered_by_the_daemon(make_daemon, dns_server):
    b = make_daemon("b", dns_nameservers=[dns_server.address])
    b.create_mailbox("bob")
    a = make_daemon("a", dns_nameservers=[dns_server.address], remote_smtp_port=b.smtp_port)
    a.create_mailbox("alice")
    dns_server.add("b.test", "MX", "10 mx.b.test")
    dns_server.add("mx.b.test", "A", "127.0.0.1")
    queued = json.loads(a.cli("send", "--from", "alice@a.test", "--to", "bob@b.test", "--json").stdout)
    assert queued["state"] == "queued"
    wait_for(lambda: b.messages_on_disk("bob@b.test"), timeout=15)
    shown = json.loads(a.cli("queue", "show", queued["id"], "--json").stdout)
    assert shown["state"] == "sent"
