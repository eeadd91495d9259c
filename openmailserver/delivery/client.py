"""One outbound SMTP connection (aiosmtplib), reused for every message to a destination.

Opportunistic STARTTLS (RFC 3207): used whenever offered, without certificate
verification, as most MTAs do without DANE or MTA-STS; the TLS version is
recorded for each attempt.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiosmtplib

from ..dns.mx import Hop

CONNECT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 300.0  # RFC 5321 §4.5.3.2 suggests minutes, not seconds


@dataclass
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class ConnectionFailed(Exception):
    """The hop could not be reached or dropped us: every recipient is deferred."""


def _opportunistic_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Outbound:
    def __init__(self, hop: Hop, port: int, helo: str, username: str = "", password: str = "") -> None:
        self.hop = hop
        self.tls: str | None = None
        self.used = False  # a transaction has completed on this connection
        self._credentials = (username, password)
        self._smtp = aiosmtplib.SMTP(hostname=hop.ip, port=port, local_hostname=helo, timeout=COMMAND_TIMEOUT,
                                     start_tls=False, use_tls=False)

    async def open(self) -> None:
        try:
            await self._smtp.connect(timeout=CONNECT_TIMEOUT)
            await self._smtp.ehlo()
            if self._smtp.supports_extension("starttls"):
                await self._smtp.starttls(tls_context=_opportunistic_context(), server_hostname=self.hop.host)
                await self._smtp.ehlo()
                ssl_object = self._smtp.transport.get_extra_info("ssl_object") if self._smtp.transport else None
                self.tls = ssl_object.version() if ssl_object else "TLS"
            username, password = self._credentials
            if username:
                await self._smtp.login(username, password)
        except aiosmtplib.SMTPResponseException as exc:
            await self.close()
            raise ConnectionFailed(f"{exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            await self.close()
            raise ConnectionFailed(str(exc) or type(exc).__name__) from None

    async def send(self, sender: str, recipients: list[str], data: bytes) -> dict[str, Reply]:
        """One transaction; the reply that decided each recipient's fate."""
        results: dict[str, Reply] = {}
        try:
            await self._smtp.mail(sender, options=["BODY=8BITMIME"] if self._smtp.supports_extension("8bitmime")
                                  else None, encoding="utf-8")
            accepted = []
            for recipient in recipients:
                try:
                    await self._smtp.rcpt(recipient, encoding="utf-8")
                    accepted.append(recipient)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    results[recipient] = Reply(exc.code, exc.message)
            if accepted:
                response = await self._smtp.data(data)
                for recipient in accepted:
                    results[recipient] = Reply(response.code, response.message)
            else:
                await self._smtp.rset()
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise ConnectionFailed(str(exc)) from None
        except aiosmtplib.SMTPResponseException as exc:  # MAIL or DATA refused for everyone
            for recipient in recipients:
                results.setdefault(recipient, Reply(exc.code, exc.message))
            try:
                await self._smtp.rset()
            except aiosmtplib.SMTPException:
                raise ConnectionFailed(f"{exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ConnectionFailed(str(exc) or type(exc).__name__) from None
        self.used = True
        return results

    async def close(self) -> None:
        try:
            if self._smtp.is_connected:
                await self._smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            self._smtp.close()
