"""`Idempotency-Key` records of sending requests, kept for 24 hours.

A key is reserved (`state = 'pending'`, with the reserving process as `holder`) before the
request runs, in its own transaction, so that two requests with one key, in any worker or
node, cannot both send. The send's transaction turns the reservation into the stored answer
(`store`); a request that ends without sending gives its reservation up (`release`). A
reservation whose holder died is taken over: at once when the holder was a process on this
machine, else once it is older than PENDING_STALE.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from .leases import holder_alive

TTL = 24 * 3600
PENDING_STALE = 300.0


def reserve(conn: sqlite3.Connection, owner: str, key: str, request_hash: str,
            holder: str) -> tuple[str, dict[str, Any] | None]:
    """("reserved", None), ("pending", None) while another request holds the key, or
    ("done", {request_hash, status, response}) for a request that completed."""
    now = time.time()
    row = conn.execute("SELECT request_hash, status, response, created_at, state, holder FROM idempotency "
                       "WHERE owner = ? AND key = ? AND created_at > ?", (owner, key, now - TTL)).fetchone()
    if row is not None:
        if row[4] == "done":
            return "done", {"request_hash": row[0], "status": row[1], "response": json.loads(row[2])}
        if row[3] > now - PENDING_STALE and holder_alive(row[5]):
            return "pending", {"request_hash": row[0]}
    conn.execute("DELETE FROM idempotency WHERE created_at <= ?", (now - TTL,))
    conn.execute("INSERT OR REPLACE INTO idempotency (owner, key, request_hash, status, response, created_at, state, "
                 "holder) VALUES (?, ?, ?, 0, '{}', ?, 'pending', ?)", (owner, key, request_hash, now, holder))
    return "reserved", None


def store(conn: sqlite3.Connection, owner: str, key: str, request_hash: str, status: int,
          response: dict[str, Any]) -> None:
    """The answer of the request holding the reservation, in its send's transaction."""
    conn.execute("INSERT OR REPLACE INTO idempotency (owner, key, request_hash, status, response, created_at, state) "
                 "VALUES (?, ?, ?, ?, ?, ?, 'done')", (owner, key, request_hash, status, json.dumps(response),
                                                        time.time()))


def release(conn: sqlite3.Connection, owner: str, key: str, holder: str) -> None:
    conn.execute("DELETE FROM idempotency WHERE owner = ? AND key = ? AND state = 'pending' AND holder = ?",
                 (owner, key, holder))
