"""The folder hierarchy: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS and NAMESPACE
(RFC 3501 §6.3, LIST-EXTENDED RFC 5258, SPECIAL-USE RFC 6154, NAMESPACE RFC 2342), and which names folders may have.

Folders are Maildir++ dot folders; "/" is the hierarchy separator clients see.
"""

from __future__ import annotations

import re
from typing import Optional

from ..store import maildir, mailstate
from ..store.messages import get_folder
from . import protocol as p
from .session import Session

SEPARATOR = "/"
MAX_FOLDER_NAME = 255
_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f%*.\\]")


def check_folder_name(name: str) -> Optional[str]:
    """Why `name` cannot be a folder name, or None when it can.

    Names map onto Maildir++ dot folders, so "." is not allowed; "/" is the
    hierarchy separator and may not start, end or double up.
    """
    if not name:
        return "Empty mailbox name"
    if len(name.encode("utf-8")) > MAX_FOLDER_NAME:
        return "Mailbox name too long"
    if _BAD_NAME_CHARS.search(name):
        return "Mailbox names may not contain dots, wildcards, backslashes or control characters"
    if name.startswith(SEPARATOR) or name.endswith(SEPARATOR) or SEPARATOR * 2 in name:
        return "Invalid hierarchy in mailbox name"
    if any(part.strip() != part or not part for part in name.split(SEPARATOR)):
        return "Mailbox name parts may not begin or end with spaces"
    return None


