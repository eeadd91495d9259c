"""A full disk: SMTP says 452 4.3.1, the API 507 with a JSON error, IMAP APPEND NO [OVERQUOTA],
nothing acknowledged is lost, and everything works again once space returns."""

from __future__ import annotations

import errno
import imaplib
import os
import smtplib
import subprocess

import httpx

from support.mail import build_message, send


def _fill(path) -> None:
    """Write zeros until the filesystem has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def test_disk_full_and_recovery(make_daemon, tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    daemon = None
    try:
        daemon = make_daemon("full", data_dir=str(disk / "data"))
        agent = daemon.create_mailbox("agent", password="full disk password")
        key = agent["api_key"]["key"]
        imap = imaplib.IMAP4("127.0.0.1", daemon.settings["imap_port"])
        imap.login("agent@full.test", "full disk password")
        send(daemon.smtp_port, "x@remote.test", ["agent@full.test"], build_message("x@remote.test", "a", "before"))
        filler = disk / "filler"
        _fill(filler)
        try:
            send(daemon.smtp_port, "x@remote.test", ["agent@full.test"],
                 build_message("x@remote.test", "a", "while full", body="y" * 20000 + "\n"))
            raise AssertionError("a message was acknowledged on a full disk")
        except smtplib.SMTPDataError as exc:
            assert exc.smtp_code == 452 and exc.smtp_error.startswith(b"4.3.1"), exc
        api = httpx.post(f"{daemon.api_url}/v1/mail/send", headers={"X-OpenMailserver-Key": key}, json={
            "sender": "agent@full.test", "recipients": ["agent@full.test"], "subject": "api while full",
            "text_body": "z" * 20000})
        assert api.status_code in (503, 507), api.text
        assert api.json()["error"] in ("storage_full", "delivery_failed")
        # RFC 5530 OVERQUOTA, as Dovecot answers when the disk is full (not SERVERBUG).
        typ, data = imap.append("INBOX", None, None, build_message("x@remote.test", "a", "append while full",
                                                                   body="w" * 20000 + "\n"))
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), (typ, data)
        health = httpx.get(f"{daemon.api_url}/health")
        assert health.status_code == 503 and health.json()["disk"]["status"] == "fail"
        os.unlink(filler)
        send(daemon.smtp_port, "x@remote.test", ["agent@full.test"], build_message("x@remote.test", "a", "after"))
        again = httpx.post(f"{daemon.api_url}/v1/mail/send", headers={"X-OpenMailserver-Key": key}, json={
            "sender": "agent@full.test", "recipients": ["agent@full.test"], "subject": "api after",
            "text_body": "fine"})
        assert again.status_code == 200, again.text
        assert httpx.get(f"{daemon.api_url}/health").status_code == 200
        with daemon.http(key) as client:
            subjects = sorted(m["subject"] for m in client.get("/v1/mailboxes/agent@full.test/messages").json())
        assert subjects == ["after", "api after", "before"]
        assert imap.append("INBOX", None, None, build_message("x@remote.test", "a", "append after"))[0] == "OK"
        imap.logout()
        assert "Traceback" not in daemon.output(tail=None)
    finally:
        if daemon is not None:
            daemon.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)
