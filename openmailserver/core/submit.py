"""`submit()`: how mail leaves, for SMTP submission and the HTTP API alike (docs/architecture.md, "Mail flow").

Sender authorisation, the hourly rate limit, Message-ID/Date, the DKIM
signature, a copy in the sender's Sent folder, immediate local delivery and a
durable queue entry for remote recipients — all committed in one transaction
before the caller acknowledges.
"""

from __future__ import annotations

import asyncio
import email.utils
import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import Message
from typing import Any, Callable

from .. import mime
from ..address import Address, parse_address
from ..errors import ErrorCode, MailError
from ..mailauth import dkim
from ..mime.compose import missing_id_and_date, trace_date, trace_header
from ..runtime import Runtime
from ..store import accounts, messages, queue, spool
from ..util import iso, new_id
from . import recipients
from .deliver import Delivery, deliver


@dataclass
class Submitted:
    outbound: dict[str, Any]
    sent_copy: dict[str, Any]
    local: int
    remote: int


def sender_denied(address: str) -> MailError:
    return MailError(ErrorCode.SENDER_NOT_ALLOWED, f"you may not send as {address}", fix="send as the mailbox's own address or an alias that delivers to it")


def _delivers_to(conn: sqlite3.Connection, mailbox: dict[str, Any], alias: str) -> bool:
    return any(t["id"] == mailbox["id"] for t in recipients.resolve(conn, parse_address(alias)).mailboxes)


def allowed_senders(conn: sqlite3.Connection, mailbox: dict[str, Any]) -> set[str]:
    """The mailbox's address and every (non catch-all) alias that delivers to it."""
    return {mailbox["address"]} | {alias["source"] for alias in accounts.list_aliases(conn)
                                   if not alias["source"].startswith("@")
                                   and _delivers_to(conn, mailbox, alias["source"])}


def _normalised(address: str) -> str:
    parsed = parse_address(address)
    return f"{parsed.local.lower()}@{parsed.domain}"


def check_rate(conn: sqlite3.Connection, mailbox_id: str, limit: int) -> None:
    now = datetime.now(timezone.utc)
    count, oldest = queue.sends_since(conn, mailbox_id, iso(now - timedelta(hours=1)), limit)
    if count >= limit:
        oldest_at = datetime.fromisoformat(oldest.replace("Z", "+00:00")) if oldest else now
        retry = max(1, int((oldest_at + timedelta(hours=1) - now).total_seconds()) + 1)
        raise MailError(ErrorCode.RATE_LIMITED, f"this mailbox may send {limit} messages per hour", retry_after=retry,
                        fix=f"retry in {retry} seconds")


def may_send_as(conn: sqlite3.Connection, mailbox: dict[str, Any], address: str) -> bool:
    """Whether `mailbox` may use `address`: its own, or a (non catch-all) alias that delivers to it.

    The same answer as `address in allowed_senders(...)`, by looking up that one address.
    """
    try:
        normalised = _normalised(address)
    except MailError:
        return False
    if normalised == mailbox["address"]:
        return True
    return accounts.get_alias(conn, normalised) is not None and _delivers_to(conn, mailbox, normalised)


def _from_addresses(headers: Message) -> list[str]:
    return [addr for _, addr in email.utils.getaddresses(headers.get_all("From") or []) if addr]


@dataclass
class _Prepared:
    message: bytes  # Received + DKIM-Signature + the client's message (+ Message-ID/Date)
    meta: dict[str, Any]
    local: dict[str, tuple[dict, str]]  # mailbox id -> (mailbox row, the RCPT address)
    remote: list[str]
    spool: str | None


def _prepare(rt: Runtime, mailbox: dict[str, Any], envelope_from: str, parsed: list[Address], raw: bytes,
             client: str, queue_id: str, outbound_id: str) -> _Prepared:
    """Everything before the commit, in one executor thread: check, sign, spool.

    One read transaction answers every question (sender, From:, rate, DKIM key, recipients);
    the remote recipients' copy is durable in the spool before this returns.
    """
    settings = rt.settings
    headers = mime.parse_headers(raw)
    from_addresses = _from_addresses(headers)

    def look_up(conn: sqlite3.Connection) -> tuple[dict | None, list[recipients.Resolution]]:
        # The caller's row may be older than this message (read at SMTP MAIL, say).
        current = accounts.get_mailbox_by_id(conn, mailbox["id"])
        if current is None or not current["active"]:
            raise MailError(ErrorCode.MAILBOX_DISABLED, "the sending mailbox is disabled or deleted")
        if not may_send_as(conn, mailbox, envelope_from):
            raise sender_denied(envelope_from)
        # Every address in From: must be ours to use (RFC 6409 §8.1 lets us enforce it).
        if not from_addresses:
            raise MailError(ErrorCode.MISSING_FROM, "the message has no From: header")
        for address in from_addresses:
            if not may_send_as(conn, mailbox, address):
                raise sender_denied(address)
        check_rate(conn, mailbox["id"], settings.max_sends_per_hour)
        signer = next((a for a in from_addresses if "@" in a), None)
        domain = accounts.get_domain(conn, parse_address(signer).domain) if signer else None
        return domain, [recipients.resolve(conn, address) for address in parsed]

    domain, resolutions = rt.db.read(look_up)
    local: dict[str, tuple[dict, str]] = {}
    remote: list[str] = []
    for address, resolution in zip(parsed, resolutions):
        text = f"{address.local}@{address.domain}"
        if not resolution.hosted:
            remote.append(text)
        elif not resolution.mailboxes:
            raise MailError(ErrorCode.UNKNOWN_RECIPIENT, f"{text}: no such mailbox here")
        else:
            for target in resolution.mailboxes:
                if target["quota_bytes"] and target["used_bytes"] + len(raw) > target["quota_bytes"]:
                    raise MailError(ErrorCode.MAILBOX_FULL, f"{text}: the mailbox is full", fix="the recipient must free space first")
                local.setdefault(target["id"], (target, text))
    added, values = missing_id_and_date(headers, settings.mail_host)  # RFC 6409 §8.3
    raw = added + raw
    meta = {**mime.index_meta_of(headers), **values}
    signed = raw
    if domain is not None:
        signed = dkim.sign(raw, domain["name"], domain["dkim_selector"], domain["dkim_private_key"]) + raw
    received = trace_header("Received", f"from {client} by {settings.mail_host} (openmailserver) with "
                            f"{'ESMTPSA' if client.startswith('smtp') else 'HTTPS'} id {queue_id}; "
                            f"{trace_date()}")
    message = received + signed
    spool_path = spool.write(settings.data_dir, outbound_id, message) if remote else None
    return _Prepared(message, meta, local, remote, spool_path)


