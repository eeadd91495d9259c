"""Failed-login throttling per client IP, shared by SMTP AUTH and IMAP.

After `limit` failures from one IP within `window` seconds, that IP is refused
(SMTP `421 4.7.0`, IMAP `NO [UNAVAILABLE]`) for `block` seconds without its
password even being checked, so guessing costs the attacker time and costs us
no hashing.
"""

from __future__ import annotations

import time
from collections import deque


class AuthThrottle:
    def __init__(self, limit: int = 10, window: float = 300.0, block: float = 300.0) -> None:
        self.limit, self.window, self.block = limit, window, block
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def blocked(self, ip: str) -> float:
        """Seconds this IP remains blocked (0 when it may try)."""
        until = self._blocked_until.get(ip)
        if until is None:
            return 0.0
        remaining = until - time.monotonic()
        if remaining <= 0:
            del self._blocked_until[ip]
            return 0.0
        return remaining

    def failure(self, ip: str) -> None:
        now = time.monotonic()
        failures = self._failures.setdefault(ip, deque())
        failures.append(now)
        while failures and failures[0] < now - self.window:
            failures.popleft()
        if len(failures) >= self.limit:
            self._blocked_until[ip] = now + self.block
            failures.clear()
        if len(self._failures) > 100_000:  # bound memory under a distributed attack
            self._failures.pop(next(iter(self._failures)))

    def success(self, ip: str) -> None:
        self._failures.pop(ip, None)
