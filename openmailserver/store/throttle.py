"""Failed-login throttling per client address, for every listener of every worker and node.

After `limit` failures from one IP within `window` seconds, that IP is refused (SMTP
`421 4.7.0`, IMAP `NO [UNAVAILABLE]`) for `block` seconds without its password even
being checked, so guessing costs the attacker time and costs us no hashing. The counts
live in the index (`auth_failures`), so 1,000 wrong passwords spread over every worker
and protocol still block the address. Each process also remembers the blocks it has
seen, so that a blocked address is refused at connect time without a query.
"""

from __future__ import annotations

import sqlite3
import time

from .db import AsyncDatabase

PRUNE_EVERY = 256  # failures between two sweeps of expired rows


def failure_of(conn: sqlite3.Connection, ip: str, now: float, window: float, limit: int, block: float) -> float:
    """Count one failure; the time until which `ip` is blocked (0: it is not)."""
    failures, blocked_until = conn.execute(
        "INSERT INTO auth_failures (ip, failures, window_start) VALUES (?, 1, ?) ON CONFLICT (ip) DO UPDATE SET "
        "failures = CASE WHEN auth_failures.window_start < ? THEN 1 ELSE auth_failures.failures + 1 END, "
        "window_start = CASE WHEN auth_failures.window_start < ? THEN ? ELSE auth_failures.window_start END "
        "RETURNING failures, blocked_until", (ip, now, now - window, now - window, now)).fetchone()
    if failures >= limit:
        blocked_until = now + block
        conn.execute("UPDATE auth_failures SET failures = 0, window_start = ?, blocked_until = ? WHERE ip = ?",
                     (now, blocked_until, ip))
    return blocked_until if blocked_until > now else 0.0


def blocked_until(conn: sqlite3.Connection, ip: str) -> float:
    row = conn.execute("SELECT blocked_until FROM auth_failures WHERE ip = ?", (ip,)).fetchone()
    return row[0] if row else 0.0


def forget(conn: sqlite3.Connection, ip: str, now: float) -> None:
    """A successful login clears the address's failures (not a block in force)."""
    conn.execute("DELETE FROM auth_failures WHERE ip = ? AND blocked_until < ?", (ip, now))


def prune(conn: sqlite3.Connection, now: float, window: float) -> None:
    conn.execute("DELETE FROM auth_failures WHERE window_start < ? AND blocked_until < ?", (now - window, now))


class AuthThrottle:
    def __init__(self, adb: AsyncDatabase, limit: int, window: float, block: float) -> None:
        self.adb = adb
        self.limit, self.window, self.block = limit, window, block
        self._seen: dict[str, float] = {}  # blocks this process learned of: ip -> until (wall clock)
        self._failures = 0

    def known_blocked(self, ip: str) -> float:
        """Seconds `ip` stays blocked, as far as this process knows (no query)."""
        until = self._seen.get(ip)
        if until is None:
            return 0.0
        remaining = until - time.time()
        if remaining <= 0:
            del self._seen[ip]
            return 0.0
        return remaining

    async def blocked(self, ip: str) -> float:
        """Seconds `ip` stays blocked (0 when it may try), as the index has it."""
        until = await self.adb.read(blocked_until, ip)
        if until > time.time():
            self._remember(ip, until)
        return max(0.0, until - time.time())

    async def failure(self, ip: str) -> None:
        now = time.time()
        until = await self.adb.write(failure_of, ip, now, self.window, self.limit, self.block)
        if until:
            self._remember(ip, until)
        self._failures += 1
        if self._failures % PRUNE_EVERY == 0:
            await self.adb.write(prune, now, self.window)

    async def success(self, ip: str) -> None:
        await self.adb.write(forget, ip, time.time())

    def _remember(self, ip: str, until: float) -> None:
        if len(self._seen) >= 100_000:  # bound memory under a distributed attack
            self._seen.pop(next(iter(self._seen)))
        self._seen[ip] = until
