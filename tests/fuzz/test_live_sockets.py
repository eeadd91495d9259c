"""A bounded raw-socket fuzz run against the live SMTP and IMAP listeners: random and mutated sessions.

Zero crashes means: no traceback in the daemon's output, every listener still
answering, and real mail still flowing afterwards.
"""

from __future__ import annotations

import imaplib
import os
import random
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor

import httpx

from support.mail import build_message, insecure_tls, send

SESSIONS = int(os.environ.get("OMS_SOCKET_FUZZ_SESSIONS", "150"))

SMTP_SESSION = [b"EHLO fuzz.test\r\n", b"MAIL FROM:<a@remote.test> SIZE=100 BODY=8BITMIME\r\n",
                b"RCPT TO:<victim@fz.test>\r\n", b"RCPT TO:<nobody@fz.test>\r\n", b"DATA\r\n",
                b"Subject: fuzz\r\n\r\nbody line\r\n..dot\r\n.\r\n", b"RSET\r\n", b"VRFY x\r\n", b"NOOP\r\n",
                b"AUTH PLAIN AGFAYgBj\r\n", b"STARTTLS\r\n", b"HELP\r\n", b"QUIT\r\n"]


IMAP_SESSION = [b"a1 CAPABILITY\r\n", b"a2 LOGIN victim@fz.test victim-password\r\n", b"a3 SELECT INBOX\r\n",
                b"a4 FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
                b"a5 UID SEARCH OR FROM x SUBJECT y\r\n", b"a6 STORE 1 +FLAGS (\\Seen)\r\n",
                b"a7 APPEND INBOX {11}\r\n", b"Subject: z\r\n", b"a8 LIST \"\" *\r\n", b"a9 IDLE\r\n", b"DONE\r\n",
                b"a10 COPY 1 Archive\r\n", b"a11 EXPUNGE\r\n", b"a12 NOOP\r\n", b"a13 LOGOUT\r\n"]


def _mutate(rng: random.Random, line: bytes) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        return line.replace(b"\r\n", b"\n")
    if choice == 1:
        cut = rng.randrange(len(line) + 1)
        return line[:cut] + bytes([rng.randrange(256)]) + line[cut:]
    if choice == 2:
        return line[: rng.randrange(len(line) + 1)]
    if choice == 3:
        return line.rstrip(b"\r\n") + b"A" * rng.choice([500, 1100, 70000]) + b"\r\n"
    if choice == 4:
        return line.swapcase()
    if choice == 5:
        return line.replace(b":", b"\x00:")
    if choice == 6:
        return rng.randbytes(rng.randrange(1, 200))
    return line


def _session(port: int, lines: list[bytes], tls: bool = False) -> None:
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return
    sock = insecure_tls().wrap_socket(raw) if tls else raw
    try:
        sock.settimeout(0.3)
        for line in lines:
            sock.sendall(line)
            try:
                sock.recv(65536)
            except (socket.timeout, ssl.SSLError):
                pass
    except (OSError, ssl.SSLError):
        pass
    finally:
        sock.close()


def _fuzz(seed: int, port: int, template: list[bytes], tls: bool = False) -> None:
    """SESSIONS sessions, eight at a time; session n draws from Random(seed + n), so a seed replays."""

    def one(n: int) -> None:
        rng = random.Random(seed + n)
        if rng.random() < 0.2:
            lines = [rng.randbytes(rng.randrange(1, 400)) for _ in range(rng.randrange(1, 6))]
        else:
            lines = [_mutate(rng, line) if rng.random() < 0.4 else line
                     for line in rng.sample(template, rng.randrange(1, len(template)))]
        _session(port, lines, tls)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(SESSIONS)))


class _IMAPFrom(imaplib.IMAP4):
    """imaplib connecting from a chosen local address."""

    def __init__(self, source: str, host: str, port: int) -> None:
        self.source = source
        super().__init__(host, port)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def test_smtp_and_imap_listeners_survive_fuzzing(make_daemon):
    daemon = make_daemon("fz", smtp_idle_timeout=5)
    daemon.create_mailbox("victim", password="victim-password")
    seed = int(os.environ.get("OMS_FUZZ_SEED", random.randrange(1 << 32)))
    print(f"socket fuzz seed {seed} (OMS_FUZZ_SEED replays it)")
    _fuzz(seed, daemon.smtp_port, SMTP_SESSION)
    _fuzz(seed + 1_000_000, daemon.settings["submission_starttls_port"], SMTP_SESSION)
    _fuzz(seed + 2_000_000, daemon.settings["submission_port"], SMTP_SESSION, tls=True)
    _fuzz(seed + 3_000_000, daemon.settings["imap_port"], IMAP_SESSION)
    _fuzz(seed + 4_000_000, daemon.settings["imaps_port"], IMAP_SESSION, tls=True)
    health = httpx.get(f"{daemon.api_url}/health")
    assert health.status_code == 200, (seed, health.text)
    send(daemon.smtp_port, "ok@remote.test", ["victim@fz.test"], build_message("ok@remote.test", "v", "after fuzz"))
    assert any(b"after fuzz" in m for m in daemon.messages_on_disk("victim@fz.test"))
    # The fuzz's bad logins may have blocked 127.0.0.1 (as they should); check from another address.
    with _IMAPFrom("127.0.0.2", "127.0.0.1", daemon.settings["imap_port"]) as imap:
        imap.login("victim@fz.test", "victim-password")
        assert imap.select("INBOX")[0] == "OK"
    assert "Traceback" not in daemon.output(tail=None), f"seed {seed}"
    assert daemon.proc.poll() is None
