"""Entering and leaving the selected state, and the commands valid only there.

SELECT and EXAMINE (RFC 3501 §6.3.1, §6.3.2) open a `Selected` view; CLOSE
(§6.4.2, with its silent expunge) and UNSELECT (RFC 3691) leave it.
`cmd_selected` routes CHECK, EXPUNGE (§6.4.3, UID EXPUNGE RFC 4315 §2.1),
SEARCH, FETCH, STORE, COPY and MOVE to their modules, after bringing a view
that other sessions changed up to date (without reporting expunges: the
command's sequence numbers refer to the view as the client knows it).
"""

from __future__ import annotations

from ..store.messages import get_folder
from . import protocol as p
from .copy import copy, move
from .errors import ImapError
from .fetch import fetch
from .flags import store
from .folders import check_folder_name
from .search import search
from .selected import Selected
from .session import Session


async def cmd_select(session: Session, cmd: p.Command) -> str:
    args: p.SelectArgs = cmd.args  # type: ignore[assignment]
    await session.leave_mailbox()  # RFC 3501 §6.3.1: a failed SELECT leaves none selected
    if args.parameters:
        return "BAD SELECT parameters are not supported"
    assert session.mailbox is not None
    name = args.mailbox
    folder = await session.rt.adb.read(get_folder, session.mailbox["id"], name) if not check_folder_name(name) \
        or name == "INBOX" else None
    if folder is None:
        return "NO [NONEXISTENT] Mailbox does not exist"
    readonly = cmd.name == "EXAMINE"
    selected = await Selected.open(session, folder, readonly)
    if selected is None:
        return "NO [NONEXISTENT] Mailbox does not exist"
    session.selected = selected
    session.state = "selected"
    session.drain_hub()
    selected.dirty = False
    selected.greet(session)
    return "OK [READ-ONLY] Examine completed" if readonly else "OK [READ-WRITE] Select completed"


async def cmd_close(session: Session, cmd: p.Command) -> str:
    assert session.selected is not None
    selected = session.selected
    if cmd.name == "CLOSE" and not selected.readonly:
        await selected.expunge(session, silent=True)
    await session.leave_mailbox()
    return f"OK {cmd.name.capitalize()} completed"


async def cmd_selected(session: Session, cmd: p.Command) -> str:
    """CHECK, EXPUNGE, SEARCH, FETCH, STORE, COPY and MOVE: run on the selected folder's view."""
    selected = session.selected
    assert selected is not None
    if selected.dirty and cmd.name in ("FETCH", "STORE", "SEARCH", "COPY", "MOVE"):
        # The command's numbers refer to the current view: never expunge before it runs.
        await selected.sync(session, allow_expunge=False)
    name = cmd.name
    if name == "CHECK":
        return "OK Check completed"
    if name == "FETCH":
        return await fetch(selected, session, cmd.args, cmd.uid)  # type: ignore[arg-type]
    if name == "STORE":
        return await store(selected, session, cmd.args, cmd.uid)  # type: ignore[arg-type]
    if name == "SEARCH":
        return await search(selected, session, cmd.args, cmd.uid)  # type: ignore[arg-type]
    if name == "EXPUNGE":
        if selected.readonly:
            return "NO [READ-ONLY] Mailbox is read-only"
        uids = None
        if cmd.uid:
            indexes = selected.resolve(cmd.args.sequence_set, True)  # type: ignore[union-attr]
            uids = [selected.msgs[i].uid for i in indexes]
        await selected.expunge(session, silent=False, uids=uids)
        return "OK Expunge completed"
    if name == "COPY":
        return await copy(selected, session, cmd.args, cmd.uid)  # type: ignore[arg-type]
    if name == "MOVE":
        return await move(selected, session, cmd.args, cmd.uid)  # type: ignore[arg-type]
    raise ImapError("BAD Unknown command")
