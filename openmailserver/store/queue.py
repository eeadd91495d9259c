"""Outbound records, per-recipient queue rows and delivery attempts."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..util import now_iso

Row = dict[str, Any]

# Per-recipient states. `queued`/`deferred` wait for an attempt; the rest are final
# except `held`, which waits for a release.
PENDING = ("queued", "deferred")
FINAL = ("delivered", "bounced")
# Outbound (whole message) states once no recipient waits for an attempt or a release.
FINISHED = ("sent", "bounced", "failed")


def insert_outbound(conn: sqlite3.Connection, *, outbound_id: str, queue_id: str, mailbox_id: str | None,
                    sender: str, recipients: list[str], message_id: str | None, subject: str,
                    thread_id: str | None, spool: str | None, size: int, sent_copy_id: str | None,
                    remote: list[str], now: float, expires_at: float) -> Row:
    state = "queued" if remote else "sent"
    created = now_iso()
    conn.execute(
        "INSERT INTO outbound (id, queue_id, mailbox_id, sender, recipients, message_id, subject, thread_id, "
        "spool, size, state, sent_copy_id, created_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (outbound_id, queue_id, mailbox_id, sender, json.dumps(recipients), message_id, subject, thread_id,
         spool, size, state, sent_copy_id, created, None if remote else created))
    for n, recipient in enumerate(remote):
        conn.execute(
            "INSERT INTO queue (id, outbound_id, recipient, domain, state, next_attempt_at, expires_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
            (f"{queue_id}.{n + 1}", outbound_id, recipient, recipient.rsplit("@", 1)[1].lower(), now,
             expires_at, created))
    return get_outbound(conn, outbound_id)  # type: ignore[return-value]


def _outbound(row: sqlite3.Row | None) -> Row | None:
    if row is None:
        return None
    item = dict(row)
    item["recipients"] = json.loads(item["recipients"])
    return item


def get_outbound(conn: sqlite3.Connection, outbound_id: str) -> Row | None:
    return _outbound(conn.execute("SELECT * FROM outbound WHERE id = ?", (outbound_id,)).fetchone())


def list_outbound(conn: sqlite3.Connection, mailbox_id: str | None = None, limit: int = 100) -> list[Row]:
    if mailbox_id is None:
        rows = conn.execute("SELECT * FROM outbound ORDER BY created_at DESC LIMIT ?", (limit,))
    else:
        rows = conn.execute("SELECT * FROM outbound WHERE mailbox_id = ? ORDER BY created_at DESC LIMIT ?",
                            (mailbox_id, limit))
    return [_outbound(r) for r in rows]  # type: ignore[misc]


def sends_since(conn: sqlite3.Connection, mailbox_id: str, since: str, cap: int) -> tuple[int, str | None]:
    """How many messages the mailbox submitted since `since` (counted up to `cap`: a rate
    check needs no more), and, once `cap` is reached, the oldest of them."""
    count = conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM outbound WHERE mailbox_id = ? AND created_at >= ? "
                         "LIMIT ?)", (mailbox_id, since, cap)).fetchone()[0]
    if count < cap:
        return count, None  # under the limit: when the oldest send ages out does not matter
    oldest = conn.execute("SELECT MIN(created_at) FROM outbound WHERE mailbox_id = ? AND created_at >= ?",
                          (mailbox_id, since)).fetchone()[0]
    return count, oldest


_QUEUE_COLUMNS = ("q.*, o.queue_id, o.sender, o.message_id, o.spool, o.mailbox_id, o.subject, "
                  "o.created_at AS submitted_at")


def due(conn: sqlite3.Connection, now: float, limit: int, domain: str | None = None) -> list[Row]:
    """Recipient rows waiting for an attempt, oldest due first (only `domain`'s when given)."""
    where, args = "", [now]
    if domain is not None:
        where = " AND q.domain = ?"
        args.append(domain)
    rows = conn.execute(
        f"SELECT {_QUEUE_COLUMNS} FROM queue q JOIN outbound o ON o.id = q.outbound_id "
        f"WHERE q.state IN ('queued', 'deferred') AND q.next_attempt_at <= ?{where} "
        "ORDER BY q.next_attempt_at, q.id LIMIT ?", (*args, limit))
    return [dict(r) for r in rows]


def due_domains(conn: sqlite3.Connection, now: float) -> list[tuple[str, int]]:
    """Each destination domain with due recipient rows and how many, the longest waiting first."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT domain, COUNT(*) FROM queue WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ? "
        "GROUP BY domain ORDER BY MIN(next_attempt_at)", (now,))]


def next_due_at(conn: sqlite3.Connection) -> float | None:
    return conn.execute("SELECT MIN(next_attempt_at) FROM queue WHERE state IN ('queued', 'deferred')"
                        ).fetchone()[0]


def list_queue(conn: sqlite3.Connection, mailbox_id: str | None = None, limit: int = 500) -> list[Row]:
    sql = f"SELECT {_QUEUE_COLUMNS} FROM queue q JOIN outbound o ON o.id = q.outbound_id"
    args: list[Any] = []
    if mailbox_id is not None:
        sql += " WHERE o.mailbox_id = ?"
        args.append(mailbox_id)
    sql += " ORDER BY o.created_at DESC, q.id LIMIT ?"
    args.append(limit)
    return [dict(r) for r in conn.execute(sql, args)]


def get_queue_row(conn: sqlite3.Connection, row_id: str) -> Row | None:
    row = conn.execute(f"SELECT {_QUEUE_COLUMNS} FROM queue q JOIN outbound o ON o.id = q.outbound_id "
                       "WHERE q.id = ?", (row_id,)).fetchone()
    return dict(row) if row else None


def queue_rows_of(conn: sqlite3.Connection, outbound_id: str) -> list[Row]:
    return [dict(r) for r in conn.execute("SELECT * FROM queue WHERE outbound_id = ? ORDER BY id", (outbound_id,))]


def record_attempt(conn: sqlite3.Connection, row: Row, *, outcome: str, mx_host: str | None, ip: str | None,
                   tls: str | None, code: int | None, response: str | None) -> None:
    conn.execute(
        "INSERT INTO delivery_attempts (queue_row_id, outbound_id, attempted_at, mx_host, ip, tls, code, "
        "response, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row["id"], row["outbound_id"], now_iso(), mx_host, ip, tls, code, response, outcome))


def attempts(conn: sqlite3.Connection, outbound_id: str) -> list[Row]:
    rows = conn.execute(
        "SELECT a.*, q.recipient FROM delivery_attempts a JOIN queue q ON q.id = a.queue_row_id "
        "WHERE a.outbound_id = ? ORDER BY a.id", (outbound_id,))
    return [dict(r) for r in rows]


def set_state(conn: sqlite3.Connection, row_id: str, state: str, *, next_attempt_at: float | None = None,
              code: int | None = None, error: str | None = None, count_attempt: bool = False) -> None:
    sets = ["state = ?", "updated_at = ?"]
    args: list[Any] = [state, now_iso()]
    if next_attempt_at is not None:
        sets.append("next_attempt_at = ?")
        args.append(next_attempt_at)
    if code is not None or error is not None:
        sets += ["last_code = ?", "last_error = ?"]
        args += [code, error]
    if count_attempt:
        sets.append("attempts = attempts + 1")
    conn.execute(f"UPDATE queue SET {', '.join(sets)} WHERE id = ?", (*args, row_id))


def refresh_outbound(conn: sqlite3.Connection, outbound_id: str) -> Row | None:
    """Derive the message's state from its recipients' states; returns the outbound row."""
    rows = conn.execute("SELECT state, last_error FROM queue WHERE outbound_id = ? ORDER BY id",
                        (outbound_id,)).fetchall()
    states = [r["state"] for r in rows]
    errors = [r["last_error"] for r in rows if r["last_error"]]
    if not states or all(s == "delivered" for s in states):
        state = "sent"
    elif any(s == "held" for s in states):
        state = "held"
    elif any(s in PENDING for s in states):
        state = "deferred" if any(s == "deferred" for s in states) else "queued"
    elif all(s == "bounced" for s in states):
        state = "bounced"
    else:
        state = "failed"  # some delivered, some bounced
    sent_at = now_iso() if state == "sent" else None
    conn.execute("UPDATE outbound SET state = ?, error = ?, sent_at = COALESCE(sent_at, ?) WHERE id = ?",
                 (state, errors[-1] if errors and state != "sent" else None, sent_at, outbound_id))
    return get_outbound(conn, outbound_id)


def release_spool(conn: sqlite3.Connection, outbound_id: str) -> None:
    """A finished message no longer needs its spool file: forget it (the caller removes the file)."""
    conn.execute("UPDATE outbound SET spool = NULL WHERE id = ?", (outbound_id,))


def delete_outbound(conn: sqlite3.Connection, outbound_id: str) -> None:
    conn.execute("DELETE FROM outbound WHERE id = ?", (outbound_id,))


def queue_depth(conn: sqlite3.Connection) -> tuple[int, str | None]:
    row = conn.execute("SELECT COUNT(*), MIN(o.created_at) FROM queue q JOIN outbound o ON o.id = q.outbound_id "
                       "WHERE q.state IN ('queued', 'deferred', 'held')").fetchone()
    return row[0], row[1]


def find_outbound(conn: sqlite3.Connection, ident: str) -> Row | None:
    """An outbound message by its id (`out_…`), queue id, or one of its recipient rows' ids."""
    row = conn.execute("SELECT id FROM outbound WHERE id = ? OR queue_id = ?", (ident, ident.upper())).fetchone()
    if row is None:
        row = conn.execute("SELECT outbound_id FROM queue WHERE id = ?", (ident.upper(),)).fetchone()
    return get_outbound(conn, row[0]) if row else None


def reschedule(conn: sqlite3.Connection, outbound_id: str, from_states: tuple[str, ...], to_state: str,
               when: float | None) -> int:
    """Move the message's recipients in `from_states` to `to_state` (due at `when`)."""
    marks = ",".join("?" * len(from_states))
    args: list[Any] = [to_state, now_iso()]
    sql = "UPDATE queue SET state = ?, updated_at = ?"
    if when is not None:
        sql += ", next_attempt_at = ?"
        args.append(when)
    sql += f" WHERE outbound_id = ? AND state IN ({marks})"
    changed = conn.execute(sql, (*args, outbound_id, *from_states)).rowcount
    refresh_outbound(conn, outbound_id)
    return changed


def cancel(conn: sqlite3.Connection, outbound_id: str) -> str | None:
    """Drop the message's undelivered recipients; returns the spool file to remove."""
    conn.execute("DELETE FROM queue WHERE outbound_id = ? AND state IN ('queued', 'deferred', 'held')",
                 (outbound_id,))
    spool = conn.execute("SELECT spool FROM outbound WHERE id = ?", (outbound_id,)).fetchone()[0]
    conn.execute("UPDATE outbound SET state = 'failed', error = 'deleted from the queue by an administrator', "
                 "spool = NULL WHERE id = ?", (outbound_id,))
    return spool


def states_of_sent_copies(conn: sqlite3.Connection, message_ids: list[str]) -> dict[str, str]:
    """The outbound state of each Sent-folder copy among `message_ids` (those that have one)."""
    if not message_ids:
        return {}
    rows = conn.execute("SELECT sent_copy_id, state FROM outbound WHERE sent_copy_id IN (%s)"
                        % ",".join("?" * len(message_ids)), message_ids)
    return {r[0]: r[1] for r in rows}
