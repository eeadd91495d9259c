"""Logging in: STARTTLS (RFC 3501 §6.2.1), LOGIN (§6.2.3) and AUTHENTICATE PLAIN (§6.2.2, SASL-IR RFC 4959).

Port 143 offers STARTTLS and refuses plaintext logins (LOGINDISABLED) until
TLS is active, except from loopback peers which count as secure; port 993 is
TLS from the first byte. Failed logins go through the same per-IP throttle as
SMTP AUTH (`rt.auth_throttle`); successful ones are remembered by the login
cache (`shared.LoginCache`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging

from ..store import accounts as store_accounts
from . import protocol as p
from .session import Session

log = logging.getLogger(__name__)


async def cmd_starttls(session: Session, cmd: p.Command) -> str | None:
    if session.tls:
        return "BAD TLS is already active"
    # RFC 3501 §6.2.1: nothing the client pipelined in plaintext is executed, and
    # no byte of the TLS handshake may end up in the plaintext buffers.
    transport = session.writer.transport
    transport.pause_reading()
    buffered = getattr(session.reader, "_buffer", None)
    if buffered is not None:
        buffered.clear()
    session.commands.reset()
    session.send(f"{cmd.tag} OK Begin TLS negotiation now\r\n".encode())
    await session.flush()
    await session.writer.start_tls(session.shared.tls_context())
    session.tls = True
    return None


async def cmd_login(session: Session, cmd: p.Command) -> str:
    args: p.LoginArgs = cmd.args  # type: ignore[assignment]
    if not session.secure:
        return "NO [PRIVACYREQUIRED] Use STARTTLS before logging in"
    return await authenticate(session, args.username, args.password)


async def cmd_authenticate(session: Session, cmd: p.Command) -> str:
    args: p.AuthenticateArgs = cmd.args  # type: ignore[assignment]
    if args.mechanism != "PLAIN":
        return "NO [CANNOT] Unsupported authentication mechanism"
    if not session.secure:
        return "NO [PRIVACYREQUIRED] Use STARTTLS before authenticating"
    response = args.initial_response
    if response is None:
        session.send(b"+ \r\n")
        await session.flush()
        line = await session.read_line()
        if line is None:
            session.closing = True
            return "BAD Connection closed"
        response = line.strip().decode("ascii", "replace")
        if response == "*":
            return "BAD Authentication cancelled"
    try:
        decoded = base64.b64decode(response, validate=True) if response != "=" else b""
    except (binascii.Error, ValueError):
        return "BAD Invalid base64 data"
    parts = decoded.split(b"\0")
    if len(parts) != 3:
        return "BAD Invalid PLAIN response"
    authzid, authcid, password = (x.decode("utf-8", "replace") for x in parts)
    if authzid and authzid.lower() != authcid.lower():
        return "NO [AUTHORIZATIONFAILED] Cannot act as another user"
    return await authenticate(session, authcid, password)


async def authenticate(session: Session, username: str, password: str) -> str:
    throttle = session.rt.auth_throttle
    if await throttle.blocked(session.peer_ip):
        return "NO [UNAVAILABLE] Too many failed logins; try again later"
    row = await session.shared.logins.check(username, password)
    if row is None:
        await throttle.failure(session.peer_ip)
        log.info("IMAP login failed for %r from %s", username[:100], session.peer_ip)
        await asyncio.sleep(0.3)
        return "NO [AUTHENTICATIONFAILED] Authentication failed"
    await throttle.success(session.peer_ip)
    mailbox = await session.rt.adb.read(store_accounts.get_mailbox_by_id, row["id"])
    if mailbox is None:
        return "NO [AUTHENTICATIONFAILED] Authentication failed"
    # Counted over every worker of the daemon, on its board.
    counted = f"imap user {mailbox['id']}"
    if session.rt.board.count(counted) >= session.rt.settings.imap_max_sessions_per_user:
        return "NO [LIMIT] Too many sessions for this user"
    session.rt.board.add(counted, 1)
    session.counted_user = counted
    session.mailbox = mailbox
    session.state = "auth"
    session.hub_subscription = session.rt.hub.subscribe(mailbox["id"])
    session.hub_queue = session.hub_subscription.__enter__()
    log.info("IMAP login %s from %s", mailbox["address"], session.peer_ip)
    return f"OK [CAPABILITY {session.capabilities()}] Logged in"
