"""Local delivery: one durable Maildir write per mailbox, then one index commit.

The caller acknowledges (SMTP 250, HTTP 2xx) only after `deliver` returns:
every file is fsynced and renamed into place and every index row (with its
event) is committed. On failure nothing is indexed and the files are removed,
so the sender's retry cannot produce a duplicate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from ..errors import MailError, storage_exhausted, storage_full
from ..runtime import Runtime
from ..store import maildir, mailstate, messages
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
    # The IMAP cache of the stored file, when the caller has it at hand: its header block
    # and its ENVELOPE (indexed with the message, so nothing reads the file back for it).
    imap_cache: tuple[bytes, bytes] | None = None
    internal_date: str | None = None  # ISO 8601; None: now (an IMAP APPEND can name one)


DEDUPE_WINDOW = timedelta(hours=24)


def _folder_path(rt: Runtime, d: Delivery):
    root = maildir.mailbox_root(rt.settings.mail_root, d.mailbox["domain"], d.mailbox["local_part"])
    return maildir.folder_dir(root, d.folder)


def _index_all(conn: sqlite3.Connection, items: list[tuple[Delivery, str]],
               also: Callable[[sqlite3.Connection, list[dict]], Any] | None,
               placed: concurrent.futures.Future) -> list[dict]:
    rows = []
    for d, filename in items:
        if d.dedupe and d.meta.get("message_id") and messages.has_recent(
                conn, d.mailbox["id"], d.folder, d.meta["message_id"], iso(utcnow() - DEDUPE_WINDOW)):
            rows.append({"duplicate": True, "filename": filename})
            continue
        row = messages.record_message(
            conn, mailbox_id=d.mailbox["id"], folder=d.folder, filename=filename, size=len(d.data),
            meta=d.meta, flags=" ".join(sorted(d.flags)), direction=d.direction, event_type=d.event_type,
            internal_date=d.internal_date)
        if d.imap_cache is not None:
            mailstate.cache_new(conn, row["id"], *d.imap_cache)
        rows.append(row)
    if also is not None:
        also(conn, rows)
    # Readers may see these rows once they commit: the files must be in place by then.
    placed.result()
    return rows


async def deliver(rt: Runtime, deliveries: list[Delivery],
                  also: Callable[[sqlite3.Connection, list[dict]], Any] | None = None) -> list[dict]:
    """Store every delivery durably and index them in one transaction; all or nothing.

    A copy marked `dedupe` that the mailbox already holds is found in the
    indexing transaction, not indexed, and its file removed.

    `also(conn, rows)` runs in the same transaction after the rows are indexed
    (the outbound queue entry of a submission, for instance).

    A caller that is cancelled meanwhile (an SMTP client hanging up after its
    final dot) does not cut the work short: it finishes in the background, so
    no file is ever left on disk without its index row.
    """
    return await asyncio.shield(_deliver(rt, deliveries, also))


@dataclass
class _Stored:
    written: list[tuple[Path, str]] = field(default_factory=list)  # (folder directory, file name)
    place_error: BaseException | None = None
    sync_error: BaseException | None = None


def _store(rt: Runtime, targets: list[tuple[Path, str]], deliveries: list[Delivery],
           placed: concurrent.futures.Future) -> _Stored:
    """In one `store_pool` job: write and rename every file, tell the index writer (`placed`),
    then fsync the files and their directories while the index commits (`store.maildir`
    says why that order is safe). Other deliveries' jobs run alongside, so the kernel
    gathers their fsyncs into shared journal commits."""
    stored = _Stored()
    try:
        for (path, name), d in zip(targets, deliveries):
            maildir.place(path, d.data, name)
            stored.written.append((path, name))
    except BaseException as exc:  # noqa: BLE001 - reported to the event loop, which cleans up
        stored.place_error = exc
        placed.set_exception(exc)
        return stored
    placed.set_result(None)
    files = [path / name for path, name in stored.written]
    try:
        for file in files:
            maildir.sync_file(file)
        for directory in {file.parent for file in files}:
            maildir.sync_dir(directory)
    except BaseException as exc:  # noqa: BLE001
        stored.sync_error = exc
    return stored


async def _deliver(rt: Runtime, deliveries: list[Delivery],
                   also: Callable[[sqlite3.Connection, list[dict]], Any] | None) -> list[dict]:
    targets = [(_folder_path(rt, d), maildir.new_name(len(d.data), d.flags or None)) for d in deliveries]
    loop = asyncio.get_running_loop()
    # The writer indexes the messages while their files are written; it commits once they
    # are in place, and the fsyncs of files, directories and index run at the same time.
    placed: concurrent.futures.Future = concurrent.futures.Future()
    commit: asyncio.Future = loop.create_future()
    rt.adb.enqueue(commit, _index_all, [(d, name) for d, (_, name) in zip(deliveries, targets)], also, placed)
    stored = await loop.run_in_executor(rt.store_pool, _store, rt, targets, deliveries, placed)
    try:
        rows = await commit  # fails when placing a file failed, too
    except Exception as exc:  # noqa: BLE001 - cleaned up below, then re-raised
        failure = stored.place_error or (storage_full() if storage_exhausted(exc) else exc)
    else:
        failure = stored.sync_error
        if failure is None:
            for (path, _), row in zip(stored.written, rows):
                if "event" in row:
                    rt.hub.publish(row["event"])
                if row.get("duplicate"):
                    await rt.run(maildir.remove_file, path, row["filename"])
            return rows
        log.error("fsync failed after the index commit; undoing the delivery: %s", failure)
        await rt.adb.write(messages.drop_message_rows, [row["id"] for row in rows if "id" in row])
    for path, filename in stored.written:
        await rt.run(maildir.remove_file, path, filename)
    if isinstance(failure, MailError):
        raise failure
    raise MailError("delivery_failed", "local delivery failed, try again later",
                    http_status=503, smtp=(451, "4.3.0")) from failure