def _list_regex(pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8 wildcards: * matches anything, % anything but the separator."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^" + re.escape(SEPARATOR) + "]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _inbox_fold(name: str) -> str:
    """INBOX is case-insensitive, also as the first level of a pattern or name."""
    head, sep, tail = name.partition(SEPARATOR)
    if head.upper() == "INBOX":
        return "INBOX" + sep + tail
    return name


async def cmd_namespace(session: Session, cmd: p.Command) -> str:
    session.untagged(f'NAMESPACE (("" "{SEPARATOR}")) NIL NIL')
    return "OK Namespace completed"


async def cmd_create(session: Session, cmd: p.Command) -> str:
    args: p.CreateArgs = cmd.args  # type: ignore[assignment]
    assert session.mailbox is not None
    if args.parameters:
        return "BAD CREATE parameters are not supported"
    name = _inbox_fold(args.mailbox)
    if name.endswith(SEPARATOR):  # RFC 3501 §6.3.3: a trailing separator only states intent
        name = name.rstrip(SEPARATOR)
    if name == "INBOX":
        return "NO [ALREADYEXISTS] INBOX always exists"
    problem = check_folder_name(name)
    if problem:
        return f"NO [CANNOT] {problem}"
    existing = await session.rt.adb.read(get_folder, session.mailbox["id"], name)
    if existing is not None:
        return "NO [ALREADYEXISTS] Mailbox already exists"
    parts = name.split(SEPARATOR)
    names = [SEPARATOR.join(parts[:i]) for i in range(1, len(parts) + 1)]
    names = [_inbox_fold(n) for n in names if _inbox_fold(n) != "INBOX"]
    root = session.mailbox_root()
    await session.rt.run(lambda: [maildir.ensure_folder(root, n) for n in names])
    created = await session.rt.adb.write(mailstate.create_folders, session.mailbox["id"], names)
    if not any(r["name"] == name for r in created):
        return "NO [ALREADYEXISTS] Mailbox already exists"
    return "OK Create completed"


async def cmd_delete(session: Session, cmd: p.Command) -> str:
    args: p.MailboxArgs = cmd.args  # type: ignore[assignment]
    assert session.mailbox is not None
    name = args.mailbox
    if name == "INBOX":
        return "NO [CANNOT] INBOX cannot be deleted"
    if name in maildir.DEFAULT_FOLDERS:
        return f"NO [CANNOT] {name} is a system folder and cannot be deleted"
    root = session.mailbox_root()
    trash = root / "tmp" / mailstate.trash_name()
    if session.selected is not None and session.selected.folder["name"] == name:
        await session.leave_mailbox()
    folder = await session.rt.adb.write(mailstate.delete_folder, session.mailbox["id"], name,
                                        maildir.folder_dir(root, name), trash)
    if folder is None:
        return "NO [NONEXISTENT] Mailbox does not exist"
    await session.rt.run(_remove_tree, trash)
    session.publish(folder)
    return "OK Delete completed"


async def cmd_rename(session: Session, cmd: p.Command) -> str:
    args: p.RenameArgs = cmd.args  # type: ignore[assignment]
    assert session.mailbox is not None
    old, new = args.source, _inbox_fold(args.destination).rstrip(SEPARATOR)
    if new == "INBOX":
        return "NO [ALREADYEXISTS] INBOX always exists"
    problem = check_folder_name(new)
    if problem:
        return f"NO [CANNOT] {problem}"
    if old != "INBOX" and old in maildir.DEFAULT_FOLDERS:
        return f"NO [CANNOT] {old} is a system folder and cannot be renamed"
    if new == old or new.startswith(old + SEPARATOR):
        return "NO [CANNOT] Cannot rename a mailbox into itself"
    mailbox_id = session.mailbox["id"]
    source = await session.rt.adb.read(get_folder, mailbox_id, old)
    if source is None:
        return "NO [NONEXISTENT] Mailbox does not exist"
    if await session.rt.adb.read(get_folder, mailbox_id, new) is not None:
        return "NO [ALREADYEXISTS] Target mailbox already exists"
    root = session.mailbox_root()
    parts = new.split(SEPARATOR)
    parents = [_inbox_fold(SEPARATOR.join(parts[:i])) for i in range(1, len(parts))]
    parents = [n for n in parents if n != "INBOX"]
    if parents:
        await session.rt.run(lambda: [maildir.ensure_folder(root, n) for n in parents])
        await session.rt.adb.write(mailstate.create_folders, mailbox_id, parents)
    if old == "INBOX":
        return await _rename_inbox(session, new)
    await session.rt.adb.write(mailstate.rename_folder, mailbox_id, old, new, root)
    selected = session.selected
    if selected is not None and (selected.folder["name"] == old
                                 or selected.folder["name"].startswith(old + SEPARATOR)):
        # The selected folder moved with the rename; it stays selected under its new name.
        renamed = new + selected.folder["name"][len(old):]
        selected.folder = {**selected.folder, "name": renamed}
        selected.path = session.folder_path(renamed)
    session.publish(source)
    return "OK Rename completed"


async def _rename_inbox(session: Session, new: str) -> str:
    """RFC 3501 §6.3.5: renaming INBOX moves its messages to a new folder; INBOX stays."""
    assert session.mailbox is not None
    root = session.mailbox_root()
    await session.rt.run(maildir.ensure_folder, root, new)
    await session.rt.adb.write(mailstate.create_folders, session.mailbox["id"], [new])
    inbox = await session.rt.adb.read(get_folder, session.mailbox["id"], "INBOX")
    target = await session.rt.adb.read(get_folder, session.mailbox["id"], new)
    uids = await session.rt.adb.read(mailstate.folder_uids, inbox["id"])
    if uids:
        await session.rt.adb.write(mailstate.move_messages, inbox["id"], maildir.folder_dir(root, "INBOX"),
                                   target["id"], maildir.folder_dir(root, new), uids)
    session.publish(inbox)
    return "OK Rename completed"


async def cmd_subscribe(session: Session, cmd: p.Command) -> str:
    args: p.MailboxArgs = cmd.args  # type: ignore[assignment]
    assert session.mailbox is not None
    await session.rt.adb.write(mailstate.set_subscribed, session.mailbox["id"], args.mailbox,
                               cmd.name == "SUBSCRIBE")
    return f"OK {cmd.name.capitalize()} completed"


async def _folder_tree(session: Session) -> tuple[dict[str, dict], set[str]]:
    """Existing folders by name, and every name that has children (incl. virtual parents)."""
    assert session.mailbox is not None
    rows = await session.rt.adb.read(mailstate.folder_names, session.mailbox["id"])
    folders = {r["name"]: r for r in rows}
    parents: set[str] = set()
    for name in folders:
        parts = name.split(SEPARATOR)
        for i in range(1, len(parts)):
            parents.add(SEPARATOR.join(parts[:i]))
    return folders, parents


async def cmd_list(session: Session, cmd: p.Command) -> str:
    args: p.ListArgs = cmd.args  # type: ignore[assignment]
    if cmd.name == "LSUB":
        return await _lsub(session, args)
    selection = {str(v).upper() for v in args.selection_options if isinstance(v, str)}
    returns = {str(v).upper() for v in args.return_options if isinstance(v, str)}
    if selection - {"SUBSCRIBED", "SPECIAL-USE", "REMOTE", "RECURSIVEMATCH"} or \
            returns - {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"}:
        return "BAD Unsupported LIST option"
    if len(args.patterns) == 1 and args.patterns[0] == "" and not selection:
        # RFC 3501 §6.3.8: the hierarchy delimiter and root name.
        session.untagged(f'LIST (\\Noselect) "{SEPARATOR}" ""')
        return "OK List completed"
    folders, parents = await _folder_tree(session)
    subscribed: set[str] = set()
    if "SUBSCRIBED" in selection or "SUBSCRIBED" in returns:
        assert session.mailbox is not None
        subscribed = set(await session.rt.adb.read(mailstate.subscribed_names, session.mailbox["id"]))
    candidates = set(folders) | parents
    if "SUBSCRIBED" in selection:
        candidates = (candidates & subscribed) | {n for n in subscribed}
    matched: list[str] = []
    for pattern in args.patterns:
        full = _inbox_fold(args.reference + pattern if args.reference else pattern)
        regex = _list_regex(full)
        matched.extend(n for n in candidates if regex.fullmatch(n) and n not in matched)
    for name in sorted(matched, key=lambda n: (n != "INBOX", n)):
        row = folders.get(name)
        if "SPECIAL-USE" in selection and not (row and row["special_use"]):
            continue
        attrs = []
        if row is None:
            attrs.append("\\NonExistent" if name not in parents else "\\Noselect")
        attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
        if row is not None and row["special_use"]:
            attrs.append(row["special_use"])
        if "SUBSCRIBED" in returns or "SUBSCRIBED" in selection:
            if name in subscribed:
                attrs.append("\\Subscribed")
        session.untagged(b"LIST (" + " ".join(attrs).encode() + b') "' + SEPARATOR.encode() + b'" '
                         + p.encode_mailbox(name))
    return "OK List completed"


async def _lsub(session: Session, args: p.ListArgs) -> str:
    assert session.mailbox is not None
    subscribed = await session.rt.adb.read(mailstate.subscribed_names, session.mailbox["id"])
    folders, _ = await _folder_tree(session)
    pattern = _inbox_fold(args.reference + args.pattern if args.reference else args.pattern)
    regex = _list_regex(pattern)
    out: dict[str, str] = {}
    for name in subscribed:
        if regex.fullmatch(name):
            out[name] = "" if name in folders else "\\Noselect"
        elif pattern.endswith("%"):
            # RFC 3501 §6.3.9: a parent matched by a trailing % is listed \Noselect
            # when only names below it are subscribed.
            parts = name.split(SEPARATOR)
            for i in range(1, len(parts)):
                parent = SEPARATOR.join(parts[:i])
                if regex.fullmatch(parent) and parent not in out:
                    out[parent] = "\\Noselect"
    for name in sorted(out):
        if name in subscribed and out[name] == "\\Noselect" and name in folders:
            out[name] = ""
        session.untagged(b"LSUB (" + out[name].encode() + b') "' + SEPARATOR.encode() + b'" '
                         + p.encode_mailbox(name))
    return "OK Lsub completed"


async def cmd_status(session: Session, cmd: p.Command) -> str:
    args: p.StatusArgs = cmd.args  # type: ignore[assignment]
    assert session.mailbox is not None
    folder = await session.rt.adb.read(get_folder, session.mailbox["id"], args.mailbox)
    if folder is None:
        return "NO [NONEXISTENT] Mailbox does not exist"
    status = await session.rt.adb.read(mailstate.folder_status, folder["id"], folder["first_recent_uid"])
    status["appendlimit"] = session.rt.settings.message_size_limit
    items = " ".join(f"{item} {status[item.lower()]}" for item in args.items)
    session.untagged(b"STATUS " + p.encode_mailbox(args.mailbox) + b" (" + items.encode() + b")")
    return "OK Status completed"


def _remove_tree(path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
