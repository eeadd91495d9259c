"""Stored responses of idempotent requests (`Idempotency-Key`), kept for 24 hours."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

TTL = 24 * 3600


def lookup(conn: sqlite3.Connection, owner: str, key: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT request_hash, status, response FROM idempotency "
                       "WHERE owner = ? AND key = ? AND created_at > ?", (owner, key, time.time() - TTL)).fetchone()
    if row is None:
        return None
    return {"request_hash": row[0], "status": row[1], "response": json.loads(row[2])}


def store(conn: sqlite3.Connection, owner: str, key: str, request_hash: str, status: int,
          response: dict[str, Any]) -> None:
    conn.execute("DELETE FROM idempotency WHERE created_at <= ?", (time.time() - TTL,))
    conn.execute("INSERT OR REPLACE INTO idempotency (owner, key, request_hash, status, response, created_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (owner, key, request_hash, status, json.dumps(response), time.time()))
