"""One error type for every front door.

`MailError` knows its machine-readable code, its HTTP status and its SMTP reply
(code + RFC 3463 enhanced status code), so `core` raises one thing and each
protocol adapter formats it.
"""

from __future__ import annotations

import errno
import sqlite3


class MailError(Exception):
    def __init__(
        self,
        error: str,
        message: str,
        *,
        http_status: int = 400,
        smtp: tuple[int, str] = (550, "5.0.0"),
        fix: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.http_status = http_status
        self.smtp_code, self.smtp_enhanced = smtp
        self.fix = fix
        self.retry_after = retry_after

    @property
    def temporary(self) -> bool:
        return 400 <= self.smtp_code < 500

    def smtp_reply(self) -> str:
        return f"{self.smtp_code} {self.smtp_enhanced} {self.message}"

    def as_json(self) -> dict[str, str]:
        body = {"error": self.error, "message": self.message}
        if self.fix:
            body["fix"] = self.fix
        return body


def invalid_address(message: str) -> MailError:
    # RFC 5321 §4.5.3.1 limits and RFC 3463 5.1.3 "bad destination mailbox address syntax".
    return MailError("invalid_address", message, http_status=422, smtp=(501, "5.1.3"))


def not_found(what: str) -> MailError:
    return MailError("not_found", f"{what} not found", http_status=404, smtp=(550, "5.1.1"))


def conflict(message: str) -> MailError:
    return MailError("conflict", message, http_status=409, smtp=(550, "5.0.0"))


def storage_exhausted(exc: BaseException) -> bool:
    """Whether an exception means the disk (or quota) is full: ENOSPC, or SQLite saying so."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


def storage_full(message: str = "insufficient storage on the server") -> MailError:
    # RFC 3463 4.3.1 "mail system full"; HTTP 507 Insufficient Storage.
    return MailError("storage_full", message, http_status=507, smtp=(452, "4.3.1"))
