"""mbsync (Debian isync) keeps a local Maildir and the server in step.

A 200-message mailbox with nested folders is synced down over IMAPS, then
flags are changed, messages deleted and added on both sides, and after the
next sync both sides hold the same messages with the same flags.
"""

from __future__ import annotations

import email
import imaplib
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Daemon
from support.mail import build_message, insecure_tls

PASSWORD = "mbsync password 1"
LAYOUT = {"INBOX": 150, "Work": 30, "Work/Reports": 20}
LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}


@pytest.fixture
def synced(tmp_path):
    daemon = Daemon(tmp_path, "sync").start()
    try:
        daemon.create_mailbox("mia", password=PASSWORD)
        yield daemon, tmp_path
    finally:
        daemon.stop()


def connect(daemon: Daemon) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", int(daemon.settings["imaps_port"]), ssl_context=insecure_tls(),
                               timeout=30)
    client.login("mia@sync.test", PASSWORD)
    return client


def write_config(daemon: Daemon, base: Path) -> Path:
    local = base / "local"
    local.mkdir()
    config = base / "mbsyncrc"
    config.write_text(f"""
IMAPAccount server
Host 127.0.0.1
Port {daemon.settings['imaps_port']}
User mia@sync.test
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {daemon.data_dir / 'tls' / 'cert.pem'}

IMAPStore server-store
Account server

MaildirStore local-store
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel mail
Far :server-store:
Near :local-store:
Patterns *
Create Both
Remove None
Expunge Both
SyncState *
CopyArrivalDate yes
""")
    return config


def mbsync(config: Path) -> str:
    result = subprocess.run(["mbsync", "-c", str(config), "-a"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def local_state(base: Path) -> dict[str, dict[str, frozenset[str]]]:
    """folder -> Message-ID -> flags, read from the local Maildir (file names carry the flags)."""
    out: dict[str, dict[str, frozenset[str]]] = {}
    root = base / "local"
    for folder in ("INBOX", "Work", "Work/Reports", "Archive", "Sent", "Drafts", "Trash", "Junk"):
        path = root / folder
        if not (path / "cur").is_dir():
            continue
        messages = {}
        for sub in ("new", "cur"):
            for file in (path / sub).iterdir():
                info = file.name.split(":2,", 1)[1] if ":2," in file.name else ""
                msgid = email.message_from_bytes(file.read_bytes())["Message-ID"]
                messages[msgid] = frozenset(LETTERS[c] for c in info if c in LETTERS)
        out[folder] = messages
    return out


def server_state(daemon: Daemon) -> dict[str, dict[str, frozenset[str]]]:
    client = connect(daemon)
    out: dict[str, dict[str, frozenset[str]]] = {}
    for folder in ("INBOX", "Work", "Work/Reports", "Archive", "Sent", "Drafts", "Trash", "Junk"):
        typ, data = client.select(folder, readonly=True)
        assert typ == "OK"
        messages = {}
        if data[0] != b"0":
            typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            for item in data:
                if not isinstance(item, tuple):
                    continue
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])  # FLAGS come before the literal
                msgid = email.message_from_bytes(item[1])["Message-ID"]
                names = flags.group(1).decode().split() if flags else []
                messages[msgid] = frozenset(f for f in names if f != "\\Recent")
        out[folder] = messages
    client.logout()
    return out


def test_mbsync_round_trip_with_folders_and_flags(synced):
    daemon, base = synced
    client = connect(daemon)
    client.create("Work/Reports")
    n = 0
    for folder, count in LAYOUT.items():
        for _ in range(count):
            n += 1
            flags = "(\\Seen)" if n % 3 == 0 else ("(\\Flagged)" if n % 7 == 0 else None)
            body = f"message {n}\n" + "lorem ipsum dolor sit amet\n" * (n % 40)
            assert client.append(folder, flags, None, build_message("x@example.org", "mia@sync.test",
                                                                      f"message {n}", body))[0] == "OK"
    client.logout()
    config = write_config(daemon, base)

    mbsync(config)
    first = local_state(base)
    assert {f: len(m) for f, m in first.items() if f in LAYOUT} == LAYOUT
    assert first == server_state(daemon)
    # The bytes are the server's bytes (mbsync stores LF line ends locally).
    local_file = next((base / "local" / "Work" / "cur").iterdir())
    msgid = email.message_from_bytes(local_file.read_bytes())["Message-ID"]
    client = connect(daemon)
    client.select("Work", readonly=True)
    typ, found = client.search(None, "HEADER", "Message-ID", msgid)
    local_bytes = re.sub(rb"(?m)^X-TUID: .*\n", b"", local_file.read_bytes())  # mbsync's own header
    assert client.fetch(found[0].split()[0], "(BODY.PEEK[])")[1][0][1] == local_bytes.replace(b"\n", b"\r\n")

    # Local changes: flag some, mark one deleted, add a new message.
    inbox = base / "local" / "INBOX" / "cur"
    files = sorted(inbox.iterdir())
    for file in files[:5]:
        name, _, info = file.name.partition(":2,")
        file.rename(inbox / f"{name}:2,{''.join(sorted(set(info) | {'F', 'R'}))}")
    doomed_local = files[5]
    doomed_local_id = email.message_from_bytes(doomed_local.read_bytes())["Message-ID"]
    name, _, info = doomed_local.name.partition(":2,")
    doomed_local.rename(inbox / f"{name}:2,{''.join(sorted(set(info) | {'T'}))}")
    new_local = build_message("y@example.org", "mia@sync.test", "written offline", "local\n")
    (base / "local" / "Work" / "new" / f"{int(time.time())}.local1.host").write_bytes(new_local)
    # Server changes: flags on other messages, an expunge, an appended message.
    client.select("INBOX")
    client.store("140:145", "+FLAGS", "(\\Answered)")
    client.store("146", "-FLAGS", "(\\Seen)")
    client.store("147", "+FLAGS", "(\\Seen)")
    doomed_server_id = email.message_from_bytes(
        client.fetch("150", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")[1][0][1])["Message-ID"]
    client.store("150", "+FLAGS", "(\\Deleted)")
    client.expunge()
    client.append("Work/Reports", "(\\Seen)", None,
                  build_message("z@example.org", "mia@sync.test", "from the server", "remote\n"))
    client.logout()

    mbsync(config)
    local, remote = local_state(base), server_state(daemon)
    assert local == remote
    assert doomed_local_id not in remote["INBOX"] and doomed_server_id not in local["INBOX"]
    assert len(local["INBOX"]) == 148 and len(local["Work"]) == 31 and len(local["Work/Reports"]) == 21
    assert sum(1 for f in remote["INBOX"].values() if {"\\Flagged", "\\Answered"} <= f) >= 5
    # A further run changes nothing.
    mbsync(config)
    assert local_state(base) == local and server_state(daemon) == remote
