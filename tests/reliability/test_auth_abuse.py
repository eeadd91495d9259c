"""1,000 wrong passwords over SMTP and over IMAP from one address: throttled, refused quickly,
while the right password still works from another address."""

from __future__ import annotations

import base64
import imaplib
import os
import smtplib
import socket
import time

from support.mail import insecure_tls

ATTEMPTS = int(os.environ.get("OMS_AUTH_ABUSE_ATTEMPTS", "1000"))
PASSWORD = "the-right-password"


def _smtp_attempt(port: int, password: str, source: str = "127.0.0.1") -> int:
    """AUTH PLAIN after STARTTLS on the submission port; the reply code (421 when refused at once)."""
    try:
        client = smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0))
    except smtplib.SMTPConnectError as exc:
        return exc.smtp_code
    with client:
        client.ehlo("abuse.test")
        client.starttls(context=insecure_tls())
        client.ehlo("abuse.test")
        blob = base64.b64encode(f"\0victim@abuse.test\0{password}".encode()).decode()
        code, _ = client.docmd("AUTH", f"PLAIN {blob}")
        return code


def _imap_attempt(client: imaplib.IMAP4, password: str) -> bool:
    try:
        client.login("victim@abuse.test", password)
        return True
    except imaplib.IMAP4.error:
        return False


def test_password_guessing_is_throttled_per_address(make_daemon):
    daemon = make_daemon("abuse")
    daemon.create_mailbox("victim", password=PASSWORD)
    port = daemon.settings["submission_starttls_port"]
    started = time.monotonic()
    codes = [_smtp_attempt(port, f"guess-{n}") for n in range(ATTEMPTS)]
    smtp_seconds = time.monotonic() - started
    assert codes[:10] == [535] * 10 and set(codes[10:]) == {421}, codes[:20]
    assert _smtp_attempt(port, PASSWORD) == 421  # even the right password, from the blocked address

    imap = imaplib.IMAP4("127.0.0.1", daemon.settings["imap_port"])
    started = time.monotonic()
    imap_results = []
    for n in range(ATTEMPTS):
        try:
            imap_results.append(_imap_attempt(imap, f"guess-{n}"))
        except (imaplib.IMAP4.abort, OSError):  # the server may close a session it refuses
            imap = imaplib.IMAP4("127.0.0.1", daemon.settings["imap_port"])
            imap_results.append(False)
    imap_seconds = time.monotonic() - started
    assert not any(imap_results)
    print(f"\nauth abuse: {ATTEMPTS} SMTP attempts in {smtp_seconds:.1f}s, {ATTEMPTS} IMAP attempts in "
          f"{imap_seconds:.1f}s from 127.0.0.1, all refused")
    # Refused quickly: no password hashing per attempt once the address is blocked.
    assert imap_seconds / ATTEMPTS < 0.02 and smtp_seconds / ATTEMPTS < 0.05

    # Another address is not punished for it.
    assert _smtp_attempt(port, PASSWORD, source="127.0.0.2") == 235
    raw = socket.create_connection(("127.0.0.1", daemon.settings["imaps_port"]), source_address=("127.0.0.2", 0))
    tls = insecure_tls().wrap_socket(raw)
    reader = tls.makefile("rb")
    assert reader.readline().startswith(b"* OK")
    tls.sendall(f'a1 LOGIN victim@abuse.test "{PASSWORD}"\r\n'.encode())
    while not (line := reader.readline()).startswith(b"a1 "):
        pass
    assert line.startswith(b"a1 OK"), line
    tls.close()
    imap.logout()


def test_operator_limits_are_settings(make_daemon):
    """The IMAP connection and per-user session limits and the failed-login threshold come
    from the settings (defaults 5000, 1000 and 10)."""
    daemon = make_daemon("limits", imap_max_connections=4, imap_max_sessions_per_user=2, auth_failure_limit=3)
    daemon.create_mailbox("victim", password=PASSWORD)
    port = daemon.settings["imap_port"]
    sessions = []
    for _ in range(2):
        sessions.append(imaplib.IMAP4("127.0.0.1", port))
        sessions[-1].login("victim@limits.test", PASSWORD)
    third = socket.create_connection(("127.0.0.1", port))
    reader = third.makefile("rb")
    assert reader.readline().startswith(b"* OK")
    third.sendall(f'a1 LOGIN victim@limits.test "{PASSWORD}"\r\n'.encode())
    while not (line := reader.readline()).startswith(b"a1 "):
        pass
    assert line.startswith(b"a1 NO [LIMIT]"), line
    fourth = socket.create_connection(("127.0.0.1", port))  # the fourth connection is still admitted
    assert fourth.makefile("rb").readline().startswith(b"* OK")
    fifth = socket.create_connection(("127.0.0.1", port))
    assert fifth.makefile("rb").readline().startswith(b"* BYE Too many connections")
    for sock in (third, fourth, fifth):
        sock.close()
    for session in sessions:
        session.logout()

    submission = daemon.settings["submission_starttls_port"]
    assert [_smtp_attempt(submission, f"guess-{n}") for n in range(4)] == [535, 535, 535, 421]
