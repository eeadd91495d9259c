"""Webhook endpoints, their deliveries (one per event and endpoint) and every attempt."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..util import new_id, now_iso

Row = dict[str, Any]
PAGE = 500


def _hook(row: sqlite3.Row | None) -> Row | None:
    if row is None:
        return None
    item = dict(row)
    item["event_types"] = item["event_types"].split() if item["event_types"] else []
    item["inbox_ids"] = item["inbox_ids"].split() if item["inbox_ids"] else []
    item["enabled"] = bool(item["enabled"])
    return item


def insert(conn: sqlite3.Connection, *, mailbox_id: str | None, url: str, event_types: list[str],
           inbox_ids: list[str], enabled: bool, secret: str, client_id: str | None = None) -> Row:
    hook_id = new_id("whk")
    conn.execute(
        "INSERT INTO webhooks (id, mailbox_id, url, event_types, inbox_ids, enabled, secret, created_at, "
        "client_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (hook_id, mailbox_id, url, " ".join(event_types), " ".join(inbox_ids), int(enabled), secret, now_iso(),
         client_id))
    return get(conn, hook_id)  # type: ignore[return-value]


def get(conn: sqlite3.Connection, hook_id: str) -> Row | None:
    return _hook(conn.execute("SELECT * FROM webhooks WHERE id = ?", (hook_id,)).fetchone())


def list_hooks(conn: sqlite3.Connection, mailbox_id: str | None = None) -> list[Row]:
    if mailbox_id is None:
        rows = conn.execute("SELECT * FROM webhooks ORDER BY created_at")
    else:
        rows = conn.execute("SELECT * FROM webhooks WHERE mailbox_id = ? ORDER BY created_at", (mailbox_id,))
    return [_hook(r) for r in rows]  # type: ignore[misc]


def update(conn: sqlite3.Connection, hook_id: str, **changes: Any) -> Row | None:
    columns = {"url", "event_types", "inbox_ids", "enabled", "secret", "old_secret", "old_secret_expires_at",
               "failing_since", "disabled_reason", "client_id", "updated_at"}
    sets = {}
    for name, value in changes.items():
        if name not in columns:
            continue
        if name in ("event_types", "inbox_ids"):
            value = " ".join(value)
        elif name == "enabled":
            value = int(value)
        sets[name] = value
    if sets:
        conn.execute(f"UPDATE webhooks SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                     (*sets.values(), hook_id))
    return get(conn, hook_id)


def delete(conn: sqlite3.Connection, hook_id: str) -> bool:
    return conn.execute("DELETE FROM webhooks WHERE id = ?", (hook_id,)).rowcount > 0


# ---- fan-out from the event log --------------------------------------------

def fan_out(conn: sqlite3.Connection, now: float) -> int:
    """Create deliveries for the events after the cursor; advance it. Returns deliveries made."""
    cursor = conn.execute("SELECT seq FROM webhook_cursor WHERE id = 1").fetchone()[0]
    events = conn.execute("SELECT seq, event_id, type, mailbox_id FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                          (cursor, PAGE)).fetchall()
    if not events:
        return 0
    hooks = [h for h in list_hooks(conn) if h["enabled"]]
    made = 0
    for event in events:
        for hook in hooks:
            if hook["mailbox_id"] is not None and event["mailbox_id"] != hook["mailbox_id"]:
                continue  # a mailbox's webhook hears only its own mailbox
            if hook["inbox_ids"] and event["mailbox_id"] not in hook["inbox_ids"]:
                continue
            if hook["event_types"] and event["type"] not in hook["event_types"]:
                continue
            conn.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_seq, event_id, event_type, state, "
                "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (new_id("dlv"), hook["id"], event["seq"], event["event_id"], event["type"], now, now_iso()))
            made += 1
    conn.execute("UPDATE webhook_cursor SET seq = ? WHERE id = 1", (events[-1]["seq"],))
    return made


def due(conn: sqlite3.Connection, now: float, limit: int = 100) -> list[Row]:
    rows = conn.execute(
        "SELECT d.*, e.type, e.occurred_at, e.mailbox_id, e.payload FROM webhook_deliveries d "
        "JOIN events e ON e.seq = d.event_seq JOIN webhooks w ON w.id = d.webhook_id "
        "WHERE d.state = 'pending' AND d.next_attempt_at <= ? AND w.enabled = 1 "
        "ORDER BY d.next_attempt_at, d.event_seq LIMIT ?", (now, limit))
    return [dict(r) for r in rows]


def record_attempt(conn: sqlite3.Connection, delivery_id: str, *, status: int | None, error: str | None,
                   duration_ms: int, state: str, next_attempt_at: float | None) -> None:
    conn.execute("INSERT INTO webhook_attempts (delivery_id, attempted_at, status, error, duration_ms) "
                 "VALUES (?, ?, ?, ?, ?)", (delivery_id, now_iso(), status, error, duration_ms))
    conn.execute(
        "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, last_status = ?, last_error = ?, "
        "next_attempt_at = COALESCE(?, next_attempt_at), "
        "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END WHERE id = ?",
        (state, status, error, next_attempt_at, state, now_iso(), delivery_id))


def get_delivery(conn: sqlite3.Connection, delivery_id: str) -> Row | None:
    row = conn.execute("SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)).fetchone()
    return dict(row) if row else None


def list_deliveries(conn: sqlite3.Connection, hook_id: str, limit: int = 100) -> list[Row]:
    rows = [dict(r) for r in conn.execute(
        "SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY event_seq DESC, created_at DESC LIMIT ?",
        (hook_id, limit))]
    for row in rows:
        row["attempt_log"] = [dict(a) for a in conn.execute(
            "SELECT attempted_at, status, error, duration_ms FROM webhook_attempts WHERE delivery_id = ? ORDER BY id",
            (row["id"],))]
    return rows


def replay(conn: sqlite3.Connection, delivery_id: str, now: float) -> None:
    conn.execute("UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = ? WHERE id = ?",
                 (now, delivery_id))
