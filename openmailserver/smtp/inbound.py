"""The MX receiver: accept mail for our domains, durably, with SPF/DKIM/DMARC results.

Recipients are checked at RCPT time; unauthenticated mail for domains we do
not host is refused (never an open relay). `250` is sent only after `core`
has the message fsynced in every recipient mailbox and indexed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from .. import mime
from ..address import Address, parse_address
from ..core import recipients
from ..core.deliver import Delivery, deliver
from ..errors import MailError
from ..mailauth.results import authenticate
from ..mime import structure
from ..mime.compose import trace_date, trace_header
from ..runtime import Runtime
from ..telemetry.logs import session_id
from ..util import new_id
from .session import Handler, Limits, Reply, Session, data_problem

log = logging.getLogger(__name__)


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


class MXHandler(Handler):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.greeting_text = f"ESMTP openmailserver (worker {rt.worker})"
        self.settings = rt.settings

    def mail(self, session: Session, address: str) -> str:
        if address:
            try:
                parse_address(address)
            except MailError as exc:
                return f"553 5.1.7 Bad sender address: {exc.message}"
        session.txn["targets"] = {}  # mailbox id -> (mailbox row, first RCPT address, subaddress)
        return "250 2.1.0 OK"

    def rcpt(self, session: Session, address: str) -> Reply:
        if len(session.rcpts) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"  # RFC 5321 §4.5.3.1.10
        try:
            parsed = parse_address(address)
        except MailError as exc:
            return f"501 5.1.3 Bad recipient address: {exc.message}"
        return self._rcpt(session, parsed)

    async def _rcpt(self, session: Session, parsed: Address) -> str:
        resolution = await self.rt.adb.read(recipients.resolve, parsed)
        if not resolution.hosted:
            return "554 5.7.1 Relay access denied"
        if not resolution.mailboxes:
            return "550 5.1.1 User unknown"
        incoming = session.declared_size
        for mailbox in resolution.mailboxes:
            if mailbox["quota_bytes"] and mailbox["used_bytes"] + incoming >= mailbox["quota_bytes"]:
                return "452 4.2.2 Mailbox full"
        targets = session.txn["targets"]
        for mailbox in resolution.mailboxes:
            targets.setdefault(mailbox["id"], (mailbox, f"{parsed.local}@{parsed.domain}", resolution.subaddress))
        return "250 2.1.5 OK"

    # -- DATA --------------------------------------------------------------------

    def data(self, session: Session, raw: bytes) -> Reply:
        return data_problem(raw) or self._deliver(session, raw)

    async def _deliver(self, session: Session, raw: bytes) -> str:
        queue_id = new_id("msg")[4:]
        session_id.set(queue_id)
        peer_ip = session.peer_ip
        helo = session.helo or "unknown"
        host = self.settings.mail_host
        mail_from = session.mail_from or ""

        def examine() -> tuple[bytes, Any, dict[str, Any], bytes, bytes, str]:  # one hop for parsing and DNS
            cleaned = strip_our_auth_results(raw, host)
            header = structure.split_header(cleaned)[0]
            return (cleaned, authenticate(cleaned, authserv_id=host, ip=peer_ip, mail_from=mail_from, helo=helo),
                    mime.index_meta(cleaned), header, structure.envelope_bytes(header),
                    structure.content_digest(cleaned))

        raw, results, meta, header, envelope, digest = await self.rt.run(examine)
        if results.dmarc_reject and self.settings.dmarc_enforce:
            log.info("rejected by DMARC policy: from %s [%s]", mail_from, peer_ip)
            return "550 5.7.1 Rejected by the sender domain's DMARC policy"
        meta.update(spf=results.spf, dkim=results.dkim, dmarc=results.dmarc,
                    authentication_results=results.header_value, envelope_from=mail_from,
                    content_digest=digest, queue_id=queue_id, peer_ip=peer_ip)
        tls = session.tls_version
        received = (f"from {helo} ([{peer_ip}]) by {host} (openmailserver) with "
                    f"{'ESMTPS' if tls else 'ESMTP'}{f' ({tls})' if tls else ''} id {queue_id}")
        date = trace_date()
        trace_common = trace_header("Authentication-Results", results.header_value)
        deliveries = []
        for mailbox, rcpt, subaddress in session.txn["targets"].values():
            head = (trace_header("Return-Path", f"<{mail_from}>") + trace_header("Delivered-To", rcpt)
                    + trace_header("Received", f"{received} for <{rcpt}>; {date}") + trace_common)
            deliveries.append(Delivery(mailbox=mailbox, data=head + raw, meta={**meta, "subaddress": subaddress},
                                       dedupe=True, imap_cache=(head + header, envelope)))
        await deliver(self.rt, deliveries)
        self.rt.metrics.received.inc(len(deliveries))
        log.info("delivered from=<%s> to %d mailbox(es) size=%d spf=%s dkim=%s dmarc=%s",
                 mail_from, len(deliveries), len(raw), results.spf, results.dkim, results.dmarc)
        return f"250 2.0.0 OK queued as {queue_id}"


async def start_mx(rt: Runtime, sock: socket.socket):
    settings = rt.settings
    limits = Limits(rt.board, "smtp", settings.smtp_max_connections, settings.smtp_max_connections_per_ip)
    handler = MXHandler(rt)

    def factory() -> Session:
        return Session(handler, limits=limits, hostname=settings.mail_host, size_limit=settings.message_size_limit,
                       timeout=settings.smtp_idle_timeout, tls_context=rt.tls_context)

    server = await asyncio.get_running_loop().create_server(factory, sock=sock)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return stop
