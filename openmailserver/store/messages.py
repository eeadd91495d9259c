"""Folders, the message index, threads and the event log."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from ..errors import not_found
from ..util import new_id, now_iso

Row = dict[str, Any]


# ---- folders ---------------------------------------------------------------

def create_folder(conn: sqlite3.Connection, mailbox_id: str, name: str, special_use: str | None = None) -> Row:
    # UIDVALIDITY must change whenever a folder of the same name is recreated
    # (RFC 3501 §2.3.1.1): take the clock, but never reuse a value already handed out.
    highest = conn.execute("SELECT MAX(uidvalidity) FROM folders").fetchone()[0] or 0
    uidvalidity = max(int(time.time()), highest + 1)
    conn.execute(
        "INSERT INTO folders (mailbox_id, name, uidvalidity, special_use) VALUES (?, ?, ?, ?)",
        (mailbox_id, name, uidvalidity, special_use),
    )
    return get_folder(conn, mailbox_id, name)  # type: ignore[return-value]


def get_folder(conn: sqlite3.Connection, mailbox_id: str, name: str) -> Row | None:
    row = conn.execute("SELECT * FROM folders WHERE mailbox_id = ? AND name = ?", (mailbox_id, name)).fetchone()
    return dict(row) if row else None


def list_folders(conn: sqlite3.Connection, mailbox_id: str) -> list[Row]:
    rows = conn.execute("SELECT * FROM folders WHERE mailbox_id = ? ORDER BY name", (mailbox_id,))
    return [dict(r) for r in rows]


def all_folders(conn: sqlite3.Connection) -> list[Row]:
    rows = conn.execute(
        "SELECT f.*, m.local_part, d.name AS domain FROM folders f "
        "JOIN mailboxes m ON m.id = f.mailbox_id JOIN domains d ON d.id = m.domain_id")
    return [dict(r) for r in rows]


# ---- events ----------------------------------------------------------------

def add_event(conn: sqlite3.Connection, event_type: str, mailbox_id: str | None, payload: dict[str, Any]) -> Row:
    """Append to the event log inside the caller's transaction."""
    event = {"event_id": new_id("evt"), "type": event_type, "occurred_at": now_iso(), "mailbox_id": mailbox_id}
    cur = conn.execute(
        "INSERT INTO events (event_id, type, occurred_at, mailbox_id, payload) VALUES (?, ?, ?, ?, ?)",
        (event["event_id"], event_type, event["occurred_at"], mailbox_id, json.dumps(payload)),
    )
    return {"seq": cur.lastrowid, **event, "payload": payload}


def list_events(conn: sqlite3.Connection, after: int = 0, limit: int = 100,
                mailbox_ids: list[str] | None = None, types: list[str] | None = None) -> list[Row]:
    sql = "SELECT * FROM events WHERE seq > ?"
    args: list[Any] = [after]
    if mailbox_ids is not None:
        sql += " AND mailbox_id IN (%s)" % ",".join("?" * len(mailbox_ids))
        args.extend(mailbox_ids)
    if types:
        sql += " AND type IN (%s)" % ",".join("?" * len(types))
        args.extend(types)
    sql += " ORDER BY seq LIMIT ?"
    args.append(limit)
    out = []
    for row in conn.execute(sql, args):
        item = dict(row)
        item["payload"] = json.loads(item["payload"])
        out.append(item)
    return out


# ---- threads ---------------------------------------------------------------

def _find_thread(conn: sqlite3.Connection, mailbox_id: str, message_ids: list[str]) -> str | None:
    for mid in message_ids:
        row = conn.execute(
            "SELECT thread_id FROM messages WHERE mailbox_id = ? AND message_id = ? "
            "AND thread_id IS NOT NULL LIMIT 1", (mailbox_id, mid)).fetchone()
        if row:
            return row[0]
    return None


def assign_thread(conn: sqlite3.Connection, mailbox_id: str, in_reply_to: str | None,
                  refs: list[str], subject: str, when: str) -> str:
    """In-Reply-To first, then References (newest first), else a new thread."""
    thread_id = None
    if in_reply_to:
        thread_id = _find_thread(conn, mailbox_id, [in_reply_to])
    if thread_id is None and refs:
        thread_id = _find_thread(conn, mailbox_id, list(reversed(refs)))
    if thread_id is None:
        thread_id = new_id("thr")
        conn.execute(
            "INSERT INTO threads (id, mailbox_id, subject, created_at, last_message_at, message_count) "
            "VALUES (?, ?, ?, ?, ?, 1)", (thread_id, mailbox_id, subject, when, when))
    else:
        conn.execute(
            "UPDATE threads SET last_message_at = ?, message_count = message_count + 1 WHERE id = ?",
            (when, thread_id))
    return thread_id


# ---- messages --------------------------------------------------------------

