"""Our aiosmtpd session: strict input, enhanced status codes, connection limits.

aiosmtpd does the protocol; this subclass adds what a public MX needs:

* every reply carries an RFC 3463 enhanced status code (RFC 2034 §3), except
  the greeting and the EHLO/HELO replies;
* a command line that does not end in CRLF or holds a NUL byte gets a 500
  (bare LF is how SMTP smuggling starts, RFC 5321 §2.3.8);
* too many connections in all or from one IP get `421 4.7.0` and are closed;
* an idle session gets `421 4.4.2` before it is closed.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Callable

from aiosmtpd.smtp import SMTP, TLSSetupException

from ..errors import storage_exhausted

log = logging.getLogger(__name__)

BAD_LINE = "X-OMS-BAD-LINE"
BARE_LF = re.compile(rb"(?<!\r)\n")  # a line feed without its carriage return
_ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3}(\s|$)")
# Default enhanced codes for replies aiosmtpd writes without one.
_DEFAULT_ENHANCED = {
    "221": "2.0.0", "235": "2.7.0", "250": "2.0.0", "421": "4.3.0", "450": "4.0.0", "451": "4.3.0",
    "452": "4.3.1", "454": "4.7.0", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1",
    "504": "5.5.4", "530": "5.7.0", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0", "552": "5.3.4",
    "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}


class Limits:
    """Connection counters shared by the sessions of one listener; `blocked(ip)` refuses an
    address outright (submission: one that guessed passwords too often)."""

    def __init__(self, total: int, per_ip: int, blocked: Callable[[str], float] | None = None) -> None:
        self.total_limit, self.per_ip_limit = total, per_ip
        self.total = 0
        self.per_ip: Counter[str] = Counter()
        self.blocked = blocked

    def admit(self, ip: str) -> str | None:
        if self.blocked is not None and self.blocked(ip):
            return "too many failed logins from your address, try again later"
        if self.total >= self.total_limit:
            return "too many connections, try again later"
        if self.per_ip[ip] >= self.per_ip_limit:
            return "too many connections from your address, try again later"
        self.total += 1
        self.per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


class _LineGuard:
    """Wraps the session's StreamReader: command lines must end in CRLF and hold no NUL."""

    __slots__ = ("_inner",)

    def __init__(self, inner) -> None:
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value) -> None:  # aiosmtpd swaps the transport on STARTTLS
        setattr(self._inner, name, value)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        line = await self._inner.readuntil(separator)
        if separator == b"\n" and (not line.endswith(b"\r\n") or b"\0" in line):
            return BAD_LINE.encode("ascii") + b"\r\n"
        return line


class Session(SMTP):
    """One SMTP connection. `limits` is the listener's shared connection counter."""

    def __init__(self, handler, *, limits: Limits, implicit_tls: bool = False, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        if implicit_tls:  # the whole connection is TLS (RFC 8314), so AUTH may be offered at once
            self._auth_require_tls = False
        self._limits = limits
        self._admitted_ip: str | None = None
        self._refused = False
        self._plain_replies = False
        self._smtp_methods[BAD_LINE] = self._bad_line

    # -- connection accounting -------------------------------------------------

    def connection_made(self, transport) -> None:
        if self.transport is None and self._original_transport is None:  # a new connection, not STARTTLS
            peer = transport.get_extra_info("peername") or ("?", 0)
            refusal = self._limits.admit(peer[0])
            if refusal:
                self._refused = True
                transport.write(f"421 4.7.0 {self.hostname} {refusal}\r\n".encode("ascii"))
                transport.close()
                return
            self._admitted_ip = peer[0]
        super().connection_made(transport)

    def connection_lost(self, error) -> None:
        if self._refused:
            return
        if self._admitted_ip is not None:
            self._limits.release(self._admitted_ip)
            self._admitted_ip = None
        super().connection_lost(error)

    def _cb_client_connected(self, reader, writer) -> None:
        super()._cb_client_connected(_LineGuard(reader), writer)

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(f"421 4.4.2 {self.hostname} idle timeout, closing connection\r\n".encode())
        super()._timeout_cb()

    # -- replies ---------------------------------------------------------------

    async def push(self, status) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # the client left (uvloop refuses writes to a closed transport)
        if isinstance(status, bytes):
            status = status.decode("utf-8", "replace")
        if not self._plain_replies and len(status) >= 4 and not _ENHANCED.match(status):
            code = status[:3]
            enhanced = _DEFAULT_ENHANCED.get(code)
            if enhanced and status[3:4] in (" ", "-"):
                status = f"{code}{status[3]}{enhanced} {status[4:]}"
        await super().push(status)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._plain_replies = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._plain_replies = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._plain_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._plain_replies = False

    def data_problem(self, raw: bytes) -> str | None:
        """The 554 reply for message data we never accept, else None."""
        if b"\0" in raw:
            return "554 5.6.0 NUL characters are not allowed in message data"
        if BARE_LF.search(raw):
            return "554 5.6.0 Bare LF is not allowed in message data (RFC 5321 section 2.3.8)"
        return None

    async def _bad_line(self, arg) -> None:
        await self.push("500 5.5.2 Line must end in CRLF and hold no NUL characters (RFC 5321 section 2.3.8)")

    async def handle_exception(self, error: Exception) -> str:
        if storage_exhausted(error):
            return "452 4.3.1 Insufficient system storage, try again later"
        if isinstance(error, TLSSetupException):  # the client's handshake failed: its problem, not ours
            log.info("TLS handshake failed for %s: %s", self.session.peer if self.session else "?",
                     error.__cause__ or error)
            return "454 4.7.0 TLS not available due to a handshake failure"
        log.exception("SMTP session error from %s", self.session.peer if self.session else "?")
        return "451 4.3.0 Internal error, try again later"