def _drop_spool(rt: Runtime, done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is None and done.result().spool:
        rt.pool.submit(spool.remove, rt.settings.data_dir, done.result().spool)


async def submit(rt: Runtime, *, mailbox: dict[str, Any], envelope_from: str, to: list[str], raw: bytes,
                 client: str, record: Callable[[sqlite3.Connection, dict], None] | None = None) -> Submitted:
    """Send `raw` from `mailbox` to `to`. `client` describes the origin for the Received header.

    `record(conn, outbound_row)` runs in the transaction that commits the send
    (the API stores its idempotency record there, so both happen or neither).
    """
    settings = rt.settings
    parsed = [parse_address(r) for r in to]
    if not parsed:
        raise MailError(ErrorCode.NO_RECIPIENTS, "at least one recipient is required")
    queue_id = secrets.token_hex(6).upper()
    outbound_id = new_id("out")
    preparing = asyncio.ensure_future(
        rt.run(_prepare, rt, mailbox, envelope_from, parsed, raw, client, queue_id, outbound_id))
    try:
        prepared = await asyncio.shield(preparing)
    except asyncio.CancelledError:
        # The caller went away (an API client, a shutdown): a spool file written meanwhile has no row.
        preparing.add_done_callback(lambda done: _drop_spool(rt, done))
        raise
    message, meta, local, remote, spool_path = (prepared.message, prepared.meta, prepared.local,
                                                prepared.remote, prepared.spool)
    outbound_meta = {**meta, "envelope_from": envelope_from}
    deliveries = [Delivery(mailbox=mailbox, data=message, meta=outbound_meta, folder="Sent", flags={"\\Seen"},
                           direction="outbound", event_type=None)]
    for target, rcpt in local.values():
        head = trace_header("Return-Path", f"<{envelope_from}>") + trace_header("Delivered-To", rcpt)
        deliveries.append(Delivery(mailbox=target, data=head + message, meta=outbound_meta))
    now = time.time()
    published: list[dict] = []
    outbound: dict[str, Any] = {}

    def enqueue(conn: sqlite3.Connection, rows: list[dict]) -> None:
        sent_copy = rows[0]
        row = queue.insert_outbound(
            conn, outbound_id=outbound_id, queue_id=queue_id, mailbox_id=mailbox["id"], sender=envelope_from,
            recipients=[f"{a.local}@{a.domain}" for a in parsed], message_id=meta.get("message_id"),
            subject=meta.get("subject", ""), thread_id=sent_copy["thread_id"], spool=spool_path,
            size=len(message), sent_copy_id=sent_copy["id"], remote=remote, now=now,
            expires_at=now + settings.queue_lifetime)
        outbound.update(row)
        # Assigned, not appended: the writer may run this again after undoing a merged group.
        published[:] = [messages.add_event(conn, "message.sent", mailbox["id"], {
            "outbound_id": row["id"], "message_id": sent_copy["id"], "thread_id": sent_copy["thread_id"],
            "rfc822_message_id": meta.get("message_id"), "recipients": row["recipients"],
            "subject": meta.get("subject", ""), "state": row["state"]})]
        if record is not None:
            record(conn, row)

    def settled(done: asyncio.Future) -> None:
        # Also when the caller went away meanwhile: the delivery goes on, and only its
        # outcome says whether the spool copy is the queue's now or to be removed.
        if done.cancelled() or done.exception() is not None:
            if spool_path:
                rt.pool.submit(spool.remove, settings.data_dir, spool_path)
            return
        for event in published:
            rt.hub.publish(event)
        rt.metrics.submitted.labels(client.split(" ", 1)[0]).inc()
        if remote:
            rt.wake_queue()

    delivering = asyncio.ensure_future(deliver(rt, deliveries, also=enqueue))
    delivering.add_done_callback(settled)
    rows = await asyncio.shield(delivering)
    return Submitted(outbound=outbound, sent_copy=rows[0], local=len(local), remote=len(remote))
