"""Local delivery: one durable Maildir write per mailbox, then one index commit.

The caller acknowledges (SMTP 250, HTTP 2xx) only after `deliver` returns:
every file is fsynced and renamed into place and every index row (with its
event) is committed. On failure nothing is indexed and the files are removed,
so the sender's retry cannot produce a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

from ..errors import MailError, storage_exhausted, storage_full
from ..runtime import Runtime
from ..store import maildir, messages
from ..util import iso, utcnow

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    mailbox: dict[str, Any]  # a mailbox row: id, address, local_part, domain
    data: bytes
    meta: dict[str, Any]
    folder: str = "INBOX"
    flags: set[str] = field(default_factory=set)
    direction: str = "inbound"
    event_type: str | None = "message.received"
    # Skip the copy when this mailbox got the same Message-ID in the folder lately: a sender
    # that retries after losing our 250 (RFC 1047's duplicate problem) then delivers once.
    dedupe: bool = False


DEDUPE_WINDOW = timedelta(hours=24)


def _folder_path(rt: Runtime, d: Delivery):
    root = maildir.mailbox_root(rt.settings.mail_root, d.mailbox["domain"], d.mailbox["local_part"])
    return maildir.folder_dir(root, d.folder)


def _already_held(conn: sqlite3.Connection, deliveries: list[Delivery], since: str) -> set[int]:
    return {id(d) for d in deliveries if d.meta.get("message_id") and messages.has_recent(
        conn, d.mailbox["id"], d.folder, d.meta["message_id"], since)}


def _index_all(conn: sqlite3.Connection, items: list[tuple[Delivery, str]],
               also: Callable[[sqlite3.Connection, list[dict]], Any] | None) -> list[dict]:
    since = iso(utcnow() - DEDUPE_WINDOW)
    rows = []
    for d, filename in items:
        if d.dedupe and d.meta.get("message_id") and messages.has_recent(
                conn, d.mailbox["id"], d.folder, d.meta["message_id"], since):
            rows.append({"duplicate": True, "filename": filename})
            continue
        rows.append(messages.record_message(
            conn, mailbox_id=d.mailbox["id"], folder=d.folder, filename=filename, size=len(d.data),
            meta=d.meta, flags=" ".join(sorted(d.flags)), direction=d.direction, event_type=d.event_type))
    if also is not None:
        also(conn, rows)
    return rows


async def deliver(rt: Runtime, deliveries: list[Delivery],
                  also: Callable[[sqlite3.Connection, list[dict]], Any] | None = None) -> list[dict]:
    """Store every delivery durably and index them in one transaction; all or nothing.

    Copies marked `dedupe` that the mailbox already holds are not written at all
    (and, should two arrive at once, the one that commits second is removed).

    `also(conn, rows)` runs in the same transaction after the rows are indexed
    (the outbound queue entry of a submission, for instance).

    A caller that is cancelled meanwhile (an SMTP client hanging up after its
    final dot) does not cut the work short: it finishes in the background, so
    no file is ever left on disk without its index row.
    """
    return await asyncio.shield(_deliver(rt, deliveries, also))


async def _deliver(rt: Runtime, deliveries: list[Delivery],
                   also: Callable[[sqlite3.Connection, list[dict]], Any] | None) -> list[dict]:
    if any(d.dedupe for d in deliveries):
        since = iso(utcnow() - DEDUPE_WINDOW)
        known = await rt.adb.read(_already_held, [d for d in deliveries if d.dedupe], since)
        deliveries = [d for d in deliveries if id(d) not in known]
        if not deliveries:
            return []
    paths = [_folder_path(rt, d) for d in deliveries]
    results = await asyncio.gather(
        *(rt.run(maildir.place, path, d.data, d.flags or None) for path, d in zip(paths, deliveries)),
        return_exceptions=True)
    written = [(p, r) for p, r in zip(paths, results) if isinstance(r, str)]
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is None:
        # The files' and directories' fsyncs and the index commit run at the same time; the
        # caller acknowledges only after all of them (`store.maildir` says why that is safe).
        files = [path / name for path, name in written]
        outcome = await asyncio.gather(
            rt.adb.write(_index_all, [(d, r) for d, r in zip(deliveries, results)], also),
            *(rt.run(maildir.sync_file, file) for file in files),
            *(rt.run(maildir.sync_dir, directory) for directory in {file.parent for file in files}),
            return_exceptions=True)
        rows, synced = outcome[0], outcome[1:]
        failure = next((r for r in synced if isinstance(r, BaseException)), None)
        if isinstance(rows, BaseException):
            failure = storage_full() if storage_exhausted(rows) else rows
        elif failure is None:
            for path, row in zip(paths, rows):
                if "event" in row:
                    rt.hub.publish(row["event"])
                if row.get("duplicate"):
                    await rt.run(maildir.remove_file, path, row["filename"])
            return rows
        else:
            log.error("fsync failed after the index commit; undoing the delivery: %s", failure)
            await rt.adb.write(messages.drop_message_rows, [row["id"] for row in rows if "id" in row])
    for path, filename in written:
        await rt.run(maildir.remove_file, path, filename)
    if isinstance(failure, MailError):
        raise failure
    raise MailError("delivery_failed", "local delivery failed, try again later",
                    http_status=503, smtp=(451, "4.3.0")) from failure
