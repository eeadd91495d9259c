"""`folders.message_count` (migration 8) follows every insert, delete and move of a message row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from openmailserver.store import accounts, messages
from openmailserver.store.db import Database, connect
from openmailserver.store.schema import MIGRATIONS


def _mailbox(conn: sqlite3.Connection) -> dict:
    domain = accounts.insert_domain(conn, "count.test", "oms", "unused-key")
    return accounts.insert_mailbox(conn, address="u@count.test", local_part="u", domain_id=domain["id"],
                                   password_hash="x", quota_bytes=0)


def _index(conn: sqlite3.Connection, mailbox_id: str, folder: str, n: int) -> dict:
    return messages.record_message(conn, mailbox_id=mailbox_id, folder=folder, filename=f"new/{folder}{n},S=1",
                                   size=1, meta={"subject": f"m{n}"}, event_type=None)


def _check(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT name, message_count, (SELECT COUNT(*) FROM messages m WHERE m.folder_id = f.id) "
                        "FROM folders f").fetchall()
    for name, kept, counted in rows:
        assert kept == counted, name
    return {name: kept for name, kept, _ in rows}


def test_counts_follow_inserts_moves_and_deletes(tmp_path: Path) -> None:
    db = Database(tmp_path / "index.db")
    mailbox = db.write(_mailbox)
    rows = [db.write(_index, mailbox["id"], "INBOX", n) for n in range(5)]
    db.write(_index, mailbox["id"], "Sent", 0)
    assert db.read(_check)["INBOX"] == 5

    def move(conn: sqlite3.Connection) -> None:
        trash = messages.get_folder(conn, mailbox["id"], "Trash")
        conn.execute("UPDATE messages SET folder_id = ?, uid = uid + 100 WHERE id IN (?, ?)",
                     (trash["id"], rows[0]["id"], rows[1]["id"]))
        conn.execute("UPDATE messages SET flags = '\\Seen' WHERE id = ?", (rows[2]["id"],))
    db.write(move)
    assert db.read(_check) == {"INBOX": 3, "Sent": 1, "Drafts": 0, "Trash": 2, "Junk": 0, "Archive": 0}
    db.write(messages.drop_message_rows, [rows[0]["id"], rows[3]["id"]])
    assert db.read(_check)["Trash"] == 1
    db.write(accounts.delete_mailbox, mailbox["id"])
    db.close()


def test_migration_counts_existing_rows(tmp_path: Path) -> None:
    conn = connect(tmp_path / "old.db")
    for number, script in enumerate(MIGRATIONS[:7], start=1):
        for statement in script.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={number}")
    mailbox = _mailbox(conn)
    inbox = conn.execute("SELECT id FROM folders WHERE mailbox_id = ? AND name = 'INBOX'", (mailbox["id"],)).fetchone()
    for n in range(3):  # rows as version 7 wrote them (today's code writes later columns)
        conn.execute("INSERT INTO messages (id, mailbox_id, folder_id, uid, modseq, filename, size, internal_date, "
                     "created_at) VALUES (?, ?, ?, ?, 1, ?, 1, '', '')",
                     (f"msg_{n}", mailbox["id"], inbox[0], n + 1, f"new/{n},S=1"))
    conn.close()
    db = Database(tmp_path / "old.db")  # migrates to the latest version
    assert db.read(_check)["INBOX"] == 3
    db.close()


def test_duplicate_check_uses_the_message_id_index(tmp_path: Path) -> None:
    """`recent_copies` runs at every delivery: it must look the Message-ID up, not walk the
    mailbox's last day of mail (which made ingest slower the more mail had arrived)."""
    db = Database(tmp_path / "index.db")
    mailbox = db.write(_mailbox)
    for n in range(50):
        db.write(_index, mailbox["id"], "INBOX", n)

    def plan(conn: sqlite3.Connection) -> str:
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        try:
            assert not messages.recent_copies(conn, [(mailbox["id"], "INBOX", "new@x.test", "d"),
                                                     (mailbox["id"], "INBOX", "other@x.test", "d")],
                                              "2000-01-01T00:00:00Z")
        finally:
            conn.set_trace_callback(None)
        [query] = [s for s in statements if "message_id" in s]
        return " ".join(str(tuple(row)) for row in conn.execute("EXPLAIN QUERY PLAN " + query))

    found = db.read(plan)
    assert "messages_msgid" in found and "SCAN m " not in found + " "
    db.close()
