"""Leases: which process runs a service that must run once per daemon (the outbound queue,
the webhook dispatcher), so that exactly one does, whichever worker or node it is.

A holder keeps its lease by renewing it before it expires; another takes it over once it
has expired. Time is the database's clock reading of the holder (`time.time()`).
"""

from __future__ import annotations

import socket
import sqlite3
import time

from ..util import process_alive


def holder_name(pid: int) -> str:
    """Who holds a lease: this machine and a process on it."""
    return f"{socket.gethostname()}:{pid}"


def holder_alive(holder: str | None) -> bool:
    """Whether the holder may still run: a process of this machine that is alive, or any
    process of another machine (its lease or reservation times out instead)."""
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return process_alive(int(pid))


def acquire(conn: sqlite3.Connection, name: str, holder: str, seconds: float) -> bool:
    """Take or renew lease `name` for `seconds`; False while someone else holds it."""
    now = time.time()
    row = conn.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
        "WHERE leases.holder = excluded.holder OR leases.expires_at < ? RETURNING holder",
        (name, holder, now + seconds, now)).fetchone()
    return row is not None


def release(conn: sqlite3.Connection, name: str, holder: str) -> None:
    conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))


def release_all(conn: sqlite3.Connection, holder: str | None = None) -> None:
    """Every lease of `holder` (a process that died), or of this machine's processes."""
    if holder is None:
        conn.execute("DELETE FROM leases WHERE holder LIKE ?", (f"{socket.gethostname()}:%",))
    else:
        conn.execute("DELETE FROM leases WHERE holder = ?", (holder,))


def holders(conn: sqlite3.Connection) -> dict[str, tuple[str, float]]:
    return {name: (holder, expires) for name, holder, expires in
            conn.execute("SELECT name, holder, expires_at FROM leases")}
