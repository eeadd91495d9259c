"""Folders, the message index, threads and the event log."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

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

def _find_thread(conn: sqlite3.Connection, mailbox_id: str, message_id: str) -> str | None:
    """The thread of a message already stored in the mailbox with this Message-ID."""
    row = conn.execute(
        "SELECT thread_id FROM messages WHERE mailbox_id = ? AND message_id = ? "
        "AND thread_id IS NOT NULL LIMIT 1", (mailbox_id, message_id)).fetchone()
    return row[0] if row else None


# ---- messages --------------------------------------------------------------

_MESSAGE_INSERT = (
    "INSERT INTO messages (id, mailbox_id, folder_id, uid, modseq, filename, size, flags, internal_date, "
    "message_id, in_reply_to, refs, subject, from_addr, to_addrs, date_header, thread_id, direction, "
    "envelope_from, subaddress, auth_results, spf, dkim, dmarc, content_digest, created_at) VALUES ")
_MESSAGE_ROW = "(" + ", ".join("?" * 26) + ")"
_ROWS_PER_INSERT = 500  # 26 values each, well under SQLite's limit of bound values


def _insert_rows(conn: sqlite3.Connection, head: str, row_marks: str, rows: list[tuple],
                 tail: str = "") -> list[tuple]:
    """Multi-row INSERTs (one statement per chunk); what `tail` (a RETURNING clause) returns."""
    out: list[tuple] = []
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start:start + _ROWS_PER_INSERT]
        values = [v for row in chunk for v in row]
        out.extend(conn.execute(head + ", ".join([row_marks] * len(chunk)) + tail, values).fetchall())
    return out


def record_message(conn: sqlite3.Connection, *, mailbox_id: str, folder: str, filename: str, size: int,
                   meta: dict[str, Any], flags: str = "", direction: str = "inbound",
                   internal_date: str | None = None, event_type: str | None = "message.received") -> Row:
    """Index one message file (`record_messages`)."""
    return record_messages(conn, [{
        "mailbox_id": mailbox_id, "folder": folder, "filename": filename, "size": size, "meta": meta,
        "flags": flags, "direction": direction, "internal_date": internal_date, "event_type": event_type}])[0]


def record_messages(conn: sqlite3.Connection, specs: list[dict[str, Any]]) -> list[Row]:
    """Index message files that are already on disk, in the caller's transaction.

    Each spec: mailbox_id, folder, filename, size, meta, and optionally flags,
    direction, internal_date (default now) and event_type (default
    message.received; None for no event). In spec order, each message gets the
    next UID and modseq of its folder and a thread (its In-Reply-To, then its
    References newest first, among the mailbox's messages including those
    earlier in `specs`; else a new thread); the mailbox is charged its size
    (the row's `over_quota` says whether the mailbox now uses more than its
    quota) and the event appended. The writes are per batch, not per message:
    one statement per folder, mailbox and table (and per thread that grows);
    only the thread lookups of replies go message by message.
    """
    created = now_iso()
    n = len(specs)
    # UIDs and modseqs: one UPDATE per folder, ranges handed out in spec order.
    by_folder: dict[tuple[str, str], list[int]] = {}
    for i, spec in enumerate(specs):
        by_folder.setdefault((spec["mailbox_id"], spec["folder"]), []).append(i)
    allocated: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * n  # folder id, uid, modseq, uidvalidity
    for (mailbox_id, folder), indexes in by_folder.items():
        got = conn.execute(
            "UPDATE folders SET uidnext = uidnext + ?, highestmodseq = highestmodseq + ? "
            "WHERE mailbox_id = ? AND name = ? RETURNING id, uidnext, highestmodseq, uidvalidity",
            (len(indexes), len(indexes), mailbox_id, folder)).fetchone()
        if got is None:
            # Not a MailError: `core.deliver` turns it into a temporary failure (451), as the
            # folder may be back (re-created) by the time the sender retries.
            raise LookupError(f"folder {folder!r} of mailbox {mailbox_id} does not exist")
        folder_id, uidnext, highest, uidvalidity = got
        first_uid, first_modseq = uidnext - len(indexes), highest - len(indexes) + 1
        for k, i in enumerate(indexes):
            allocated[i] = (folder_id, first_uid + k, first_modseq + k, uidvalidity)
    # Threads.
    in_batch: dict[tuple[str, str], str] = {}  # (mailbox, Message-ID) -> thread, for replies in this batch
    new_threads: dict[str, list[Any]] = {}
    grown: dict[str, int] = {}
    thread_ids: list[str] = []
    for spec in specs:
        meta, mailbox_id = spec["meta"], spec["mailbox_id"]
        parents = ([meta["in_reply_to"]] if meta.get("in_reply_to") else []) + \
            list(reversed(list(meta.get("references") or [])))
        thread_id = None
        for parent in parents:
            # Stored rows first: one by one, the oldest message with that Message-ID would answer.
            thread_id = _find_thread(conn, mailbox_id, parent) or in_batch.get((mailbox_id, parent))
            if thread_id:
                break
        if thread_id is None:
            thread_id = new_id("thr")
            new_threads[thread_id] = [thread_id, mailbox_id, meta.get("subject", ""), created, created, 1]
        elif thread_id in new_threads:
            new_threads[thread_id][5] += 1
        else:
            grown[thread_id] = grown.get(thread_id, 0) + 1
        if meta.get("message_id"):
            in_batch.setdefault((mailbox_id, meta["message_id"]), thread_id)
        thread_ids.append(thread_id)
    if new_threads:
        _insert_rows(conn, "INSERT INTO threads (id, mailbox_id, subject, created_at, last_message_at, "
                     "message_count) VALUES ", "(?, ?, ?, ?, ?, ?)", [tuple(t) for t in new_threads.values()])
    for thread_id, count in grown.items():
        conn.execute("UPDATE threads SET last_message_at = ?, message_count = message_count + ? WHERE id = ?",
                     (created, count, thread_id))
    # The messages.
    ids = [new_id("msg") for _ in specs]
    values = []
    for spec, message_id, (folder_id, uid, modseq, _), thread_id in zip(specs, ids, allocated, thread_ids):
        meta = spec["meta"]
        values.append((
            message_id, spec["mailbox_id"], folder_id, uid, modseq, spec["filename"], spec["size"],
            spec.get("flags", ""), spec.get("internal_date") or created, meta.get("message_id"),
            meta.get("in_reply_to"), " ".join(meta.get("references") or []), meta.get("subject", ""),
            meta.get("from", ""), meta.get("to", ""), meta.get("date"), thread_id, spec.get("direction", "inbound"),
            meta.get("envelope_from"), meta.get("subaddress"), meta.get("authentication_results"),
            meta.get("spf"), meta.get("dkim"), meta.get("dmarc"), meta.get("content_digest"), created))
    _insert_rows(conn, _MESSAGE_INSERT, _MESSAGE_ROW, values)
    # Quota: one UPDATE per mailbox.
    sizes: dict[str, int] = {}
    for spec in specs:
        sizes[spec["mailbox_id"]] = sizes.get(spec["mailbox_id"], 0) + spec["size"]
    quotas: dict[str, tuple[int, int]] = {}  # mailbox -> (quota, bytes used before this batch)
    for mailbox_id, size in sizes.items():
        quota, used = conn.execute("UPDATE mailboxes SET used_bytes = used_bytes + ? WHERE id = ? "
                                   "RETURNING quota_bytes, used_bytes", (size, mailbox_id)).fetchone()
        quotas[mailbox_id] = (quota, used - size)
    rows = []
    for spec, message_id, (folder_id, uid, _, uidvalidity), thread_id in zip(specs, ids, allocated, thread_ids):
        quota, used = quotas[spec["mailbox_id"]]
        used += spec["size"]  # as if indexed one by one: what the mailbox uses with this message
        quotas[spec["mailbox_id"]] = (quota, used)
        rows.append({"id": message_id, "mailbox_id": spec["mailbox_id"], "folder": spec["folder"],
                     "folder_id": folder_id, "uidvalidity": uidvalidity, "uid": uid, "thread_id": thread_id,
                     "filename": spec["filename"], "size": spec["size"], "created_at": created,
                     "over_quota": bool(quota) and used > quota})
    # Events.
    logged = [(row, spec) for row, spec in zip(rows, specs) if spec.get("event_type", "message.received")]
    if logged:
        events = []
        for row, spec in logged:
            meta = spec["meta"]
            payload = {"message_id": row["id"], "thread_id": row["thread_id"], "folder": spec["folder"],
                       "rfc822_message_id": meta.get("message_id"), "subject": meta.get("subject", ""),
                       "from": meta.get("from", ""), "to": meta.get("to", "")}
            row["event"] = {"event_id": new_id("evt"), "type": spec.get("event_type", "message.received"),
                            "occurred_at": created, "mailbox_id": spec["mailbox_id"], "payload": payload}
            events.append(row["event"])
        seqs = dict(_insert_rows(
            conn, "INSERT INTO events (event_id, type, occurred_at, mailbox_id, payload) VALUES ",
            "(?, ?, ?, ?, ?)", [(e["event_id"], e["type"], e["occurred_at"], e["mailbox_id"], json.dumps(e["payload"]))
                                for e in events], " RETURNING event_id, seq"))
        for event in events:
            event["seq"] = seqs[event["event_id"]]
    return rows


def recent_copies(conn: sqlite3.Connection, keys: list[tuple[str, str, str, str]],
                  since: str) -> dict[tuple[str, str, str, str], str]:
    """Which of the (mailbox id, folder name, Message-ID, content digest) keys the index holds
    since `since`: key -> the id of that stored message."""
    found: dict[tuple[str, str, str, str], str] = {}
    for start in range(0, len(keys), 300):
        chunk = keys[start:start + 300]
        # Each key is looked up in the (mailbox_id, message_id) index: CROSS JOIN keeps the
        # keys as the outer loop (a row-value IN over several keys scans the table), and the
        # unary + keeps SQLite from walking the (mailbox_id, created_at) index over every
        # message of the last day.
        rows = conn.execute(
            f"SELECT m.mailbox_id, f.name, m.message_id, m.content_digest, m.id "
            f"FROM (VALUES {', '.join(['(?, ?, ?)'] * len(chunk))}) AS k "
            "CROSS JOIN messages m ON m.mailbox_id = k.column1 AND m.message_id = k.column2 "
            "JOIN folders f ON f.id = m.folder_id WHERE +m.content_digest = k.column3 AND +m.created_at >= ?",
            [v for mailbox_id, _, mid, digest in chunk for v in (mailbox_id, mid, digest)] + [since])
        for mailbox_id, folder, mid, digest, row_id in rows:
            found.setdefault((mailbox_id, folder, mid, digest), row_id)
    wanted = set(keys)
    return {key: row_id for key, row_id in found.items() if key in wanted}


def record_suppressed(conn: sqlite3.Connection, copies: list[tuple[str, str | None, str | None, str | None]]) -> None:
    """Note copies that were not stored as duplicates: (stored message id, queue id,
    envelope sender, client IP) each, for that message's delivery trace."""
    conn.executemany("INSERT INTO suppressed_copies (message_id, suppressed_at, queue_id, envelope_from, peer_ip) "
                     "VALUES (?, ?, ?, ?, ?)", [(mid, now_iso(), *rest) for mid, *rest in copies])


def suppressed_copies(conn: sqlite3.Connection, message_id: str) -> list[Row]:
    return [dict(r) for r in conn.execute("SELECT * FROM suppressed_copies WHERE message_id = ? ORDER BY id",
                                          (message_id,))]


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
