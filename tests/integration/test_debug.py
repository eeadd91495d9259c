"""Debug endpoints against the running daemon and the loopback DNS server."""

from __future__ import annotations

import sqlite3

from support.mail import build_message, send, wait_for

from openmailserver.mailauth.dkim import public_key_record


def _dkim(daemon, domain: str) -> tuple[str, str]:
    db = sqlite3.connect(daemon.data_dir / "openmailserver.db")
    selector, key = db.execute("SELECT dkim_selector, dkim_private_key FROM domains WHERE name = ?",
                               (domain,)).fetchone()
    db.close()
    return selector, public_key_record(key)


def test_debug_health_config_and_access(make_daemon, dns_server):
    daemon = make_daemon("d", dns_nameservers=[dns_server.address])
    agent = daemon.create_mailbox("agent")
    with daemon.http() as admin:
        health = admin.get("/v1/debug/health").json()
        assert health["status"] == "ok"
        assert {"database", "disk", "listeners", "queue", "dns", "certificate"} <= set(health)
        assert health["certificate"]["days_left"] > 800 and health["queue"]["depth"] == 0
        config = admin.get("/v1/debug/config")
        assert config.json()["admin_api_key"] == "(set)" and daemon.admin_key not in config.text
        assert config.json()["smtp_port"] == daemon.smtp_port
    with daemon.http(agent["api_key"]["key"]) as client:
        assert client.get("/v1/debug/config").status_code == 403
    hidden = make_daemon("h", debug_api_enabled=False)
    with hidden.http() as admin:
        assert admin.get("/v1/debug/health").status_code == 404
        assert admin.get("/v1/debug/logs").status_code == 404


def test_trace_inbound_and_logs(make_daemon):
    daemon = make_daemon("t")
    daemon.create_mailbox("alice")
    send(daemon.smtp_port, "x@remote.test", ["alice@t.test"], build_message("x@remote.test", "alice@t.test", "trace me"))
    with daemon.http() as admin:
        [row] = admin.get("/v1/mailboxes/alice@t.test/messages").json()
        traced = admin.get(f"/v1/debug/messages/{row['id']}/trace").json()
        assert set(traced) >= {"status", "message_id", "queue_id", "error", "events"}
        assert traced["direction"] == "inbound" and traced["events"][0]["authentication_results"]
        assert admin.get("/v1/debug/messages/msg_nothing/trace").status_code == 404
        logs = admin.get("/v1/debug/logs", params={"limit": 50}).json()
        assert logs["count"] > 0 and any("delivered" in e["message"] for e in logs["entries"])
        errors_only = admin.get("/v1/debug/logs", params={"level": "error"}).json()
        assert all(e["level"] in ("error", "critical") for e in errors_only["entries"])
        assert admin.get("/v1/debug/logs", params={"level": "loud"}).status_code == 422
        assert daemon.admin_key not in admin.get("/v1/debug/logs", params={"limit": 5000}).text


def test_trace_outbound_attempts(make_daemon, dns_server):
    b = make_daemon("b", dns_nameservers=[dns_server.address])
    b.create_mailbox("bob")
    a = make_daemon("a", dns_nameservers=[dns_server.address], remote_smtp_port=b.smtp_port)
    dns_server.add("b.test", "MX", "10 mx.b.test")
    dns_server.add("mx.b.test", "A", "127.0.0.1")
    agent = a.create_mailbox("agent")
    with a.http(agent["api_key"]["key"]) as client:
        sent = client.post("/v1/mail/send", json={"sender": "agent@a.test", "recipients": ["bob@b.test"],
                                                  "subject": "traced", "text_body": "x"}).json()
    wait_for(lambda: b.messages_on_disk("bob@b.test"))
    with a.http() as admin:
        traced = wait_for(lambda: (t := admin.get(f"/v1/debug/messages/{sent['id']}/trace").json())["events"] and t)
    assert traced["status"] == "sent" and traced["queue_id"] == sent["queue_id"]
    [event] = traced["events"]
    assert event["mx"] == "mx.b.test" and event["ip"] == "127.0.0.1" and event["code"] == 250
    assert event["tls"].startswith("TLSv1")


def test_deliverability_report_with_live_dns(make_daemon, dns_server):
    daemon = make_daemon("good", dns_nameservers=[dns_server.address])
    daemon.create_mailbox("ops", "broken.test")
    selector, record = _dkim(daemon, "good.test")
    dns_server.add("good.test", "MX", "10 mx.good.test")
    dns_server.add("mx.good.test", "A", "127.0.0.1")
    dns_server.add("1.0.0.127.in-addr.arpa", "PTR", "mx.good.test")
    dns_server.add("good.test", "TXT", "v=spf1 mx -all")
    dns_server.add(f"{selector}._domainkey.good.test", "TXT", record)
    dns_server.add("_dmarc.good.test", "TXT", "v=DMARC1; p=quarantine")
    dns_server.add("broken.test", "MX", "10 mail.elsewhere.test")
    dns_server.add(f"{selector}._domainkey.broken.test", "TXT", "v=DMARC1; k=rsa; p=AAAAnotourkey")
    with daemon.http() as admin:
        report = admin.get("/v1/debug/deliverability/report").json()
    by_domain = {d["domain"]: d for d in report["domains"]}
    good = {c["name"]: c for c in by_domain["good.test"]["checks"]}
    assert by_domain["good.test"]["status"] == "pass", good
    assert all(c["status"] == "pass" for c in good.values())
    broken = {c["name"]: c for c in by_domain["broken.test"]["checks"]}
    assert broken["mx"]["status"] == "fail" and broken["mx"]["record"]["value"] == "10 mx.good.test."
    assert broken["spf"]["status"] == "fail" and broken["spf"]["record"]["value"].startswith("v=spf1")
    assert broken["dkim"]["status"] == "fail" and broken["dkim"]["detail"].endswith("is not ours")
    assert broken["dkim"]["record"]["name"] == f"{selector}._domainkey.broken.test"
    assert broken["dmarc"]["status"] == "warn"
