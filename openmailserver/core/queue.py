"""Queue administration shared by the CLI and the API: list, show, retry, hold, release, delete.

These write to the database directly; a running daemon's scheduler polls
for due rows every second, so a `retry` or `release` takes effect at once.
"""

from __future__ import annotations

import time
from typing import Any

from ..config import Settings
from ..errors import ErrorCode, MailError, not_found
from ..store import Database, queue, spool


def _find(db: Database, ident: str, mailbox_id: str | None = None) -> dict[str, Any]:
    row = db.read(queue.find_outbound, ident)
    if row is None or (mailbox_id is not None and row["mailbox_id"] != mailbox_id):
        raise not_found(f"queued message {ident}")
    return row


def show(db: Database, ident: str, mailbox_id: str | None = None) -> dict[str, Any]:
    row = _find(db, ident, mailbox_id)
    return {**row, "recipients_state": db.read(queue.queue_rows_of, row["id"]),
            "attempts": db.read(queue.attempts, row["id"])}


def _move(db: Database, ident: str, from_states: tuple[str, ...], to_state: str, when: float | None) -> dict:
    row = _find(db, ident)
    if not db.write(queue.reschedule, row["id"], from_states, to_state, when):
        raise MailError(ErrorCode.NOTHING_TO_DO, f"{ident} has no recipients in state {'/'.join(from_states)}")
    return show(db, row["id"])


def retry(db: Database, ident: str) -> dict:
    return _move(db, ident, queue.PENDING, "queued", time.time())


def hold(db: Database, ident: str) -> dict:
    return _move(db, ident, queue.PENDING, "held", None)


def release(db: Database, ident: str) -> dict:
    return _move(db, ident, ("held",), "queued", time.time())


def delete(settings: Settings, db: Database, ident: str) -> dict:
    row = _find(db, ident)
    spool_path = db.write(queue.cancel, row["id"])
    if spool_path:
        spool.remove(settings.data_dir, spool_path)
    return show(db, row["id"])