def record_message(conn: sqlite3.Connection, *, mailbox_id: str, folder: str, filename: str, size: int,
                   meta: dict[str, Any], flags: str = "", direction: str = "inbound",
                   internal_date: str | None = None, event_type: str | None = "message.received") -> Row:
    """Index a message file that is already durable on disk.

    Allocates the UID and modseq, assigns the thread, charges the quota (the row's
    `over_quota` says whether the mailbox now uses more than it may) and appends the
    event, all in the caller's transaction.
    """
    allocated = conn.execute(
        "UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 "
        "WHERE mailbox_id = ? AND name = ? RETURNING id, uidnext - 1, highestmodseq, uidvalidity",
        (mailbox_id, folder)).fetchone()
    if allocated is None:
        raise not_found(f"folder {folder!r}")
    folder_id, uid, modseq, uidvalidity = allocated
    created = now_iso()
    refs = list(meta.get("references") or [])
    thread_id = assign_thread(conn, mailbox_id, meta.get("in_reply_to"), refs, meta.get("subject", ""), created)
    message_id = new_id("msg")
    conn.execute(
        "INSERT INTO messages (id, mailbox_id, folder_id, uid, modseq, filename, size, flags, internal_date, "
        "message_id, in_reply_to, refs, subject, from_addr, to_addrs, date_header, thread_id, direction, "
        "envelope_from, subaddress, auth_results, spf, dkim, dmarc, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (message_id, mailbox_id, folder_id, uid, modseq, filename, size, flags,
         internal_date or created, meta.get("message_id"), meta.get("in_reply_to"), " ".join(refs),
         meta.get("subject", ""), meta.get("from", ""), meta.get("to", ""), meta.get("date"),
         thread_id, direction, meta.get("envelope_from"), meta.get("subaddress"),
         meta.get("authentication_results"), meta.get("spf"), meta.get("dkim"), meta.get("dmarc"), created),
    )
    quota, used = conn.execute("UPDATE mailboxes SET used_bytes = used_bytes + ? WHERE id = ? "
                               "RETURNING quota_bytes, used_bytes", (size, mailbox_id)).fetchone()
    row = {"id": message_id, "mailbox_id": mailbox_id, "folder": folder, "folder_id": folder_id,
           "uidvalidity": uidvalidity, "uid": uid, "thread_id": thread_id, "filename": filename, "size": size,
           "created_at": created, "over_quota": bool(quota) and used > quota}
    if event_type:
        row["event"] = add_event(conn, event_type, mailbox_id, {
            "message_id": message_id, "thread_id": thread_id, "folder": folder,
            "rfc822_message_id": meta.get("message_id"), "subject": meta.get("subject", ""),
            "from": meta.get("from", ""), "to": meta.get("to", ""),
        })
    return row


def has_recent(conn: sqlite3.Connection, mailbox_id: str, folder: str, message_id: str, since: str) -> bool:
    """Whether the folder holds a message with this Message-ID indexed since `since`."""
    # The unary + keeps SQLite on the (mailbox_id, message_id) index: by (mailbox_id,
    # created_at) it would walk every message of the last day for each delivery.
    return conn.execute(
        "SELECT 1 FROM messages m JOIN folders f ON f.id = m.folder_id WHERE m.mailbox_id = ? AND f.name = ? "
        "AND m.message_id = ? AND +m.created_at >= ? LIMIT 1", (mailbox_id, folder, message_id, since)
    ).fetchone() is not None


def folder_files(conn: sqlite3.Connection, folder_id: int) -> list[Row]:
    rows = conn.execute("SELECT id, uid, filename, size FROM messages WHERE folder_id = ?", (folder_id,))
    return [dict(r) for r in rows]


