"""Message state changed through the API: labels, flags, folder moves, deletion of messages and threads.

System labels are derived from state and cannot be set: `inbound`/`outbound`
(direction), `unread` (no \\Seen), `spam` (in Junk), `bounced` (an outbound
message whose delivery bounced). Custom labels are IMAP keywords on the
message, so a mail client sees them as tags and an agent sees a client's
keywords as labels. Changes go through the same store functions as IMAP
STORE/MOVE/EXPUNGE (flags, modseq, UIDs, Maildir file names) and wake IMAP
sessions at once.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, Iterable

from ..errors import ErrorCode, MailError, not_found
from ..store import maildir, mailstate, messages

SYSTEM_LABELS = ("inbound", "outbound", "unread", "spam", "bounced")
MAX_LABELS = 50
_LABEL = re.compile(r"^[A-Za-z0-9$][A-Za-z0-9_.:/+#@$-]{0,63}$")  # a valid IMAP keyword (RFC 3501 atom)


def custom_labels(row: dict[str, Any]) -> list[str]:
    return [f for f in mailstate.split_flags(row.get("flags") or "") if not f.startswith("\\")]


def system_labels(row: dict[str, Any], outbound_state: str | None = None) -> list[str]:
    flags = mailstate.split_flags(row.get("flags") or "")
    out = [row.get("direction") or "inbound"]
    if "\\Seen" not in flags:
        out.append("unread")
    if row.get("folder") == "Junk":
        out.append("spam")
    if outbound_state == "bounced":
        out.append("bounced")
    return out


def check_labels(value: Any, field: str = "labels") -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MailError(ErrorCode.INVALID_REQUEST, f"{field} must be a list of strings")
    if len(value) > MAX_LABELS:
        raise MailError(ErrorCode.INVALID_REQUEST, f"{field}: at most {MAX_LABELS} labels")
    out: list[str] = []
    for label in value:
        if label.lower() in SYSTEM_LABELS:
            raise MailError(ErrorCode.INVALID_LABEL, f"{label!r} is a system label; it follows the message's state", fix=f"custom labels cannot be {', '.join(SYSTEM_LABELS)}")
        if not _LABEL.match(label):
            raise MailError(ErrorCode.INVALID_LABEL, f"{label!r} is not a valid label",
                            fix="letters, digits and _ . : / + # @ $ -, up to 64 characters")
        if label.lower() not in {o.lower() for o in out}:
            out.append(label)
    return out


def _folder_path(rt: Any, mailbox: dict[str, Any], folder: str):
    root = maildir.mailbox_root(rt.settings.mail_root, mailbox["domain"], mailbox["local_part"])
    return maildir.folder_dir(root, folder)


def _changed(rt: Any, mailbox_id: str, folders: Iterable[dict[str, Any]]) -> None:
    for folder in folders:
        rt.hub.publish({"type": "mailbox.changed", "mailbox_id": mailbox_id, "folder_id": folder["id"],
                        "folder": folder["name"], "origin": "api", "durable": False})


def apply_labels(conn: sqlite3.Connection, rt: Any, mailbox: dict[str, Any], message_id: str, *,
                 replace: list[str] | None = None, add: Iterable[str] = (), remove: Iterable[str] = ()
                 ) -> dict[str, Any] | None:
    """Set the custom labels of one message inside the caller's write transaction; returns its folder."""
    row = messages.get_message(conn, message_id)
    if row is None:
        return None
    folder = messages.get_folder(conn, row["mailbox_id"], row["folder"])
    assert folder is not None
    flags = mailstate.split_flags(row["flags"])
    system = [f for f in flags if f.startswith("\\")]
    current = [f for f in flags if not f.startswith("\\")]
    removed = {r.lower() for r in remove}
    wanted = list(replace) if replace is not None else [c for c in current if c.lower() not in removed] + [
        a for a in add if a.lower() not in {c.lower() for c in current}]
    if sorted(wanted) == sorted(current):
        return folder
    mailstate.store_flags(conn, folder["id"], _folder_path(rt, mailbox, row["folder"]), [row["uid"]], "replace",
                          system + wanted, rt.renames.queue)
    return folder


