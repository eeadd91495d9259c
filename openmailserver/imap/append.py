"""APPEND (RFC 3501 §6.3.11), with the APPENDUID response code of UIDPLUS (RFC 4315 §3).

The message is stored through `core.deliver`, like a delivery; the delivery
transaction also checks that the folder name still leads to the folder row
this session read (`errors.StaleFolder`) and the quota (`errors.OverQuota`).
"""

from __future__ import annotations

import re
from typing import Any

from .. import mime
from ..core.deliver import Delivery, deliver
from ..errors import MailError
from ..store import mailstate
from ..store.messages import get_folder
from ..util import iso
from . import protocol as p
from .errors import OverQuota, StaleFolder, folder_gone
from .session import Session

# APPENDed messages up to this size are prepared on the event loop: the parsing holds the
# GIL either way, and a hop to the executor costs more than the work.
INLINE_PREPARE = 256 * 1024

_BARE_LF = re.compile(rb"(?<!\r)\n")


async def cmd_append(session: Session, cmd: p.Command) -> str:
    args: p.AppendArgs = cmd.args  # type: ignore[assignment]
    assert session.mailbox is not None
    if not args.message:
        return "NO Empty messages are not accepted"
    if len(args.message) <= INLINE_PREPARE:
        prepared = _prepare_append(args.message)
    else:
        prepared = await session.rt.run(_prepare_append, args.message)
    # A folder row this session already read is used as it is: the delivery transaction
    # checks that the name still leads to that folder. If anything fails with the row
    # from before, the folder is read again and the APPEND tried once more.
    has_keywords = any(not f.startswith("\\") for f in args.flags)
    folder = None if has_keywords else session.append_folders.get(args.mailbox)
    while True:
        fresh = folder is None
        if fresh:
            folder = await session.rt.adb.read(get_folder, session.mailbox["id"], args.mailbox)
            if folder is None:
                return "NO [TRYCREATE] Mailbox does not exist"
            if len(session.append_folders) >= 64:
                session.append_folders.clear()
            session.append_folders[args.mailbox] = folder
        try:
            return await _append_to(session, folder, args, prepared)
        except MailError as exc:
            if not folder_gone(exc):
                raise
            session.append_folders.pop(args.mailbox, None)
            if fresh:  # gone again between the read and the transaction
                return "NO [TRYCREATE] Mailbox does not exist"
            folder = None


async def _append_to(session: Session, folder: dict[str, Any], args: p.AppendArgs,
                     prepared: tuple[bytes, dict[str, Any]]) -> str:
    assert session.mailbox is not None
    data, meta = prepared
    # Keywords are case-insensitive: keep the spelling the folder already uses (the row
    # was read for this APPEND when it names keywords).
    known = {k.lower(): k for k in mailstate.split_flags(folder.get("keywords", ""))}
    flags = {f if f.startswith("\\") else known.get(f.lower(), f) for f in args.flags}
    keywords = [f for f in flags if not f.startswith("\\")]
    delivery = Delivery(mailbox=session.mailbox, data=data, meta=meta, folder=folder["name"], flags=flags,
                        direction="outbound" if folder["special_use"] in ("\\Sent", "\\Drafts") else "inbound",
                        event_type=None,
                        internal_date=iso(args.internal_date) if args.internal_date else None)
    selected = session.selected if session.selected is not None and session.selected.folder["id"] == folder["id"] \
        else None
    since = selected.known_modseq if selected is not None else None
    changes: list[dict] = []

    def finish(conn, rows: list[dict]) -> None:
        if rows[0]["folder_id"] != folder["id"]:
            raise StaleFolder()
        if rows[0]["over_quota"]:  # counting this message
            raise OverQuota()
        if keywords:
            mailstate.add_keywords(conn, folder["id"], keywords)
        if since is not None:  # what the selected view must learn, read in the same transaction
            # (assigned, not appended: the writer may run this again after undoing a merged group)
            changes[:] = [mailstate.changes_since(conn, folder["id"], since)]
            if not selected.readonly:  # and its claim of \Recent for the new message, in the same write
                changes[0]["recent_from"] = mailstate.claim_recent(conn, folder["id"])

    try:
        rows = await deliver(session.rt, [delivery], finish)
    except OverQuota:
        return "NO [OVERQUOTA] Quota exceeded"
    session.publish(folder)
    if selected is not None and selected is session.selected:
        selected.prefetched = changes[0]
    return f"OK [APPENDUID {rows[0]['uidvalidity']} {rows[0]['uid']}] Append completed"


def _prepare_append(message: bytes) -> tuple[bytes, dict[str, Any]]:
    """CRLF line ends and the index metadata of an APPENDed message.

    Its IMAP cache (header block, ENVELOPE) is left to its first FETCH: an APPEND
    answers sooner without it, and clients often never fetch what they appended.
    """
    data = _BARE_LF.sub(b"\r\n", message) if message.count(b"\n") != message.count(b"\r\n") else message
    return data, mime.index_meta(data)
