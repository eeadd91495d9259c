"""Authenticated submission (RFC 6409): port 465 with implicit TLS (RFC 8314) and 587 with STARTTLS.

AUTH PLAIN and LOGIN (RFC 4954) are offered only over TLS; the username is
the full address and the password the mailbox password. Failures count
against the client IP in the throttle shared with IMAP. Everything after DATA
is `core.submit()`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
from typing import Optional

from ..address import Address, parse_address
from ..core import accounts as core_accounts
from ..core import recipients
from ..core.submit import check_rate, may_send_as, sender_denied, submit
from ..errors import MailError
from ..runtime import Runtime
from ..store import accounts
from .session import Handler, Limits, Reply, Session, data_problem

log = logging.getLogger(__name__)


def _may_send(conn: sqlite3.Connection, mailbox_id: str, sender: str, limit: int) -> tuple[Optional[str], dict]:
    """The refusal for MAIL FROM:<sender> of an authenticated mailbox, or None, and the
    mailbox row (one read)."""
    mailbox = accounts.get_mailbox_by_id(conn, mailbox_id)
    if mailbox is None or not mailbox["active"]:
        return "550 5.7.1 Mailbox disabled", {}
    if not may_send_as(conn, mailbox, sender):
        return sender_denied(sender or "<>").smtp_reply(), mailbox
    check_rate(conn, mailbox["id"], limit)
    return None, mailbox


class SubmissionHandler(Handler):
    auth = True
    auth_required = True

    def __init__(self, rt: Runtime, starttls_required: bool) -> None:
        self.rt = rt
        self.greeting_text = f"ESMTP openmailserver (worker {rt.worker})"
        self.starttls_required = starttls_required

    # -- AUTH (RFC 4954) -----------------------------------------------------------

    async def authenticate(self, session: Session, username: str, password: str) -> str:
        ip = session.peer_ip
        if await self.rt.auth_throttle.blocked(ip):
            session.hang_up()
            return "421 4.7.0 Too many failed logins from your address, try again later"
        mailbox = await self.rt.run(core_accounts.check_login, self.rt.db, username, password)
        if mailbox is None:
            await self.rt.auth_throttle.failure(ip)
            self.rt.metrics.auth_failures.labels("smtp").inc()
            log.info("submission login failed for %r from %s", username[:100], ip)
            return "535 5.7.8 Authentication credentials invalid"
        await self.rt.auth_throttle.success(ip)
        session.authenticated = mailbox["id"]
        return "235 2.7.0 Authentication successful"

    # -- MAIL / RCPT / DATA --------------------------------------------------------

    async def mail(self, session: Session, address: str) -> str:
        refusal, mailbox = await self.rt.adb.read(_may_send, session.authenticated, address,
                                                  self.rt.settings.max_sends_per_hour)
        session.txn["mailbox"] = mailbox  # for DATA, a few round trips later
        return refusal or "250 2.1.0 OK"

    def rcpt(self, session: Session, address: str) -> Reply:
        if len(session.rcpts) >= self.rt.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            parsed = parse_address(address)
        except MailError as exc:
            return f"501 5.1.3 Bad recipient address: {exc.message}"
        return self._rcpt(parsed)

    async def _rcpt(self, parsed: Address) -> str:
        resolution = await self.rt.adb.read(recipients.resolve, parsed)
        if resolution.hosted and not resolution.mailboxes:
            return "550 5.1.1 User unknown"
        return "250 2.1.5 OK"

    def data(self, session: Session, raw: bytes) -> Reply:
        return data_problem(raw) or self._submit(session, raw)

    async def _submit(self, session: Session, raw: bytes) -> str:
        mailbox = session.txn["mailbox"]
        client = f"smtp {session.helo or 'unknown'} ([{session.peer_ip}])"
        result = await submit(self.rt, mailbox=mailbox, envelope_from=session.mail_from or "",
                              to=list(session.rcpts), raw=raw, client=client)
        return f"250 2.0.0 OK queued as {result.outbound['queue_id']}"


def _starter(implicit_tls: bool):
    async def start(rt: Runtime, sock: socket.socket):
        settings = rt.settings
        handler = SubmissionHandler(rt, starttls_required=not implicit_tls)
        limits = Limits(rt.board, "submission" if implicit_tls else "submission_starttls",
                        settings.smtp_max_connections, settings.smtp_max_connections_per_ip,
                        blocked=rt.auth_throttle.known_blocked)

        def factory() -> Session:
            return Session(handler, limits=limits, hostname=settings.mail_host,
                           size_limit=settings.message_size_limit, timeout=settings.smtp_idle_timeout,
                           tls_context=None if implicit_tls else rt.tls_context, implicit_tls=implicit_tls)

        server = await asyncio.get_running_loop().create_server(
            factory, sock=sock, ssl=rt.tls_context if implicit_tls else None)

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        return stop

    return start


start_implicit_tls = _starter(implicit_tls=True)
start_starttls = _starter(implicit_tls=False)