async def set_labels(rt: Any, mailbox: dict[str, Any], message_id: str, *, replace: list[str] | None = None,
                     add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
    add, remove = list(add), list(remove)
    folder = await rt.adb.write(lambda conn: apply_labels(conn, rt, mailbox, message_id, replace=replace, add=add,
                                                          remove=remove))
    if folder is not None:
        _changed(rt, mailbox["id"], [folder])


async def delete_thread(rt: Any, mailbox: dict[str, Any], thread_id: str) -> None:
    """Delete a thread and every message in it, as an IMAP client would (\\Deleted, EXPUNGE)."""

    def remove(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        touched = []
        for folder_id, uids in messages.thread_rows_by_folder(conn, thread_id).items():
            folder = mailstate.folder_by_id(conn, folder_id)
            if folder is None:
                continue
            path = _folder_path(rt, mailbox, folder["name"])
            mailstate.store_flags(conn, folder_id, path, uids, "add", ["\\Deleted"], rt.renames.queue)
            mailstate.expunge(conn, mailbox["id"], folder_id, path, uids)
            touched.append(folder)
        messages.delete_thread_row(conn, thread_id)
        return touched

    _changed(rt, mailbox["id"], await rt.adb.write(remove))


TRASH = next(name for name, use in maildir.DEFAULT_FOLDERS.items() if use == "\\Trash")
SETTABLE_FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted")


def check_flags(value: Any, field: str) -> list[str]:
    """System flags by IMAP name (`\\Seen`) or plain word (`seen`)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MailError(ErrorCode.INVALID_REQUEST, f"{field} must be a list of flags")
    by_name = {f.lower().lstrip("\\"): f for f in SETTABLE_FLAGS}
    out = []
    for flag in value:
        canonical = by_name.get(flag.lower().lstrip("\\"))
        if canonical is None:
            raise MailError(ErrorCode.INVALID_REQUEST, f"{field}: {flag!r} is not one of {', '.join(SETTABLE_FLAGS)}", fix="custom tags go in add_labels/remove_labels")
        out.append(canonical)
    return out


async def update_message(rt: Any, mailbox: dict[str, Any], message_id: str, *, add_flags: list[str],
                         remove_flags: list[str], folder: str | None) -> None:
    """Set and clear flags, then move to `folder`, in one transaction."""

    def change(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        row = messages.get_message(conn, message_id)
        if row is None:
            raise not_found("message")
        source = messages.get_folder(conn, mailbox["id"], row["folder"])
        path = _folder_path(rt, mailbox, row["folder"])
        for mode, flags in (("add", add_flags), ("remove", remove_flags)):
            if flags:
                mailstate.store_flags(conn, source["id"], path, [row["uid"]], mode, flags, rt.renames.queue)
        touched = [source]
        if folder is not None and folder != row["folder"]:
            target = messages.get_folder(conn, mailbox["id"], folder)
            if target is None:
                raise MailError(ErrorCode.UNKNOWN_FOLDER, f"there is no folder {folder!r}",
                                fix="use INBOX, Sent, Drafts, Trash, Junk, Archive or a folder made over IMAP")
            mailstate.move_messages(conn, source["id"], path, target["id"],
                                    _folder_path(rt, mailbox, folder), [row["uid"]])
            touched.append(target)
        return touched

    _changed(rt, mailbox["id"], await rt.adb.write(change))


async def delete_message(rt: Any, mailbox: dict[str, Any], message_id: str, permanent: bool) -> str:
    """Move to Trash, or expunge when `permanent` or already in Trash; returns what happened."""
    row = await rt.adb.read(messages.get_message, message_id)
    if row is None:
        raise not_found("message")
    if not permanent and row["folder"] != TRASH:
        await update_message(rt, mailbox, message_id, add_flags=[], remove_flags=[], folder=TRASH)
        return "moved_to_trash"

    def remove(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        current = messages.get_message(conn, message_id)
        if current is None:
            raise not_found("message")
        folder = messages.get_folder(conn, mailbox["id"], current["folder"])
        path = _folder_path(rt, mailbox, current["folder"])
        mailstate.store_flags(conn, folder["id"], path, [current["uid"]], "add", ["\\Deleted"], rt.renames.queue)
        mailstate.expunge(conn, mailbox["id"], folder["id"], path, [current["uid"]])
        return [folder]

    _changed(rt, mailbox["id"], await rt.adb.write(remove))
    return "deleted"
