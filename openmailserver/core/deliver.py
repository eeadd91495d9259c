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
from pathlib import Path
from typing import Any, Callable

from ..errors import ErrorCode, MailError, storage_exhausted, storage_full
from ..runtime import Runtime
from ..store import maildir, mailstate, messages
from ..store.db import mergeable
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
    # Skip the copy when this mailbox got the same message (its Message-ID and its
    # `meta["content_digest"]`) in the folder lately: a sender that retries after losing our
    # 250 (RFC 1047's duplicate problem) then delivers once, and a different message that
    # reuses a Message-ID is still stored.
    dedupe: bool = False
    # The IMAP cache of the stored file, when the caller has it at hand: its header block
    # and its ENVELOPE (indexed with the message, so nothing reads the file back for it).
    imap_cache: tuple[bytes, bytes] | None = None
    internal_date: str | None = None  # ISO 8601; None: now (an IMAP APPEND can name one)


DEDUPE_WINDOW = timedelta(hours=24)


def _folder_path(rt: Runtime, d: Delivery):
    root = maildir.mailbox_root(rt.settings.mail_root, d.mailbox["domain"], d.mailbox["local_part"])
    return maildir.folder_dir(root, d.folder)


def _index_jobs(conn: sqlite3.Connection,
                jobs: list[tuple[list[tuple[Delivery, str]], Callable[[sqlite3.Connection, list[dict]], Any] | None]]
                ) -> list[list[dict]]:
    """Index the deliveries of several `_index_all` jobs with one statement per table.

    A `dedupe` copy whose content its folder got in the last day (committed, or earlier in
    these jobs) is not indexed: its row is `{"duplicate": True, "original": <message id>, ...}`
    and the suppression is recorded for the original's delivery trace.
    """
    keys = [_dedupe_key(d) for items, _ in jobs for d, _ in items]
    wanted = [key for key in keys if key is not None]
    seen: dict[tuple[str, str, str, str], str | int] = \
        dict(messages.recent_copies(conn, wanted, iso(utcnow() - DEDUPE_WINDOW))) if wanted else {}
    specs: list[dict[str, Any]] = []
    cached: list[tuple[int, tuple[bytes, bytes]]] = []
    placed: list[list[dict | int]] = []  # per job: a duplicate's row, or the index of its spec
    suppressed: list[tuple[dict, Delivery]] = []
    position = iter(keys)
    for items, _ in jobs:
        placed.append([])
        for d, filename in items:
            key = next(position)
            if key is not None:
                if key in seen:
                    # The original's id, or the index of its spec when it is earlier in these jobs.
                    duplicate = {"duplicate": True, "filename": filename, "original": seen[key]}
                    placed[-1].append(duplicate)
                    suppressed.append((duplicate, d))
                    continue
                seen[key] = len(specs)
            if d.imap_cache is not None:
                cached.append((len(specs), d.imap_cache))
            placed[-1].append(len(specs))
            specs.append({"mailbox_id": d.mailbox["id"], "folder": d.folder, "filename": filename,
                          "size": len(d.data), "meta": d.meta, "flags": " ".join(sorted(d.flags)),
                          "direction": d.direction, "event_type": d.event_type, "internal_date": d.internal_date})
    rows = messages.record_messages(conn, specs) if specs else []
    if cached:
        mailstate.cache_new(conn, [(rows[i]["id"], *cache) for i, cache in cached])
    if suppressed:
        for duplicate, _ in suppressed:
            if isinstance(duplicate["original"], int):
                duplicate["original"] = rows[duplicate["original"]]["id"]
        messages.record_suppressed(conn, [(duplicate["original"], d.meta.get("queue_id"), d.meta.get("envelope_from"),
                                           d.meta.get("peer_ip")) for duplicate, d in suppressed])
    out = [[rows[ref] if isinstance(ref, int) else ref for ref in job] for job in placed]
    for (_, also), job_rows in zip(jobs, out):
        if also is not None:
            also(conn, job_rows)
    return out


@mergeable(_index_jobs)
def _index_all(conn: sqlite3.Connection, items: list[tuple[Delivery, str]],
               also: Callable[[sqlite3.Connection, list[dict]], Any] | None) -> list[dict]:
    """Index one delivery's files; `also(conn, rows)` after them. Queued together, several
    run as one `_index_jobs`."""
    return _index_jobs(conn, [(items, also)])[0]


async def deliver(rt: Runtime, deliveries: list[Delivery],
                  also: Callable[[sqlite3.Connection, list[dict]], Any] | None = None) -> list[dict]:
    """Store every delivery durably and index them in one transaction; all or nothing.

    A copy marked `dedupe` that the mailbox already holds (indexed in the last
    day in that folder, with the same Message-ID and the same content) is found in
    the indexing transaction, not indexed, logged, and its file removed; its row
    is `{"duplicate": True, "original": <message id>}`.

    `also(conn, rows)` runs in the same transaction after the rows are indexed
    (the outbound queue entry of a submission, for instance).

    A caller that is cancelled meanwhile (an SMTP client hanging up after its
    final dot) does not cut the work short: it finishes in the background, so
    no file is ever left on disk without its index row.
    """
    return await asyncio.shield(_deliver(rt, deliveries, also))


