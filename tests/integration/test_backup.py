"""Backups taken while mail flows restore completely; damaged or wrongly keyed ones are refused."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from support.mail import build_message, send

KEY = "correct horse battery staple"


def _deliver_until(daemon, stop: threading.Event, acked: list[str]) -> None:
    n = 0
    while not stop.is_set():
        subject = f"during backup {n}"
        send(daemon.smtp_port, "x@remote.test", ["alice@bk.test"], build_message("x@remote.test", "a", subject))
        acked.append(subject)
        n += 1


def test_backup_during_deliveries_restores_everything(make_daemon):
    daemon = make_daemon("bk", backup_encryption_key=KEY)
    alice = daemon.create_mailbox("alice", password="alice-password")
    daemon.create_mailbox("bob")
    with daemon.http() as admin:
        admin.post("/v1/aliases", json={"source": "team@bk.test", "destination": "alice@bk.test,bob@bk.test"})
    for n in range(20):
        send(daemon.smtp_port, "x@remote.test", ["alice@bk.test"], build_message("x@remote.test", "a", f"before {n}"))
    stop, acked = threading.Event(), []
    writer = threading.Thread(target=_deliver_until, args=(daemon, stop, acked))
    writer.start()
    try:
        with daemon.http() as admin:
            made = admin.post("/v1/backup")
    finally:
        stop.set()
        writer.join()
    assert made.status_code == 201, made.text
    backup = made.json()
    assert backup["encrypted"] is True and Path(backup["path"]).is_file()
    with daemon.http() as admin:
        assert admin.post("/v1/restore/validate", params={"path": backup["path"]}).json()["status"] == "ok"
        assert [b["path"] for b in admin.get("/v1/backups").json()] == [backup["path"]]
    in_backup_time = len(daemon.messages_on_disk("alice@bk.test"))

    restored = make_daemon("restored", start=False, backup_encryption_key=KEY, primary_domain="bk.test",
                           hostname="mx.bk.test")
    result = json.loads(restored.cli("restore", backup["path"], "--json").stdout)
    assert result["status"] == "restored"
    restored.start()
    with restored.http() as admin:
        assert {m["email"] for m in admin.get("/v1/mailboxes").json()} == {"alice@bk.test", "bob@bk.test"}
        assert [a["source"] for a in admin.get("/v1/aliases").json()] == ["team@bk.test"]
        listed = admin.get("/v1/mailboxes/alice@bk.test/messages", params={"limit": 500}).json()
    subjects = {m["subject"] for m in listed}
    assert {f"before {n}" for n in range(20)} <= subjects
    # Everything acknowledged before the snapshot is there; nothing is there twice.
    assert len(listed) == len(subjects) and len(listed) >= 20 and len(listed) <= in_backup_time
    with restored.http(alice["api_key"]["key"]) as client:  # keys survive
        assert client.get("/v1/mailboxes/alice@bk.test").status_code == 200


def test_damaged_or_wrongly_keyed_backups_fail_validation(make_daemon):
    daemon = make_daemon("v", backup_encryption_key=KEY)
    daemon.create_mailbox("alice")
    path = Path(json.loads(daemon.cli("backup", "create", "--json").stdout)["path"])
    assert json.loads(daemon.cli("backup", "verify", str(path), "--json").stdout)["status"] == "ok"
    data = path.read_bytes()
    corrupted = path.with_name("corrupted.omsbackup")
    corrupted.write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    truncated = path.with_name("truncated.omsbackup")
    truncated.write_bytes(data[: len(data) // 2])
    with daemon.http() as admin:
        def check(p):
            return admin.post("/v1/restore/validate", params={"path": str(p)}).json()
        assert check(corrupted)["status"] == "invalid" and "decrypt" in check(corrupted)["details"]["reason"]
        assert check(truncated)["status"] == "invalid" and "truncated" in check(truncated)["details"]["reason"]
        assert check("/etc/hostname")["status"] == "invalid"
        assert check("nothing-here.omsbackup")["status"] == "invalid"
    other_key = make_daemon("w", start=False, backup_encryption_key="a different key")
    other_key.cli("init")
    wrong = json.loads(other_key.cli("backup", "verify", str(path), "--json", check=False).stdout)
    assert wrong["status"] == "invalid" and "wrong backup_encryption_key" in wrong["details"]["reason"]
    refused = daemon.cli("restore", str(path), check=False)
    assert refused.returncode == 1 and "stop it first" in refused.stderr
    nokey = make_daemon("n")
    with nokey.http() as admin:
        response = admin.post("/v1/backup")
    assert response.status_code == 409 and response.json()["error"] == "backup_key_missing"
