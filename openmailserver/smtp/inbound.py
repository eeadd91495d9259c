"""The MX receiver: accept mail for our domains, durably, with SPF/DKIM/DMARC results.

Recipients are checked at RCPT time; unauthenticated mail for domains we do
not host is refused (never an open relay). `250` is sent only after `core`
has the message fsynced in every recipient mailbox and indexed.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import socket
from typing import Any

from aiosmtpd.smtp import Envelope
from aiosmtpd.smtp import Session as SMTPSessionState

from .. import mime
from ..mime.compose import trace_header
from ..address import parse_address
from ..core import recipients
from ..core.deliver import Delivery, deliver
from ..errors import MailError
from ..logs import session_id
from ..runtime import Runtime
from ..util import new_id
from .authres import authenticate
from .session import Limits, Session

log = logging.getLogger(__name__)

_SIZE_PARAM = re.compile(r"^SIZE=(\d+)$", re.I)


def strip_our_auth_results(raw: bytes, authserv_id: str) -> bytes:
    """Drop Authentication-Results fields that claim our authserv-id (RFC 8601 §5)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, body = raw, b""
    kept: list[bytes] = []
    skipping = False
    ours = authserv_id.lower().encode("utf-8")
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name, colon, value = line.partition(b":")
        skipping = bool(colon) and name.strip().lower() == b"authentication-results" and \
            value.strip().split(b";", 1)[0].strip().lower().split()[0:1] == [ours]
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept) + (b"\r\n\r\n" + body if sep else b"")


class MXHandler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings = rt.settings

    # -- EHLO/MAIL/RCPT ----------------------------------------------------------

    async def handle_EHLO(self, server, session: SMTPSessionState, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        # No AUTH on the MX port. RFC 2920 PIPELINING and RFC 2034 ENHANCEDSTATUSCODES:
        # aiosmtpd serves both, it just does not announce them.
        offered = [line for line in responses[:-1] if not line[4:].upper().startswith("AUTH")]
        return offered + ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]

    async def handle_MAIL(self, server, session, envelope: Envelope, address: str, options: list[str]) -> str:
        if address != "<>":
            try:
                parse_address(address)
            except MailError as exc:
                return f"553 5.1.7 Bad sender address: {exc.message}"
        envelope.mail_from = "" if address == "<>" else address
        envelope.mail_options.extend(options)
        envelope.targets = {}  # mailbox id -> (mailbox row, first RCPT address, subaddress)
        envelope.declared_size = next(
            (int(m.group(1)) for m in map(_SIZE_PARAM.match, options) if m), 0)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope: Envelope, address: str, options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"  # RFC 5321 §4.5.3.1.10
        try:
            parsed = parse_address(address)
        except MailError as exc:
            return f"501 5.1.3 Bad recipient address: {exc.message}"
        if not envelope.smtp_utf8 and not address.isascii():
            return "553 5.6.7 Non-ASCII address needs SMTPUTF8 (RFC 6531 section 3.4)"
        resolution = await self.rt.adb.read(recipients.resolve, parsed)
        if not resolution.hosted:
            return "554 5.7.1 Relay access denied"
        if not resolution.mailboxes:
            return "550 5.1.1 User unknown"
        incoming = envelope.declared_size or 0
        for mailbox in resolution.mailboxes:
            if mailbox["quota_bytes"] and mailbox["used_bytes"] + incoming >= mailbox["quota_bytes"]:
                return "452 4.2.2 Mailbox full"
        for mailbox in resolution.mailboxes:
            envelope.targets.setdefault(mailbox["id"], (mailbox, f"{parsed.local}@{parsed.domain}",
                                                        resolution.subaddress))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    # -- DATA --------------------------------------------------------------------

    async def handle_DATA(self, server: Session, session, envelope: Envelope) -> str:
        raw: bytes = envelope.original_content or b""
        problem = server.data_problem(raw)
        if problem:
            return problem
        queue_id = new_id("msg")[4:]
        session_id.set(queue_id)
        peer_ip = session.peer[0] if session.peer else "0.0.0.0"
        helo = session.host_name or "unknown"
        host = self.settings.mail_host

        def examine() -> tuple[bytes, Any, dict[str, Any]]:  # one executor hop for all the parsing and DNS
            cleaned = strip_our_auth_results(raw, host)
            return cleaned, authenticate(cleaned, authserv_id=host, ip=peer_ip, mail_from=envelope.mail_from or "",
                                         helo=helo), mime.index_meta(cleaned)

        raw, results, meta = await self.rt.run(examine)
        if results.dmarc_reject and self.settings.dmarc_enforce:
            log.info("rejected by DMARC policy: from %s [%s]", envelope.mail_from, peer_ip)
            return "550 5.7.1 Rejected by the sender domain's DMARC policy"
        meta.update(spf=results.spf, dkim=results.dkim, dmarc=results.dmarc,
                    authentication_results=results.header_value, envelope_from=envelope.mail_from)
        tls = session.ssl.get("ssl_object").version() if session.ssl and session.ssl.get("ssl_object") else None
        received = trace_header("Received", (
            f"from {helo} ([{peer_ip}]) by {host} (openmailserver) with "
            f"{'ESMTPS' if tls else 'ESMTP'}{f' ({tls})' if tls else ''} id {queue_id}"
            f"{{for}}; {email.utils.format_datetime(email.utils.localtime())}"))
        trace_common = trace_header("Authentication-Results", results.header_value)
        deliveries = []
        for mailbox, rcpt, subaddress in envelope.targets.values():
            head = (trace_header("Return-Path", f"<{envelope.mail_from}>") + trace_header("Delivered-To", rcpt)
                    + received.replace(b"{for}", f" for <{rcpt}>".encode("utf-8")) + trace_common)
            deliveries.append(Delivery(mailbox=mailbox, data=head + raw, meta={**meta, "subaddress": subaddress},
                                       dedupe=True))
        try:
            await deliver(self.rt, deliveries)
        except MailError as exc:
            return exc.smtp_reply()
        self.rt.metrics.received.inc(len(deliveries))
        log.info("delivered from=<%s> to %d mailbox(es) size=%d spf=%s dkim=%s dmarc=%s",
                 envelope.mail_from, len(deliveries), len(raw), results.spf, results.dkim, results.dmarc)
        return f"250 2.0.0 OK queued as {queue_id}"


def session_factory(rt: Runtime, handler: Any, limits: Limits):
    settings = rt.settings
    context = rt.tls_context

    def factory() -> Session:
        return Session(handler, limits=limits, hostname=settings.mail_host, ident="openmailserver",
                       data_size_limit=settings.message_size_limit, enable_SMTPUTF8=True,
                       decode_data=False, tls_context=context, timeout=settings.smtp_idle_timeout,
                       auth_exclude_mechanism=["LOGIN", "PLAIN"])

    return factory


async def start_mx(rt: Runtime, sock: socket.socket):
    limits = Limits(rt.settings.smtp_max_connections, rt.settings.smtp_max_connections_per_ip)
    rt.session_counts["smtp"] = lambda: limits.total
    loop = asyncio.get_running_loop()
    server = await loop.create_server(session_factory(rt, MXHandler(rt), limits), sock=sock)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return stop
