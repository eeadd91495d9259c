"""Domains, mailboxes, aliases and API keys. Functions take a connection first."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..util import new_id, now_iso
from .maildir import DEFAULT_FOLDERS
from .messages import add_event, create_folder

Row = dict[str, Any]


def _one(cur: sqlite3.Cursor) -> Row | None:
    row = cur.fetchone()
    return dict(row) if row is not None else None


def _all(cur: sqlite3.Cursor) -> list[Row]:
    return [dict(row) for row in cur.fetchall()]


# ---- domains ---------------------------------------------------------------

def get_domain(conn: sqlite3.Connection, name: str) -> Row | None:
    return _one(conn.execute("SELECT * FROM domains WHERE name = ?", (name,)))


def list_domains(conn: sqlite3.Connection) -> list[Row]:
    return _all(conn.execute("SELECT * FROM domains ORDER BY name"))


def insert_domain(conn: sqlite3.Connection, name: str, selector: str, private_key: str) -> Row:
    """Insert a domain unless it exists; returns the row either way."""
    existing = get_domain(conn, name)
    if existing:
        return existing
    domain_id = new_id("dom")
    conn.execute(
        "INSERT INTO domains (id, name, dkim_selector, dkim_private_key, created_at) VALUES (?, ?, ?, ?, ?)",
        (domain_id, name, selector, private_key, now_iso()),
    )
    return get_domain(conn, name)  # type: ignore[return-value]


def get_domain_by_id(conn: sqlite3.Connection, domain_id: str) -> Row | None:
    return _one(conn.execute("SELECT * FROM domains WHERE id = ?", (domain_id,)))


def update_domain(conn: sqlite3.Connection, domain_id: str, **changes: Any) -> Row | None:
    """Change verification state or options; `updated_at` follows every change."""
    allowed = {"status", "verified_at", "feedback_enabled", "dns_records", "checked_at"}
    sets = {k: v for k, v in changes.items() if k in allowed}
    sets["updated_at"] = now_iso()
    conn.execute(f"UPDATE domains SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                 (*sets.values(), domain_id))
    return get_domain_by_id(conn, domain_id)


def domain_usage(conn: sqlite3.Connection, domain_id: str, name: str) -> tuple[int, int]:
    """(mailboxes, aliases) on a domain."""
    mailboxes = conn.execute("SELECT COUNT(*) FROM mailboxes WHERE domain_id = ?", (domain_id,)).fetchone()[0]
    aliases = conn.execute("SELECT COUNT(*) FROM aliases WHERE source = ? OR source LIKE ?",
                           (f"@{name}", f"%@{name}")).fetchone()[0]
    return mailboxes, aliases


def delete_domain(conn: sqlite3.Connection, domain_id: str) -> bool:
    return conn.execute("DELETE FROM domains WHERE id = ?", (domain_id,)).rowcount > 0


def count_domains(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM domains").fetchone()[0]


def server_secret(conn: sqlite3.Connection, name: str, candidate: str) -> str:
    """The secret called `name`, stored as `candidate` on first use (run it as a write)."""
    conn.execute("INSERT OR IGNORE INTO server_secrets (name, value, created_at) VALUES (?, ?, ?)",
                 (name, candidate, now_iso()))
    return conn.execute("SELECT value FROM server_secrets WHERE name = ?", (name,)).fetchone()[0]


# ---- mailboxes -------------------------------------------------------------

_MAILBOX_COLUMNS = (
    "m.id, m.address, m.local_part, d.name AS domain, m.display_name, m.quota_bytes, "
    "m.used_bytes, m.active, m.created_at, m.external_id, m.client_id, COALESCE(m.updated_at, m.created_at) "
    "AS updated_at"
)


def get_mailbox(conn: sqlite3.Connection, address: str) -> Row | None:
    return _one(conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes m JOIN domains d ON d.id = m.domain_id "
        "WHERE m.address = ?", (address,)))


def get_mailbox_by_id(conn: sqlite3.Connection, mailbox_id: str) -> Row | None:
    return _one(conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes m JOIN domains d ON d.id = m.domain_id "
        "WHERE m.id = ?", (mailbox_id,)))


def get_password_hash(conn: sqlite3.Connection, address: str) -> Row | None:
    return _one(conn.execute(
        "SELECT id, address, password_hash, active FROM mailboxes WHERE address = ?", (address,)))


def list_mailboxes(conn: sqlite3.Connection) -> list[Row]:
    return _all(conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes m JOIN domains d ON d.id = m.domain_id "
        "ORDER BY m.address"))


def insert_mailbox(conn: sqlite3.Connection, *, address: str, local_part: str, domain_id: str,
                   password_hash: str, quota_bytes: int, display_name: str = "", external_id: str | None = None,
                   client_id: str | None = None) -> Row:
    mailbox_id = new_id("mbx")
    conn.execute(
        "INSERT INTO mailboxes (id, address, local_part, domain_id, password_hash, display_name, "
        "quota_bytes, created_at, external_id, client_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (mailbox_id, address, local_part, domain_id, password_hash, display_name, quota_bytes, now_iso(),
         external_id, client_id),
    )
    for folder, special_use in DEFAULT_FOLDERS.items():
        create_folder(conn, mailbox_id, folder, special_use)
    add_event(conn, "mailbox.created", mailbox_id, {"mailbox_id": mailbox_id, "address": address})
    return get_mailbox_by_id(conn, mailbox_id)  # type: ignore[return-value]


def update_mailbox(conn: sqlite3.Connection, mailbox_id: str, **changes: Any) -> Row | None:
    allowed = {"display_name", "quota_bytes", "active", "password_hash"}
    sets = {k: v for k, v in changes.items() if k in allowed and v is not None}
    if sets:
        sets["updated_at"] = now_iso()
        assignments = ", ".join(f"{k} = ?" for k in sets)
        conn.execute(f"UPDATE mailboxes SET {assignments} WHERE id = ?", (*sets.values(), mailbox_id))
    return get_mailbox_by_id(conn, mailbox_id)


def page_mailboxes(conn: sqlite3.Connection, limit: int, offset: int, mailbox_id: str | None = None,
                   external_id: str | None = None) -> tuple[list[Row], int]:
    """One page of mailboxes (oldest first) and the total; optionally just one id or external id."""
    where, args = [], []
    if mailbox_id is not None:
        where.append("m.id = ?")
        args.append(mailbox_id)
    if external_id is not None:
        where.append("m.external_id = ?")
        args.append(external_id)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = conn.execute(f"SELECT COUNT(*) FROM mailboxes m{clause}", args).fetchone()[0]
    rows = _all(conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes m JOIN domains d ON d.id = m.domain_id{clause} "
        "ORDER BY m.created_at, m.id LIMIT ? OFFSET ?", (*args, limit, offset)))
    return rows, total


def delete_mailbox(conn: sqlite3.Connection, mailbox_id: str) -> bool:
    row = get_mailbox_by_id(conn, mailbox_id)
    if row is None:
        return False
    conn.execute("DELETE FROM messages WHERE mailbox_id = ?", (mailbox_id,))
    conn.execute("DELETE FROM threads WHERE mailbox_id = ?", (mailbox_id,))
    conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
    add_event(conn, "mailbox.deleted", mailbox_id, {"mailbox_id": mailbox_id, "address": row["address"]})
    return True


# ---- aliases ---------------------------------------------------------------

def get_alias(conn: sqlite3.Connection, source: str) -> Row | None:
    return _one(conn.execute("SELECT * FROM aliases WHERE source = ?", (source,)))


def list_aliases(conn: sqlite3.Connection) -> list[Row]:
    return _all(conn.execute("SELECT * FROM aliases ORDER BY source"))


def insert_alias(conn: sqlite3.Connection, source: str, destination: str) -> Row:
    alias_id = new_id("als")
    conn.execute("INSERT INTO aliases (id, source, destination, created_at) VALUES (?, ?, ?, ?)",
                 (alias_id, source, destination, now_iso()))
    return get_alias(conn, source)  # type: ignore[return-value]


def delete_alias(conn: sqlite3.Connection, source: str) -> bool:
    return conn.execute("DELETE FROM aliases WHERE source = ?", (source,)).rowcount > 0


# ---- API keys --------------------------------------------------------------

_KEY_COLUMNS = "k.id, k.prefix, k.name, k.mailbox_id, m.address, k.scopes, k.created_at, k.revoked_at, k.last_used_at"


def insert_key(conn: sqlite3.Connection, *, key_hash: str, prefix: str, scopes: list[str],
               mailbox_id: str | None, name: str = "") -> Row:
    key_id = new_id("key")
    conn.execute(
        "INSERT INTO api_keys (id, key_hash, prefix, name, mailbox_id, scopes, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key_id, key_hash, prefix, name, mailbox_id, " ".join(scopes), now_iso()),
    )
    return get_key(conn, key_id)  # type: ignore[return-value]


def get_key(conn: sqlite3.Connection, key_id: str) -> Row | None:
    return _one(conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k LEFT JOIN mailboxes m ON m.id = k.mailbox_id "
        "WHERE k.id = ?", (key_id,)))


def find_key(conn: sqlite3.Connection, key_hash: str) -> Row | None:
    """An active key by its hash (indexed lookup, never a scan)."""
    return _one(conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k LEFT JOIN mailboxes m ON m.id = k.mailbox_id "
        "WHERE k.key_hash = ? AND k.revoked_at IS NULL", (key_hash,)))


def list_keys(conn: sqlite3.Connection, mailbox_id: str | None = None) -> list[Row]:
    sql = f"SELECT {_KEY_COLUMNS} FROM api_keys k LEFT JOIN mailboxes m ON m.id = k.mailbox_id"
    if mailbox_id is not None:
        return _all(conn.execute(sql + " WHERE k.mailbox_id = ? ORDER BY k.created_at", (mailbox_id,)))
    return _all(conn.execute(sql + " ORDER BY k.created_at"))


def key_hash(conn: sqlite3.Connection, key_id: str) -> str | None:
    row = conn.execute("SELECT key_hash FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return row[0] if row else None


def revoke_key(conn: sqlite3.Connection, key_id: str) -> bool:
    return conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                        (now_iso(), key_id)).rowcount > 0


def count_admin_keys(conn: sqlite3.Connection) -> int:
    return conn.execute(
        "SELECT COUNT(*) FROM api_keys WHERE mailbox_id IS NULL AND revoked_at IS NULL").fetchone()[0]


def organization_stats(conn: sqlite3.Connection) -> Row:
    """Counts and the first and latest change dates of everything the server hosts."""
    mailboxes, first_mailbox, last_mailbox = conn.execute(
        "SELECT COUNT(*), MIN(created_at), MAX(COALESCE(updated_at, created_at)) FROM mailboxes").fetchone()
    domains, first_domain, last_domain = conn.execute(
        "SELECT COUNT(*), MIN(created_at), MAX(COALESCE(updated_at, created_at)) FROM domains").fetchone()
    firsts = [d for d in (first_mailbox, first_domain) if d]
    lasts = [d for d in (last_mailbox, last_domain) if d]
    return {"mailboxes": mailboxes, "domains": domains, "created_at": min(firsts) if firsts else None,
            "updated_at": max(lasts) if lasts else None}
