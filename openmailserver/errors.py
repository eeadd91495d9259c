"""One error type for every front door, and the registry of every error code.

`ErrorCode` lists each error the daemon reports with how every protocol says
it: the HTTP status, the SMTP reply code with its RFC 3463 enhanced status
code, and the IMAP response code (RFC 5530, or RFC 3501's TRYCREATE). Whether
it is temporary follows from the SMTP reply (4xx). `core` raises `MailError`
with a code; each protocol adapter formats it through `MailError`'s methods
and nothing else, so the same failure reads the same on every door.
"""

from __future__ import annotations

import enum
import errno
import sqlite3

# RFC 5530 §3 response codes, and TRYCREATE (RFC 3501 §7.1).
IMAP_CODES = frozenset({
    "UNAVAILABLE", "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED",
    "CONTACTADMIN", "NOPERM", "INUSE", "EXPUNGEISSUED", "CORRUPTION", "SERVERBUG", "CLIENTBUG",
    "CANNOT", "LIMIT", "OVERQUOTA", "ALREADYEXISTS", "NONEXISTENT", "TRYCREATE",
})


class ErrorCode(enum.Enum):
    """Every error code: (HTTP status, SMTP code, enhanced status code, IMAP code)."""

    # The request cannot be read.
    BAD_REQUEST = (400, 500, "5.5.2", "CLIENTBUG")
    INVALID_JSON = (400, 501, "5.5.2", "CLIENTBUG")
    INVALID_FORM = (400, 501, "5.5.2", "CLIENTBUG")
    MISSING_IDEMPOTENCY_KEY = (400, 501, "5.5.4", "CLIENTBUG")
    INVALID_IDEMPOTENCY_KEY = (400, 501, "5.5.4", "CLIENTBUG")
    METHOD_NOT_ALLOWED = (405, 502, "5.5.1", "CLIENTBUG")
    PAYLOAD_TOO_LARGE = (413, 552, "5.3.4", "LIMIT")  # RFC 3463: message too big for system
    # A field of the request has a value we cannot use.
    INVALID_REQUEST = (422, 501, "5.5.4", "CLIENTBUG")
    INVALID_LIMIT = (422, 501, "5.5.4", "CLIENTBUG")
    INVALID_CURSOR = (422, 501, "5.5.4", "CLIENTBUG")
    INVALID_LEVEL = (422, 501, "5.5.4", "CLIENTBUG")
    INVALID_ADDRESS = (422, 501, "5.1.3", "CLIENTBUG")  # RFC 3463: bad destination mailbox address syntax
    INVALID_DOMAIN = (422, 501, "5.1.2", "CLIENTBUG")
    INVALID_URL = (422, 501, "5.5.4", "CLIENTBUG")
    INVALID_ATTACHMENT_URL = (422, 501, "5.5.4", "CLIENTBUG")
    # ... a field of an account or a message.
    INVALID_ACTIVE = (422, 501, "5.5.4", "CLIENTBUG")
    INVALID_DISPLAY_NAME = (422, 501, "5.5.4", "CLIENTBUG")
    INVALID_PASSWORD = (422, 501, "5.5.4", "CLIENTBUG")
    WEAK_PASSWORD = (422, 550, "5.7.0", "CANNOT")
    INVALID_QUOTA = (422, 501, "5.5.4", "CLIENTBUG")
    INVALID_LABEL = (422, 501, "5.5.4", "CLIENTBUG")
    # What the request asks for cannot be done with that content.
    MISSING_FROM = (422, 550, "5.6.0", "CLIENTBUG")
    NO_RECIPIENTS = (422, 554, "5.5.1", "CLIENTBUG")
    LOOP_GUARD = (422, 550, "5.4.6", "CANNOT")  # RFC 3463: routing loop detected
    ALIAS_LOOP = (422, 550, "5.4.6", "CANNOT")
    ATTACHMENT_FETCH_FAILED = (422, 550, "5.4.4", "CANNOT")
    INVALID_BACKUP = (422, 554, "5.6.0", "CORRUPTION")
    # Who is asking, and what they may do.
    UNAUTHORIZED = (401, 530, "5.7.0", "AUTHENTICATIONFAILED")  # RFC 4954 §6: authentication required
    FORBIDDEN = (403, 550, "5.7.1", "NOPERM")
    URL_EXPIRED = (403, 550, "5.7.1", "EXPIRED")
    SENDER_NOT_ALLOWED = (403, 553, "5.7.1", "NOPERM")
    MAILBOX_DISABLED = (403, 550, "5.7.1", "CONTACTADMIN")
    # What the request names does not exist.
    NOT_FOUND = (404, 550, "5.1.1", "NONEXISTENT")
    UNKNOWN_DOMAIN = (422, 550, "5.1.2", "NONEXISTENT")
    UNKNOWN_FOLDER = (422, 550, "5.1.1", "TRYCREATE")
    UNKNOWN_RECIPIENT = (422, 550, "5.1.1", "NONEXISTENT")
    UNKNOWN_DESTINATION = (422, 550, "5.1.1", "NONEXISTENT")
    # Something already there is in the way.
    CONFLICT = (409, 550, "5.0.0", "ALREADYEXISTS")
    DATA_DIR_NOT_EMPTY = (409, 550, "5.0.0", "ALREADYEXISTS")
    DOMAIN_IN_USE = (409, 550, "5.0.0", "INUSE")
    DAEMON_RUNNING = (409, 550, "5.0.0", "INUSE")
    NOTHING_TO_DO = (409, 550, "5.0.0", "CANNOT")
    IDEMPOTENCY_CONFLICT = (409, 550, "5.0.0", "CLIENTBUG")
    IDEMPOTENCY_IN_PROGRESS = (409, 451, "4.3.0", "INUSE")
    FOLDER_CHANGED = (409, 451, "4.3.0", "UNAVAILABLE")
    # The server is not set up for it.
    NOT_INITIALISED = (409, 550, "5.3.5", "CONTACTADMIN")  # RFC 3463: system incorrectly configured
    BACKUP_KEY_MISSING = (409, 550, "5.3.5", "CONTACTADMIN")
    # Limits; try again later.
    RATE_LIMITED = (429, 450, "4.7.1", "LIMIT")
    MAILBOX_FULL = (422, 452, "4.2.2", "OVERQUOTA")  # RFC 3463: mailbox full
    STORAGE_FULL = (507, 452, "4.3.1", "OVERQUOTA")  # RFC 3463: mail system full; HTTP 507
    DELIVERY_FAILED = (503, 451, "4.3.0", "UNAVAILABLE")
    INTERNAL_ERROR = (500, 451, "4.3.0", "SERVERBUG")
    HTTP_ERROR = (400, 500, "5.0.0", "CLIENTBUG")  # another HTTP-level refusal, with its own status

    def __new__(cls, *spec: object) -> "ErrorCode":
        # Numbered in order, so members that read alike stay distinct (not aliases of each other).
        member = object.__new__(cls)
        member._value_ = len(cls.__members__) + 1
        return member

    def __init__(self, http_status: int, smtp_code: int, enhanced: str, imap_code: str) -> None:
        self.http_status = http_status
        self.smtp_code = smtp_code
        self.enhanced = enhanced
        self.imap_code = imap_code

    @property
    def wire(self) -> str:
        """The code as JSON carries it: `invalid_request`."""
        return self.name.lower()

    @property
    def temporary(self) -> bool:
        return self.smtp_code // 100 == 4