def _dedupe_key(d: Delivery) -> tuple[str, str, str, str] | None:
    if not (d.dedupe and d.meta.get("message_id") and d.meta.get("content_digest")):
        return None
    return d.mailbox["id"], d.folder, d.meta["message_id"], d.meta["content_digest"]


# Deliveries up to this size are written on the event loop: a write into the page cache and
# a rename cost less than a trip to a thread. Their fsyncs go from the loop to the kernel.
INLINE_PLACE = 256 * 1024


@dataclass
class _Stored:
    written: list[tuple[Path, str]] = field(default_factory=list)  # (folder directory, file name)
    place_error: BaseException | None = None
    sync_error: BaseException | None = None


def _place(targets: list[tuple[Path, str]], deliveries: list[Delivery]) -> _Stored:
    """Write and rename every file (not yet fsynced)."""
    stored = _Stored()
    try:
        for (path, name), d in zip(targets, deliveries):
            maildir.place(path, d.data, name)
            stored.written.append((path, name))
    except BaseException as exc:  # noqa: BLE001 - reported to the event loop, which cleans up
        stored.place_error = exc
    return stored


def _sync(stored: _Stored) -> _Stored:
    """fsync the placed files, then their directories (in a thread)."""
    files = [path / name for path, name in stored.written]
    try:
        for file in files:
            maildir.sync_file(file)
        for directory in {file.parent for file in files}:
            maildir.sync_dir(directory)
    except BaseException as exc:  # noqa: BLE001
        stored.sync_error = exc
    return stored


def _store(rt: Runtime, targets: list[tuple[Path, str]], deliveries: list[Delivery], commit: asyncio.Future,
           also: Callable[[sqlite3.Connection, list[dict]], Any] | None) -> _Stored:
    """A large delivery in one `store_pool` job: place the files, hand their indexing to the
    writer thread (`commit` settles with its outcome), then fsync while the index commits."""
    stored = _place(targets, deliveries)
    if stored.place_error is None:
        rt.adb.enqueue(commit, _index_all, _items(targets, deliveries), also)
        _sync(stored)
    return stored


def _items(targets: list[tuple[Path, str]], deliveries: list[Delivery]) -> list[tuple[Delivery, str]]:
    return [(d, name) for d, (_, name) in zip(deliveries, targets)]


async def _deliver(rt: Runtime, deliveries: list[Delivery],
                   also: Callable[[sqlite3.Connection, list[dict]], Any] | None) -> list[dict]:
    targets = [(_folder_path(rt, d), maildir.new_name(len(d.data), d.flags or None)) for d in deliveries]
    loop = asyncio.get_running_loop()
    commit: asyncio.Future = loop.create_future()
    # Files are renamed into place before their index rows are handed to the writer (a reader
    # may find a row as soon as it commits); the fsyncs of files, directories and index then
    # run at the same time (`store.maildir` says why that order is safe).
    if sum(len(d.data) for d in deliveries) <= INLINE_PLACE:
        stored = _place(targets, deliveries)
        if stored.place_error is None:
            # The index goes first: its SQL and commit take longer than the fsyncs, which the
            # kernel runs all at once (`store.aio`).
            rt.adb.enqueue(commit, _index_all, _items(targets, deliveries), also)
            files = [path / name for path, name in stored.written]
            try:
                await rt.fsyncer.start(files, list({file.parent for file in files}))
            except Exception as exc:  # noqa: BLE001 - the delivery is undone below
                stored.sync_error = storage_full() if storage_exhausted(exc) else exc
    else:
        stored = await loop.run_in_executor(rt.store_pool, _store, rt, targets, deliveries, commit, also)
    failure = stored.place_error
    if failure is None:
        try:
            rows = await commit
        except Exception as exc:  # noqa: BLE001 - cleaned up below, then re-raised
            failure = storage_full() if storage_exhausted(exc) else exc
        else:
            failure = stored.sync_error
            if failure is None:
                for (path, _), row, d in zip(stored.written, rows, deliveries):
                    if "event" in row:
                        rt.hub.publish(row["event"])
                    if row.get("duplicate"):
                        log.info("duplicate suppressed: Message-ID <%s> already in %s of %s as %s",
                                 d.meta["message_id"], d.folder, d.mailbox["address"], row["original"])
                        await rt.run(maildir.remove_file, path, row["filename"])
                return rows
            log.error("fsync failed after the index commit; undoing the delivery: %s", failure)
            await rt.adb.write(messages.drop_message_rows, [row["id"] for row in rows if "id" in row])
    for path, filename in stored.written:
        await rt.run(maildir.remove_file, path, filename)
    if isinstance(failure, MailError):
        raise failure
    raise MailError(ErrorCode.DELIVERY_FAILED, "local delivery failed, try again later") from failure
