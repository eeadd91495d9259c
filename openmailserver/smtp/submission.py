"""Authenticated submission (RFC 6409): port 465 with implicit TLS (RFC 8314) and 587 with STARTTLS.

AUTH PLAIN and LOGIN (RFC 4954) are offered only over TLS; the username is
the full address and the password the mailbox password. Failures count
against the client IP in the throttle shared with IMAP. Everything after DATA
is `core.submit()`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import socket

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, LoginPassword

from ..address import parse_address
from ..core import accounts as core_accounts
from ..core import recipients
from ..core.submit import allowed_senders, check_rate, check_sender, submit
from ..errors import MailError
from ..runtime import Runtime
from ..store import accounts
from .session import Limits, Session

log = logging.getLogger(__name__)


def _peer_ip(server: Session) -> str:
    return server.session.peer[0] if server.session and server.session.peer else "?"


class SubmissionHandler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def handle_EHLO(self, server, session, envelope: Envelope, hostname: str, responses: list[str]):
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]

    # -- AUTH (RFC 4954) -----------------------------------------------------------

    async def _check(self, server: Session, username: str, password: str) -> AuthResult:
        ip = _peer_ip(server)
        if self.rt.auth_throttle.blocked(ip):
            await server.push("421 4.7.0 Too many failed logins from your address, try again later")
            server.transport.close()
            return AuthResult(success=False, handled=True)
        mailbox = await self.rt.run(core_accounts.check_login, self.rt.db, username, password)
        if mailbox is None:
            self.rt.auth_throttle.failure(ip)
            self.rt.metrics.auth_failures.labels("smtp").inc()
            log.info("submission login failed for %r from %s", username[:100], ip)
            return AuthResult(success=False, handled=False, message="535 5.7.8 Authentication credentials invalid")
        self.rt.auth_throttle.success(ip)
        server.session.mailbox_id = mailbox["id"]
        return AuthResult(success=True, auth_data=LoginPassword(username.encode(), b""))

    async def auth_PLAIN(self, server: Session, args: list[str]) -> AuthResult:
        blob = args[1] if len(args) > 1 else await server.challenge_auth("", encode_to_b64=False)
        if blob is MISSING:
            return AuthResult(success=False, handled=True)
        try:
            raw = base64.b64decode(blob, validate=True)
            _, user, password = raw.split(b"\0", 2)  # RFC 4616: authzid NUL authcid NUL passwd
            return await self._check(server, user.decode("utf-8"), password.decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode AUTH PLAIN response")

    async def auth_LOGIN(self, server: Session, args: list[str]) -> AuthResult:
        try:
            if len(args) > 1:
                user = base64.b64decode(args[1], validate=True)
            else:
                user = await server.challenge_auth("Username:")
            if user is MISSING:
                return AuthResult(success=False, handled=True)
            password = await server.challenge_auth("Password:")
            if password is MISSING:
                return AuthResult(success=False, handled=True)
            return await self._check(server, user.decode("utf-8"), password.decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode AUTH LOGIN response")

    # -- MAIL / RCPT / DATA --------------------------------------------------------

    async def _mailbox(self, session) -> dict:
        return await self.rt.adb.read(accounts.get_mailbox_by_id, session.mailbox_id)

    async def handle_MAIL(self, server, session, envelope: Envelope, address: str, options: list[str]) -> str:
        mailbox = await self._mailbox(session)
        if mailbox is None or not mailbox["active"]:
            return "550 5.7.1 Mailbox disabled"
        sender = "" if address == "<>" else address
        try:
            allowed = await self.rt.adb.read(allowed_senders, mailbox)
            check_sender(allowed, sender)
            await self.rt.adb.read(check_rate, mailbox["id"], self.rt.settings.max_sends_per_hour)
        except MailError as exc:
            return exc.smtp_reply()
        envelope.mail_from = sender
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope: Envelope, address: str, options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.rt.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            parsed = parse_address(address)
        except MailError as exc:
            return f"501 5.1.3 Bad recipient address: {exc.message}"
        resolution = await self.rt.adb.read(recipients.resolve, parsed)
        if resolution.hosted and not resolution.mailboxes:
            return "550 5.1.1 User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Session, session, envelope: Envelope) -> str:
        raw: bytes = envelope.original_content or b""
        problem = server.data_problem(raw)
        if problem:
            return problem
        mailbox = await self._mailbox(session)
        if mailbox is None:
            return "550 5.7.1 Mailbox disabled"
        client = f"smtp {session.host_name or 'unknown'} ([{_peer_ip(server)}])"
        try:
            result = await submit(self.rt, mailbox=mailbox, envelope_from=envelope.mail_from, to=envelope.rcpt_tos,
                                  raw=raw, client=client)
        except MailError as exc:
            return exc.smtp_reply()
        return f"250 2.0.0 OK queued as {result.outbound['queue_id']}"


def _starter(implicit_tls: bool):
    async def start(rt: Runtime, sock: socket.socket):
        settings = rt.settings
        context = rt.tls_context
        handler = SubmissionHandler(rt)
        limits = Limits(settings.smtp_max_connections, settings.smtp_max_connections_per_ip,
                        blocked=rt.auth_throttle.blocked)
        rt.session_counts["submission" if implicit_tls else "submission_starttls"] = lambda: limits.total

        def factory() -> Session:
            return Session(handler, limits=limits, hostname=settings.mail_host, ident="openmailserver",
                           data_size_limit=settings.message_size_limit, enable_SMTPUTF8=True, decode_data=False,
                           tls_context=None if implicit_tls else context, require_starttls=not implicit_tls,
                           timeout=settings.smtp_idle_timeout, auth_required=True, implicit_tls=implicit_tls)

        server = await asyncio.get_running_loop().create_server(
            factory, sock=sock, ssl=context if implicit_tls else None)

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        return stop

    return start


start_implicit_tls = _starter(implicit_tls=True)
start_starttls = _starter(implicit_tls=False)