def drop_message_rows(conn: sqlite3.Connection, ids: list[str]) -> None:
    for message_id in ids:
        row = conn.execute("SELECT mailbox_id, size FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row:
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            conn.execute("UPDATE mailboxes SET used_bytes = MAX(0, used_bytes - ?) WHERE id = ?",
                         (row["size"], row["mailbox_id"]))


def set_filename(conn: sqlite3.Connection, message_id: str, filename: str) -> None:
    conn.execute("UPDATE messages SET filename = ? WHERE id = ?", (filename, message_id))


# System labels (core/labels.py) as SQL conditions; any other label is an IMAP keyword in `flags`.
_LABEL_SQL = {
    "inbound": "m.direction = 'inbound'",
    "outbound": "m.direction = 'outbound'",
    "unread": "(' ' || m.flags || ' ') NOT LIKE '% \\Seen %'",
    "spam": "f.special_use = '\\Junk'",
    "bounced": "EXISTS (SELECT 1 FROM outbound o WHERE o.sent_copy_id = m.id AND o.state = 'bounced')",
}


def list_messages(conn: sqlite3.Connection, mailbox_id: str, folder: str | None = None,
                  limit: int = 50, before: str | None = None, label: str | None = None) -> list[Row]:
    sql = ("SELECT m.*, f.name AS folder FROM messages m JOIN folders f ON f.id = m.folder_id "
           "WHERE m.mailbox_id = ?")
    args: list[Any] = [mailbox_id]
    if label is not None:
        if label in _LABEL_SQL:
            sql += " AND " + _LABEL_SQL[label]
        else:
            sql += " AND (' ' || m.flags || ' ') LIKE ? ESCAPE '!'"
            args.append("% " + label.replace("!", "!!").replace("%", "!%").replace("_", "!_") + " %")
    if folder is not None:
        sql += " AND f.name = ?"
        args.append(folder)
    if before is not None:
        sql += " AND m.created_at < ?"
        args.append(before)
    sql += " ORDER BY m.created_at DESC, m.uid DESC LIMIT ?"
    args.append(limit)
    return [dict(r) for r in conn.execute(sql, args)]


def get_message(conn: sqlite3.Connection, message_id: str) -> Row | None:
    row = conn.execute(
        "SELECT m.*, f.name AS folder FROM messages m JOIN folders f ON f.id = m.folder_id WHERE m.id = ?",
        (message_id,)).fetchone()
    return dict(row) if row else None


def count_messages(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]


def list_threads(conn: sqlite3.Connection, mailbox_id: str, limit: int = 50,
                 before: tuple[str, str] | None = None) -> list[Row]:
    """Threads by newest activity; `before` = (last_message_at, id) of the previous page's end."""
    sql = "SELECT * FROM threads WHERE mailbox_id = ? AND message_count > 0"
    args: list[Any] = [mailbox_id]
    if before is not None:
        sql += " AND (last_message_at < ? OR (last_message_at = ? AND id < ?))"
        args += [before[0], before[0], before[1]]
    sql += " ORDER BY last_message_at DESC, id DESC LIMIT ?"
    args.append(limit)
    return [dict(r) for r in conn.execute(sql, args)]


def get_thread(conn: sqlite3.Connection, thread_id: str) -> Row | None:
    row = conn.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
    return dict(row) if row else None


def thread_messages(conn: sqlite3.Connection, thread_id: str) -> list[Row]:
    rows = conn.execute(
        "SELECT m.*, f.name AS folder FROM messages m JOIN folders f ON f.id = m.folder_id "
        "WHERE m.thread_id = ? ORDER BY m.created_at, m.uid", (thread_id,))
    return [dict(r) for r in rows]


# ---- paging for the compatibility APIs (page/offset and totals) --------------

def page_messages(conn: sqlite3.Connection, mailbox_id: str, limit: int, offset: int = 0,
                  direction: str | None = None) -> tuple[list[Row], int]:
    """Messages of every folder but Trash, newest first, and their total."""
    where = "m.mailbox_id = ? AND f.name != 'Trash'"
    args: list[Any] = [mailbox_id]
    if direction is not None:
        where += " AND m.direction = ?"
        args.append(direction)
    base = f"FROM messages m JOIN folders f ON f.id = m.folder_id WHERE {where}"
    total = conn.execute(f"SELECT COUNT(*) {base}", args).fetchone()[0]
    rows = conn.execute(f"SELECT m.*, f.name AS folder {base} ORDER BY m.created_at DESC, m.uid DESC "
                        "LIMIT ? OFFSET ?", (*args, limit, offset))
    return [dict(r) for r in rows], total


def page_threads(conn: sqlite3.Connection, mailbox_id: str, limit: int, offset: int = 0) -> tuple[list[Row], int]:
    """Threads by newest activity, and their total."""
    where = "WHERE mailbox_id = ? AND message_count > 0"
    total = conn.execute(f"SELECT COUNT(*) FROM threads {where}", (mailbox_id,)).fetchone()[0]
    rows = conn.execute(f"SELECT * FROM threads {where} ORDER BY last_message_at DESC, id DESC LIMIT ? OFFSET ?",
                        (mailbox_id, limit, offset))
    return [dict(r) for r in rows], total


def thread_rows_by_folder(conn: sqlite3.Connection, thread_id: str) -> dict[int, list[int]]:
    """The UIDs of a thread's messages, per folder id."""
    out: dict[int, list[int]] = {}
    for folder_id, uid in conn.execute("SELECT folder_id, uid FROM messages WHERE thread_id = ?", (thread_id,)):
        out.setdefault(folder_id, []).append(uid)
    return out


def delete_thread_row(conn: sqlite3.Connection, thread_id: str) -> None:
    conn.execute("DELETE FROM threads WHERE id = ?", (thread_id,))


def last_seq(conn: sqlite3.Connection) -> int:
    """The newest event's seq (0 for an empty log)."""
    return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