class MailError(Exception):
    def __init__(self, code: ErrorCode, message: str, *, fix: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fix = fix
        self.retry_after = retry_after
        self.http_status = code.http_status

    @property
    def error(self) -> str:
        return self.code.wire

    @property
    def temporary(self) -> bool:
        return self.code.temporary

    def answered_with(self, http_status: int) -> "MailError":
        """The same error under another HTTP status, for an API dialect whose contract names one
        (OpenMail's send answers 400 where the native API says 422)."""
        self.http_status = http_status
        return self

    def smtp_reply(self) -> str:
        return f"{self.code.smtp_code} {self.code.enhanced} {self.message}"

    def imap_status(self) -> str:
        """The tagged NO of an IMAP command that failed with this error."""
        return f"NO [{self.code.imap_code}] {self.message}"

    def as_json(self) -> dict[str, str]:
        body = {"error": self.error, "message": self.message}
        if self.fix:
            body["fix"] = self.fix
        return body


def invalid_address(message: str) -> MailError:
    # RFC 5321 §4.5.3.1 limits and RFC 3463 5.1.3 "bad destination mailbox address syntax".
    return MailError(ErrorCode.INVALID_ADDRESS, message)


def not_found(what: str) -> MailError:
    return MailError(ErrorCode.NOT_FOUND, f"{what} not found")


def conflict(message: str) -> MailError:
    return MailError(ErrorCode.CONFLICT, message)


def storage_exhausted(exc: BaseException) -> bool:
    """Whether an exception means the disk (or quota) is full: ENOSPC, or SQLite saying so."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


def storage_full(message: str = "insufficient storage on the server") -> MailError:
    return MailError(ErrorCode.STORAGE_FULL, message)
