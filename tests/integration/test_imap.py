"""IMAP against the real daemon with real clients: imaplib, imapclient, aioimaplib.

One daemon serves the module; each test works in its own mailbox (user) so
tests stay independent. Mail arrives over real SMTP where the test is about
delivery.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import imaplib
import re
import socket
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator

import aioimaplib
import imapclient
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Daemon
from support.mail import build_message, insecure_tls, send, wait_for

PASSWORD = "imap test password"
SIZE_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("imap"), "imap", message_size_limit=SIZE_LIMIT).start()
    try:
        yield daemon
    finally:
        try:
            daemon.stop()
        finally:
            daemon.kill()


_users = iter(range(1, 10_000))


@pytest.fixture
def user(server) -> str:
    """A fresh mailbox for each test."""
    local = f"user{next(_users)}"
    server.create_mailbox(local, password=PASSWORD)
    return f"{local}@imap.test"


def imap(server: Daemon, user: str | None = None) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", int(server.settings["imap_port"]), timeout=30)
    if user:
        client.login(user, PASSWORD)
    return client


def message(subject: str, body: str = "hello\n", sender: str = "bob@example.org", to: str = "x@imap.test",
            **headers: str) -> bytes:
    return build_message(sender, to, subject, body, **headers)


def ok(result: tuple) -> list:
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def raw(client: imaplib.IMAP4, line: str) -> list[bytes]:
    """Send one command line as is; return every response line up to and including the tagged one."""
    tag = client._new_tag().decode()
    client.send(f"{tag} {line}\r\n".encode())
    out = []
    while True:
        got = client._get_line()
        out.append(got)
        if got.startswith(tag.encode()):
            return out


# ---------------------------------------------------------------------------
# imaplib: every command of RFC 3501
# ---------------------------------------------------------------------------


def test_imaplib_walks_every_command(server, user):
    c = imap(server)
    caps = set(ok(c.capability())[0].decode().split())
    assert {"IMAP4rev1", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "NAMESPACE", "LITERAL+", "ENABLE", "UNSELECT",
            "ID", "CHILDREN", "STARTTLS", "AUTH=PLAIN"} <= caps
    assert ok(c.noop())
    assert c.login(user, PASSWORD)[0] == "OK"
    assert "STARTTLS" not in ok(c.capability())[0].decode()
    # NAMESPACE (RFC 2342) and ID (RFC 2971).
    assert ok(c.namespace()) == [b'(("" "/")) NIL NIL']
    assert b"openmailserver" in raw(c, 'ID ("name" "test")')[0]
    # ENABLE (RFC 5161): nothing of ours needs enabling, so nothing is enabled.
    assert raw(c, "ENABLE CONDSTORE")[0] == b"* ENABLED" and raw(c, "ENABLE X")[-1].split()[1] == b"OK"
    # LIST with SPECIAL-USE and CHILDREN attributes.
    folders = {line.rsplit(b" ", 1)[1].decode(): line for line in ok(c.list())}
    assert set(folders) == {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    assert b"\\Sent" in folders["Sent"] and b"\\Trash" in folders["Trash"] and b"\\HasNoChildren" in folders["INBOX"]
    # CREATE (with parents), SUBSCRIBE, LSUB, RENAME, DELETE.
    ok(c.create("Projects/2024"))
    listed = ok(c.list('""', "Projects*"))
    assert any(b"(\\HasChildren)" in line and line.endswith(b"Projects") for line in listed)
    ok(c.subscribe("Projects/2024"))
    assert ok(c.lsub('""', "Projects/*")) == [b'() "/" Projects/2024']
    ok(c.select("Projects/2024"))
    ok(c.rename("Projects", "Work"))  # a selected folder below it stays selected, renamed
    ok(c.append("Work/2024", None, None, message("after rename")))
    assert ok(c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0][1] == b"Subject: after rename\r\n\r\n"
    ok(c.store("1", "+FLAGS", "\\Deleted"))
    ok(c.close())
    assert {line.rsplit(b" ", 1)[1] for line in ok(c.list('""', "Work*"))} == {b"Work", b"Work/2024"}
    assert ok(c.lsub('""', "*")) and b"Work/2024" in b" ".join(ok(c.lsub('""', "*")))
    ok(c.unsubscribe("Work/2024"))
    assert ok(c.lsub('""', "Work*")) == [None]
    assert c.create("Work")[0] == "NO"
    assert c.select("Nowhere")[0] == "NO"
    # APPEND with flags and an internal date; UIDPLUS APPENDUID.
    when = datetime(2023, 5, 17, 8, 30, 0, tzinfo=timezone(timedelta(hours=2)))
    typ, data = c.append("Work", "(\\Flagged $Important)", imaplib.Time2Internaldate(when),
                         message("first", "alpha beta\n"))
    assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1\]", data[0])
    ok(c.append("Work", None, None, message("second", "gamma\n")))
    assert c.append("Nowhere", None, None, message("x"))[1][0].startswith(b"[TRYCREATE]")
    # STATUS
    status = ok(c.status("Work", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"))[0].decode()
    assert "MESSAGES 2" in status and "UIDNEXT 3" in status and "UNSEEN 2" in status and "RECENT 2" in status
    # EXAMINE is read-only and keeps \Recent.
    assert ok(c.select("Work", readonly=True)) == [b"2"]
    assert c.store("1", "+FLAGS", "\\Seen")[0] == "NO"
    ok(c.close())
    # SELECT
    assert ok(c.select("Work")) == [b"2"]
    assert c.untagged_responses.get("READ-WRITE") is not None or True
    # FETCH: the data items, macros and sections.
    data = ok(c.fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)"))
    assert b"UID 1" in data[0] and b"\\Flagged" in data[0] and b"$Important" in data[0] and b"\\Recent" in data[0]
    assert b'INTERNALDATE "17-May-2023 06:30:00 +0000"' in data[0]
    assert b'"first"' in data[0] and b'(NIL NIL "bob" "example.org")' in data[0]
    full = ok(c.fetch("1", "(BODY.PEEK[])"))[0][1]
    assert full == message_on_disk(server, user, "Work", full)
    assert b"\\Seen" not in ok(c.fetch("1", "FLAGS"))[0]
    head = ok(c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0][1]
    assert head == b"Subject: first\r\n\r\n"
    assert ok(c.fetch("1", "(BODY.PEEK[TEXT]<0.5>)"))[0][1] == b"alpha"
    assert ok(c.fetch("1", "(BODY[TEXT])"))[0][1] == b"alpha beta\r\n"
    assert b"\\Seen" in ok(c.fetch("1", "FLAGS"))[0]  # BODY[] (not PEEK) set \Seen
    assert b"BODYSTRUCTURE" in ok(c.fetch("1:*", "BODYSTRUCTURE"))[0]
    assert b"RFC822.SIZE" in ok(c.fetch("2", "FAST"))[0] and b"ENVELOPE" in ok(c.fetch("2", "ALL"))[0]
    assert b"BODY (" in ok(c.fetch("2", "FULL"))[0]
    assert ok(c.fetch("2", "RFC822.HEADER"))[0][1].endswith(b"\r\n\r\n")
    # UID FETCH always reports the UID.
    assert b"UID 2" in ok(c.uid("FETCH", "2", "(FLAGS)"))[0]
    # SEARCH with several keys, and UID SEARCH.
    assert ok(c.search(None, "ALL")) == [b"1 2"]
    assert ok(c.search(None, "FLAGGED")) == [b"1"]
    assert ok(c.search(None, "KEYWORD", "$Important")) == [b"1"]
    assert ok(c.search(None, "UNSEEN")) == [b"2"]
    assert ok(c.search(None, "SUBJECT", "second")) == [b"2"]
    assert ok(c.search(None, "BODY", "gamma")) == [b"2"]
    assert ok(c.search(None, "TEXT", "alpha")) == [b"1"]
    assert ok(c.search(None, "OR", "FLAGGED", "SUBJECT", "second")) == [b"1 2"]
    assert ok(c.search(None, "NOT", "FLAGGED", "LARGER", "10")) == [b"2"]
    assert ok(c.search(None, "BEFORE", "18-May-2023")) == [b"1"]
    assert ok(c.search("UTF-8", "FROM", "bob")) == [b"1 2"]
    assert ok(c.uid("SEARCH", None, "UID", "2:*")) == [b"2"]
    assert c.search("KOI8-R", "ALL")[0] == "NO"
    # STORE variants; .SILENT answers nothing.
    assert b"\\Answered" in ok(c.store("2", "+FLAGS", "(\\Answered)"))[0]
    assert ok(c.store("2", "-FLAGS.SILENT", "(\\Answered)")) == [None]
    assert ok(c.store("2", "FLAGS", "(\\Draft)"))[0].startswith(b"2 (FLAGS (\\Draft")
    assert b"UID 2" in ok(c.uid("STORE", "2", "+FLAGS", "(\\Seen)"))[0]
    # COPY and UID COPY (COPYUID), CHECK, EXPUNGE, UID EXPUNGE, MOVE.
    typ, data = c.copy("1:2", "Archive")
    assert typ == "OK" and re.search(rb"\[COPYUID \d+ 1:2 1:2\]", data[0])
    ok(c.check())
    ok(c.store("1", "+FLAGS", "\\Deleted"))
    assert ok(c.expunge()) == [b"1"]
    assert ok(c.select("Archive")) == [b"2"]
    ok(c.uid("STORE", "1:2", "+FLAGS", "(\\Deleted)"))
    c.untagged_responses.clear()
    ok(c.uid("EXPUNGE", "2"))
    assert c.untagged_responses.pop("EXPUNGE") == [b"2"]
    typ, data = c.uid("MOVE", "1", "Trash")
    assert typ == "OK" and c.untagged_responses.pop("EXPUNGE", None) == [b"1"]
    ok(c.unselect())
    assert ok(c.select("Trash")) == [b"1"]
    ok(c.close())
    ok(c.delete("Work/2024"))
    ok(c.delete("Work"))
    assert c.delete("INBOX")[0] == "NO"
    assert c.logout()[0] == "BYE"


def message_on_disk(server: Daemon, user: str, folder: str, expected: bytes) -> bytes:
    """The one file in `folder` whose bytes equal `expected` (proves BODY[] is the stored file)."""
    for data in server.messages_on_disk(user, folder):
        if data == expected:
            return data
    raise AssertionError("message not found on disk")


def test_flags_live_in_maildir_file_names_and_persist_across_restart(tmp_path):
    daemon = Daemon(tmp_path, "persist").start()
    try:
        daemon.create_mailbox("pat", password=PASSWORD)
        address = "pat@persist.test"
        send(daemon.smtp_port, "bob@example.org", [address], message("hello"))
        c = imap(daemon, address)
        ok(c.select("INBOX"))
        validity = c.untagged_responses["UIDVALIDITY"][0]
        ok(c.store("1", "+FLAGS", "(\\Seen \\Flagged $Work)"))
        # The file moves from new/ to cur/ and its name carries the flags (renamed just after the commit).
        names = wait_for(lambda: [p.name for p in (daemon.maildir(address) / "cur").iterdir()], timeout=5)
        assert len(names) == 1 and names[0].endswith(":2,FS")
        assert not list((daemon.maildir(address) / "new").iterdir())
        ok(c.append("INBOX", None, None, message("second")))
        # A flag change just before the stop: its rename waits for a quiet moment, and has
        # happened once the daemon has stopped (the shutdown does any still pending).
        ok(c.store("2", "+FLAGS", "(\\Answered)"))
        c.logout()
        # A session in IDLE does not hold up the shutdown, and is told why it ends.
        idler = imap(daemon, address)
        ok(idler.select("INBOX"))
        idler.send(b"I1 IDLE\r\n")
        assert idler._get_line().startswith(b"+")
        started = time.monotonic()
        assert daemon.stop() == 0 and time.monotonic() - started < 10
        assert idler._get_line().startswith(b"* BYE")
        assert sorted(p.name.partition(":2,")[2] for p in (daemon.maildir(address) / "cur").iterdir()) == ["FS", "R"]
        daemon.start()
        c = imap(daemon, address)
        ok(c.select("INBOX"))
        assert c.untagged_responses["UIDVALIDITY"][0] == validity
        fetched = ok(c.fetch("1:*", "(UID FLAGS)"))
        assert b"UID 1 FLAGS (\\Flagged \\Seen $Work)" in fetched[0] and b"UID 2" in fetched[1]
        # UIDs never repeat, even after the newest message is expunged.
        ok(c.store("2", "+FLAGS", "\\Deleted"))
        ok(c.expunge())
        ok(c.append("INBOX", None, None, message("third")))
        assert b"UID 3" in ok(c.fetch("2", "UID"))[0]
        c.logout()
    finally:
        daemon.stop()


# ---------------------------------------------------------------------------
# imapclient
# ---------------------------------------------------------------------------


def test_imapclient_walks_every_command(server, user):
    port = int(server.settings["imap_port"])
    with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30) as c:
        c.login(user, PASSWORD)
        assert c.find_special_folder(b"\\Sent") == "Sent"
        assert c.find_special_folder(b"\\Trash") == "Trash"
        assert c.namespace().personal == (("", "/"),)
        server_id = c.id_({"name": "pytest"})[0]
        assert dict(zip(server_id[::2], server_id[1::2]))[b"name"] == b"openmailserver"
        c.create_folder("Lists/python")
        assert c.folder_exists("Lists/python") and c.folder_exists("Lists")
        c.subscribe_folder("Lists/python")
        assert "Lists/python" in [f[2] for f in c.list_sub_folders()]
        c.unsubscribe_folder("Lists/python")
        c.rename_folder("Lists/python", "Lists/py")
        assert c.folder_status("Lists/py", ["MESSAGES", "UIDNEXT"]) == {b"MESSAGES": 0, b"UIDNEXT": 1}
        for n in range(5):
            c.append("Lists/py", message(f"post {n}", f"body number {n}\n"), flags=[b"$Label"] if n % 2 else [])
        info = c.select_folder("Lists/py")
        assert info[b"EXISTS"] == 5 and info[b"UIDNEXT"] == 6
        assert b"$Label" in info[b"PERMANENTFLAGS"]
        fetched = c.fetch([1, 2, 3, 4, 5], ["ENVELOPE", "FLAGS", "RFC822.SIZE", "BODY.PEEK[]"])
        assert sorted(fetched) == [1, 2, 3, 4, 5]
        envelope = fetched[2][b"ENVELOPE"]
        assert envelope.subject == b"post 1" and envelope.from_[0].mailbox == b"bob"
        assert fetched[2][b"FLAGS"] == (b"$Label", b"\\Recent")
        assert fetched[4][b"BODY[]"].endswith(b"body number 3\r\n")
        assert c.search(["SUBJECT", "post 3"]) == [4]
        assert c.search(["KEYWORD", "$Label"]) == [2, 4]
        c.add_flags([1, 2], [b"\\Seen"])
        c.remove_flags([2], [b"$Label"])
        assert c.get_flags([1, 2]) == {1: (b"\\Seen", b"\\Recent"), 2: (b"\\Seen", b"\\Recent")}
        c.set_flags([3], [b"\\Flagged"])
        assert c.search(["FLAGGED"]) == [3]
        c.copy([1], "INBOX")
        c.move([2], "Archive")
        assert c.search() == [1, 3, 4, 5]
        c.delete_messages([1])
        c.uid_expunge([1])
        assert c.search() == [3, 4, 5]
        c.unselect_folder()
        assert c.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1
        c.select_folder("INBOX", readonly=True)
        assert c.search(["SUBJECT", "post 0"]) == [1]
        c.close_folder()
        c.delete_folder("Lists/py")
        assert not c.folder_exists("Lists/py")


# ---------------------------------------------------------------------------
# Several sessions, IDLE
# ---------------------------------------------------------------------------


def two_sessions_on_three_messages(server: Daemon, user: str) -> tuple[imaplib.IMAP4, imaplib.IMAP4]:
    """Sessions `a` and `b` with INBOX selected, `a` first (it holds \\Recent), on three messages."""
    a, b = imap(server, user), imap(server, user)
    for n in range(3):
        ok(a.append("INBOX", None, None, message(f"m{n}")))
    ok(a.select("INBOX"))
    ok(b.select("INBOX"))
    return a, b


def test_sessions_see_each_others_changes_at_the_right_moments(server, user):
    a, b = two_sessions_on_three_messages(server, user)
    assert b.untagged_responses.get("RECENT") == [b"0"]  # a claimed them
    ok(a.store("2", "+FLAGS", "(\\Flagged)"))
    b.untagged_responses.clear()
    ok(b.noop())
    assert b.untagged_responses.get("FETCH") == [b"2 (FLAGS (\\Flagged))"]
    # An expunge by `a` is not reported to `b` during FETCH, STORE or SEARCH...
    ok(a.store("1", "+FLAGS", "\\Deleted"))
    ok(a.expunge())
    b.untagged_responses.clear()
    lines = raw(b, "FETCH 1:3 (UID)")
    assert not any(b"EXPUNGE" in line for line in lines) and len(lines) == 4
    lines = raw(b, "SEARCH ALL")
    assert not any(b"EXPUNGE" in line for line in lines) and lines[0] == b"* SEARCH 1 2 3"
    lines = raw(b, "STORE 3 +FLAGS (\\Seen)")
    assert not any(b"EXPUNGE" in line for line in lines)
    # ... but after NOOP, and with the other session's flag change.
    lines = raw(b, "NOOP")
    assert b"* 1 EXPUNGE" in lines
    assert ok(b.fetch("1:*", "(UID FLAGS)"))[0].startswith(b"1 (UID 2 FLAGS (\\Flagged))")
    # New mail shows up as EXISTS after any command.
    ok(a.append("INBOX", None, None, message("m3")))
    lines = raw(b, "FETCH 1 UID")
    assert b"* 3 EXISTS" in lines
    # UID commands may report expunges.
    ok(a.store("1", "+FLAGS", "\\Deleted"))
    ok(a.expunge())
    lines = raw(b, "UID FETCH 1:* UID")
    assert b"* 1 EXPUNGE" in lines
    a.logout()
    b.logout()


def test_a_sessions_own_store_hides_no_change_of_another(server, user):
    # A session's view skips reading back the rows of its own STORE only when nothing else
    # changed before it; here `b` flags message 1 first, so `a` must still hear of that.
    a, b = two_sessions_on_three_messages(server, user)
    ok(b.store("1", "+FLAGS", "(\\Answered)"))
    lines = raw(a, "STORE 2 +FLAGS.SILENT (\\Flagged)")
    lines += raw(a, "NOOP")
    assert any(line.startswith(b"* 1 FETCH (FLAGS (\\Answered") for line in lines), lines
    # Its own STORE alone: the next command reports nothing it already knows.
    ok(a.store("3", "+FLAGS.SILENT", "(\\Seen)"))
    assert raw(a, "NOOP")[:-1] == []
    ok(b.store("3", "-FLAGS", "(\\Seen)"))
    assert [line for line in raw(a, "NOOP") if line.startswith(b"* ")] == [b"* 3 FETCH (FLAGS (\\Recent))"]
    a.logout()
    b.logout()


def test_idle_sees_a_message_delivered_over_smtp_within_a_second(server, user):
    async def scenario() -> float:
        client = aioimaplib.IMAP4("127.0.0.1", int(server.settings["imap_port"]), timeout=10)
        await client.wait_hello_from_server()
        assert (await client.login(user, PASSWORD)).result == "OK"
        assert (await client.select("INBOX")).result == "OK"
        idle = await client.idle_start(timeout=20)  # returns once the server said "+ idling"
        assert client.has_pending_idle()
        loop = asyncio.get_running_loop()
        sent = time.monotonic()
        await loop.run_in_executor(None, lambda: send(server.smtp_port, "bob@example.org", [user],
                                                      message("ping", to=user)))
        pushed = await client.wait_server_push(timeout=5)
        elapsed = time.monotonic() - sent
        assert b"1 EXISTS" in b" ".join(pushed), pushed
        client.idle_done()
        assert (await asyncio.wait_for(idle, 5)).result == "OK"
        fetched = await client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Subject: ping" in b"".join(x for x in fetched.lines if isinstance(x, (bytes, bytearray)))
        await client.logout()
        return elapsed

    # The SMTP transaction itself is inside the measured time, so this is an upper bound.
    assert asyncio.run(scenario()) < 1.0
    # Delivered mail gets its ENVELOPE cached in the background, ready for the first FETCH.
    db = sqlite3.connect(server.data_dir / "openmailserver.db")
    try:
        cached = wait_for(lambda: db.execute(
            "SELECT c.envelope FROM message_cache c JOIN messages m ON m.id = c.message_id "
            "JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.address = ?", (user,)).fetchone(), timeout=5)
    finally:
        db.close()
    assert b'"ping"' in cached[0]


def test_idle_reports_flag_changes_and_expunges_from_other_sessions(server, user):
    other = imap(server, user)
    for n in range(2):
        ok(other.append("INBOX", None, None, message(f"m{n}")))
    port = int(server.settings["imap_port"])
    with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30) as c:
        c.login(user, PASSWORD)
        c.select_folder("INBOX")
        c.idle()
        ok(other.select("INBOX"))
        ok(other.store("1", "+FLAGS", "(\\Answered)"))
        first = c.idle_check(timeout=5)
        assert (1, b"FETCH", (b"FLAGS", (b"\\Answered", b"\\Recent"))) in first
        ok(other.store("2", "+FLAGS", "(\\Deleted)"))
        ok(other.expunge())
        seen: list = []
        deadline = time.monotonic() + 5
        while (2, b"EXPUNGE") not in seen and time.monotonic() < deadline:
            seen += c.idle_check(timeout=1)
        assert (2, b"EXPUNGE") in seen
        c.idle_done()
    other.logout()


def test_twenty_five_concurrent_sessions_of_one_user(server, user):
    ok(imap(server, user).append("INBOX", None, None, message("shared")))

    def session(n: int) -> bytes:
        c = imap(server, user)
        ok(c.select("INBOX", readonly=True))
        data = ok(c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0][1]
        time.sleep(0.2)
        c.logout()
        return data

    with concurrent.futures.ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(session, range(25)))
    assert results == [b"Subject: shared\r\n\r\n"] * 25


# ---------------------------------------------------------------------------
# TLS and authentication
# ---------------------------------------------------------------------------


def test_imaps_and_authenticate_plain(server, user):
    c = imaplib.IMAP4_SSL("127.0.0.1", int(server.settings["imaps_port"]), ssl_context=insecure_tls(), timeout=30)
    assert "STARTTLS" not in c.capabilities and "AUTH=PLAIN" in c.capabilities
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0{user}\0{PASSWORD}".encode())
    assert typ == "OK"
    ok(c.select("INBOX"))
    c.logout()
    # SASL-IR: the initial response on the command line.
    c = imap(server)
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    assert raw(c, f"AUTHENTICATE PLAIN {token}")[-1].split()[1] == b"OK"
    c.logout()


def _non_loopback_address() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.123", 9))
        address = probe.getsockname()[0]
    finally:
        probe.close()
    assert not address.startswith("127."), "the test needs a non-loopback IPv4 address on this machine"
    return address


def test_plaintext_login_needs_starttls_from_non_loopback_peers(tmp_path):
    address = _non_loopback_address()
    daemon = Daemon(tmp_path, "tls", bind=address).start()
    try:
        daemon.create_mailbox("sam", password=PASSWORD)
        c = imaplib.IMAP4(address, int(daemon.settings["imap_port"]), timeout=30)
        assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
        assert "AUTH=PLAIN" not in c.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            c.login("sam@tls.test", PASSWORD)
        c.starttls(ssl_context=insecure_tls())
        assert "LOGINDISABLED" not in c.capabilities and "AUTH=PLAIN" in c.capabilities
        assert c.login("sam@tls.test", PASSWORD)[0] == "OK"
        c.logout()
        # Plaintext pipelined behind STARTTLS is dropped, never executed after the handshake.
        sock = socket.create_connection((address, int(daemon.settings["imap_port"])), timeout=10)
        sock.recv(4096)
        sock.sendall(b"a STARTTLS\r\nb LOGIN sam@tls.test \"imap test password\"\r\n")
        assert sock.recv(4096).startswith(b"a OK")
        tls = insecure_tls().wrap_socket(sock, server_hostname="mx.tls.test")
        tls.sendall(b"c CAPABILITY\r\n")
        reply = b""
        while not reply.endswith(b"\r\n") or b"c OK" not in reply:
            reply += tls.recv(4096)
        assert b"b OK" not in reply and b"AUTH=PLAIN" in reply
        tls.close()
    finally:
        daemon.stop()


def test_failed_logins_are_throttled_per_ip(server, user):
    """Ten failures from one address block it; other addresses are not affected."""
    port = int(server.settings["imap_port"])

    def attempt(source: str, password: str) -> bytes:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        try:
            sock.recv(4096)
            sock.sendall(f'a LOGIN {user} "{password}"\r\n'.encode())
            data = b""
            while not data.endswith(b"\r\n"):
                data += sock.recv(4096)
            return data
        finally:
            sock.close()

    for _ in range(10):
        assert b"a NO [AUTHENTICATIONFAILED]" in attempt("127.0.0.7", "wrong password")
    assert b"a NO [UNAVAILABLE]" in attempt("127.0.0.7", PASSWORD)  # even the right one
    assert b"a OK" in attempt("127.0.0.8", PASSWORD)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_bad_input_gets_bad_or_no_and_never_breaks_the_session(server, user):
    c = imap(server)
    assert raw(c, "FROBNICATE")[-1].split(b" ", 2)[1] == b"BAD"
    assert raw(c, "SELECT INBOX")[-1].split(b" ", 2)[1] == b"BAD"  # not authenticated
    assert raw(c, "FETCH 1 FLAGS")[-1].split(b" ", 2)[1] == b"BAD"
    c.login(user, PASSWORD)
    assert raw(c, "FETCH 1 FLAGS")[-1].split(b" ", 2)[1] == b"BAD"  # no mailbox selected
    assert raw(c, "LOGIN a b")[-1].split(b" ", 2)[1] == b"BAD"  # already authenticated
    assert raw(c, "CLOSE")[-1].split(b" ", 2)[1] == b"BAD"
    ok(c.select("INBOX"))
    assert raw(c, "FETCH 5 FLAGS")[-1].split(b" ", 2)[1] == b"BAD"  # beyond EXISTS
    assert raw(c, "FETCH 1:* (FLAGS")[-1].split(b" ", 2)[1] == b"BAD"
    assert raw(c, "STORE 1 +FLAGS (\\Recent)")[-1].split(b" ", 2)[1] == b"BAD"
    assert raw(c, "SEARCH FROB")[-1].split(b" ", 2)[1] == b"BAD"
    assert raw(c, 'SELECT "&Jjo"')[-1].split(b" ", 2)[1] == b"NO"  # broken modified UTF-7
    assert raw(c, "CREATE a.b")[-1].split(b" ", 2)[1] == b"NO"
    # A line over the limit is refused, the session goes on.
    tag = c._new_tag().decode()
    c.send(f"{tag} NOOP {'x' * 70000}\r\n".encode())
    assert c._get_line().startswith(f"{tag} BAD".encode())
    # A literal over the size limit is refused before a byte of it is sent.
    tag = c._new_tag().decode()
    c.send(f"{tag} APPEND INBOX {{{SIZE_LIMIT + 1}}}\r\n".encode())
    assert c._get_line().startswith(f"{tag} NO [TOOBIG]".encode())
    # The same with a non-synchronising literal: its bytes are swallowed, not run as commands.
    tag = c._new_tag().decode()
    c.send(f"{tag} APPEND INBOX {{{SIZE_LIMIT + 1}+}}\r\n".encode() + b"X LOGOUT\r\n" * (SIZE_LIMIT // 10 + 1))
    reply = c._get_line()
    assert reply.startswith(f"{tag} NO [TOOBIG]".encode()) or reply.startswith(f"{tag} BAD".encode())
    # Binary garbage and a bare tag.
    assert raw(c, "\x01\x02\xff")[-1].split(b" ", 2)[1] == b"BAD"
    ok(c.noop())
    assert ok(c.select("INBOX")) == [b"0"]
    c.logout()


def test_fetch_reads_small_files_inline_and_large_ones_in_a_thread(server, user):
    # Once the view knows the messages' details, the event loop reads small files itself and
    # hands a file over 256 KB (and the rest of its batch) to an executor thread; the
    # answer is the same whole, in order.
    c = imap(server, user)
    bodies = [message("small one"), message("large", ("x" * 80 + "\n") * 4000), message("small two")]
    for body in bodies:
        ok(c.append("INBOX", None, None, body))
    ok(c.select("INBOX"))
    sizes = ok(c.fetch("1:3", "(RFC822.SIZE)"))
    assert len(sizes) == 3 and int(sizes[1].split()[-1].rstrip(b")")) > 256 * 1024
    fetched = [item[1] for item in ok(c.fetch("1:3", "(BODY.PEEK[])")) if isinstance(item, tuple)]
    assert fetched == [body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for body in bodies]
    c.logout()


def test_append_normalises_line_ends_and_respects_the_quota(server):
    server.create_mailbox("tight", password=PASSWORD, quota=4000)
    c = imap(server, "tight@imap.test")
    ok(c.append("INBOX", None, None, b"Subject: bare\n\nline one\nline two\n"))
    ok(c.select("INBOX"))
    assert ok(c.fetch("1", "(BODY.PEEK[])"))[0][1] == b"Subject: bare\r\n\r\nline one\r\nline two\r\n"
    typ, data = c.append("INBOX", None, None, message("big", "x" * 5000))
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
    typ, data = c.copy("1:*", "Archive")
    assert typ == "OK"
    ok(c.append("Drafts", "($Draft-Label)", None, message("kw")))
    ok(c.select("Drafts"))
    assert b"$Draft-Label" in c.untagged_responses["FLAGS"][0]
    c.logout()


def test_append_follows_a_folder_renamed_or_recreated_by_another_session(server, user):
    """A session that already appended to a folder notices when another session renames,
    deletes or re-creates it: the APPEND goes to whatever the name means now."""
    first, second = imap(server, user), imap(server, user)
    ok(first.create("Projects"))
    typ, data = first.append("Projects", None, None, message("one"))
    old_validity = re.match(rb"\[APPENDUID (\d+) 1\]", data[0]).group(1)
    ok(second.rename("Projects", "Done"))
    typ, data = first.append("Projects", None, None, message("two"))
    assert typ == "NO" and data[0].startswith(b"[TRYCREATE]")
    ok(second.create("Projects"))
    typ, data = first.append("Projects", "(\\Flagged)", None, message("three"))
    validity = re.match(rb"\[APPENDUID (\d+) 1\]", data[0]).group(1)
    assert validity != old_validity
    assert ok(first.select("Projects")) == [b"1"]
    assert b"three" in ok(first.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0][1]
    assert ok(first.select("Done")) == [b"1"]
    # Over quota after the folder was cached: refused in the delivery, and no file left behind.
    with sqlite3.connect(server.data_dir / "openmailserver.db") as db:
        db.execute("UPDATE mailboxes SET quota_bytes = used_bytes + 100 WHERE address = ?", (user,))
    typ, data = first.append("Projects", None, None, message("four", "x" * 500))
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
    local = user.split("@")[0]
    folder = server.data_dir / "mail" / "imap.test" / local / ".Projects"
    assert len(list((folder / "cur").iterdir()) + list((folder / "new").iterdir())) == 1
    first.logout()
    second.logout()


def test_concurrent_appends_get_distinct_uids_and_the_quota_holds_for_each(server):
    """APPENDs from many sessions at once (indexed together by the group commit): each gets
    its own UID, the selected session sees them all, and once the quota is reached the rest
    are refused one by one, leaving no file behind."""
    address = "busy@imap.test"
    body = "x" * 3000
    size = len(message("m0", body))  # CRLF already: stored as sent
    server.create_mailbox("busy", password=PASSWORD, quota=size * 12 + size // 2)
    watcher = imap(server, address)
    ok(watcher.select("INBOX"))

    def append(n: int) -> tuple[str, bytes]:
        c = imap(server, address)
        try:
            typ, data = c.append("INBOX", None, None, message(f"m{n}", body))
            return typ, data[0]
        finally:
            c.logout()

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(append, range(20)))
    stored = [data for typ, data in results if typ == "OK"]
    assert len(stored) == 12
    assert all(typ == "NO" and data.startswith(b"[OVERQUOTA]") for typ, data in results if typ != "OK")
    uids = sorted(int(re.match(rb"\[APPENDUID \d+ (\d+)\]", data).group(1)) for data in stored)
    assert uids == list(range(1, 13))
    assert len(server.messages_on_disk(address)) == 12
    ok(watcher.noop())
    assert watcher.untagged_responses.get("EXISTS", [b"0"])[-1] == b"12"
    assert len(ok(watcher.uid("SEARCH", "ALL"))[0].split()) == 12
    watcher.logout()


def test_garbage_and_abrupt_disconnects_leave_the_daemon_healthy(server, user):
    port = int(server.settings["imap_port"])
    for payload in (b"\x00" * 100, b"* " * 5000 + b"\r\n", b"a APPEND INBOX {100}\r\npartial", b"a IDLE\r\n",
                    b"a AUTHENTICATE PLAIN\r\n", b"(" * 10000 + b"\r\n"):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.recv(4096)
        sock.sendall(payload)
        time.sleep(0.05)
        sock.close()
    c = imap(server, user)
    ok(c.select("INBOX"))
    c.logout()
    assert "Traceback" not in server.output(tail=None)


_FUZZ_WORDS = st.sampled_from([
    "FETCH", "UID", "STORE", "SEARCH", "SELECT", "LIST", "APPEND", "COPY", "MOVE", "EXPUNGE", "STATUS", "IDLE",
    "1", "*", "1:*", "0", "4294967296", "(", ")", "[", "]", "BODY[", "BODY.PEEK[1.2.MIME]<0.10>", "FLAGS",
    "+FLAGS", "(\\Seen", "\\Recent", '"INBOX"', '"', "{5}", "{5+}", "NIL", "CHARSET", "OR", "NOT", "HEADER",
    "INBOX", "&AGE-", "%", "~{3}", "\\", "\x00", "é",
])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.lists(_FUZZ_WORDS, min_size=1, max_size=8).map(" ".join), min_size=1, max_size=6))
def test_fuzzed_commands_always_get_an_answer(server, lines):
    """Random command lines over a real session: every one is answered and the session survives."""
    client = _fuzz_client(server)
    for n, line in enumerate(lines):
        tag = f"F{n}"
        client.sendall(f"{tag} {line}\r\n".encode("utf-8"))
        reply = _read_tagged(client, tag)
        if reply is None:  # our line left a literal or an IDLE open: close it, then expect the answer
            client.sendall(b"DONE\r\n" + b"x" * 5 + b"\r\n")
            reply = _read_tagged(client, tag)
        assert reply is not None and reply.split(b" ")[1] in (b"OK", b"NO", b"BAD"), (line, reply)
    client.sendall(b"Z NOOP\r\n")
    assert _read_tagged(client, "Z", timeout=10).startswith(b"Z OK")
    client.close()
    assert "Traceback" not in server.output(tail=None)


_fuzz_user: list[str] = []


def _fuzz_client(server) -> socket.socket:
    if not _fuzz_user:
        server.create_mailbox("fuzz", password=PASSWORD)
        _fuzz_user.append("fuzz@imap.test")
        c = imap(server, _fuzz_user[0])
        ok(c.append("INBOX", None, None, message("fuzz target")))
        c.logout()
    sock = socket.create_connection(("127.0.0.1", int(server.settings["imap_port"])), timeout=10)
    sock.recv(4096)
    sock.sendall(f'L LOGIN {_fuzz_user[0]} "{PASSWORD}"\r\nS SELECT INBOX\r\n'.encode())
    assert _read_tagged(sock, "S").startswith(b"S OK")
    return sock


def _read_tagged(sock: socket.socket, tag: str, timeout: float = 1.0) -> bytes | None:
    """The tagged reply line for `tag`, or None if none comes within `timeout`."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            for line in data.split(b"\r\n"):
                if line.startswith(tag.encode() + b" "):
                    return line
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    except socket.timeout:
        return None
    finally:
        sock.settimeout(10)
