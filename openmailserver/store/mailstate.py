"""The SQL (and the Maildir renames that go with it) behind IMAP.

Every function takes a connection first and runs inside the caller's
transaction (`Database.read`/`write`, `AsyncDatabase.read`/`write`). Functions
that change flags, expunge or move messages also rename or unlink the Maildir
files, *after* their SQL, on the writer thread: that keeps file operations in
the same order as the commits, so two sessions changing the same message in
quick succession leave its file name matching the index. A crash between the
file operation and the commit is repaired by the start-up reconcile pass (a
file that is gone drops its row; a moved file is adopted where it now lives).

Conventions: flags are stored space-separated (system flags canonical, e.g.
`\\Seen`); modseq grows by one per change (RFC 7162 style, ready for
CONDSTORE); every change bumps `folders.highestmodseq`, which is what IMAP
sessions poll to notice work of other sessions.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Optional

from ..util import new_id, now_iso
from . import maildir
from .messages import create_folder, get_folder

Row = dict[str, Any]
MessageTuple = tuple  # (uid, id, flags, modseq, size, internal_date, filename)

SYSTEM_FLAG_ORDER = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_MESSAGE_COLUMNS = "uid, id, flags, modseq, size, internal_date, filename"
# Columns a copy takes over from its source row.
_COPIED_COLUMNS = (
    "size, flags, internal_date, message_id, in_reply_to, refs, subject, from_addr, to_addrs, "
    "date_header, thread_id, direction, envelope_from, subaddress, auth_results, spf, dkim, dmarc"
)


def split_flags(text: str) -> list[str]:
    return [f for f in text.split(" ") if f]


def join_flags(flags: Iterable[str]) -> str:
    """Canonical storage order: system flags first (RFC 3501 order), then keywords."""
    flags = set(flags)
    system = [f for f in SYSTEM_FLAG_ORDER if f in flags]
    keywords = sorted(f for f in flags if f not in SYSTEM_FLAG_ORDER)
    return " ".join(system + keywords)


def _ranges(uids: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for uid in sorted(uids):
        if out and uid == out[-1][1] + 1:
            out[-1] = (out[-1][0], uid)
        else:
            out.append((uid, uid))
    return out


def _rows_for_uids(conn: sqlite3.Connection, folder_id: int, columns: str, uids: list[int]) -> list[sqlite3.Row]:
    """Rows of the given UIDs, fetched by contiguous ranges (one query per range)."""
    wanted = set(uids)
    out: list[sqlite3.Row] = []
    for lo, hi in _ranges(uids):
        for row in conn.execute(
                f"SELECT {columns} FROM messages WHERE folder_id = ? AND uid BETWEEN ? AND ? ORDER BY uid",
                (folder_id, lo, hi)):
            if row["uid"] in wanted:
                out.append(row)
    return out


def _bump_modseq(conn: sqlite3.Connection, folder_id: int) -> int:
    row = conn.execute("SELECT highestmodseq FROM folders WHERE id = ?", (folder_id,)).fetchone()
    modseq = row[0] + 1
    conn.execute("UPDATE folders SET highestmodseq = ? WHERE id = ?", (modseq, folder_id))
    return modseq


# ---- folders ---------------------------------------------------------------

def folder_by_id(conn: sqlite3.Connection, folder_id: int) -> Row | None:
    row = conn.execute("SELECT * FROM folders WHERE id = ?", (folder_id,)).fetchone()
    return dict(row) if row else None


def folder_names(conn: sqlite3.Connection, mailbox_id: str) -> list[Row]:
    rows = conn.execute(
        "SELECT id, name, special_use, subscribed FROM folders WHERE mailbox_id = ? ORDER BY name",
        (mailbox_id,))
    return [dict(r) for r in rows]


def create_folders(conn: sqlite3.Connection, mailbox_id: str, names: list[str]) -> list[Row]:
    """Create every name that does not exist yet (parents first); returns the new rows.

    A new folder is subscribed only if its name was subscribed before (a
    subscription outlives the folder, RFC 3501 §6.3.6).
    """
    created = []
    for name in names:
        if get_folder(conn, mailbox_id, name) is not None:
            continue
        row = create_folder(conn, mailbox_id, name)
        # RFC 3501 §2.3.1.1: a recreated name must not get the UIDVALIDITY of a deleted
        # folder (whose value may be gone from the folders table).
        last = _counter(conn, "uidvalidity")
        if row["uidvalidity"] <= last:
            row["uidvalidity"] = last + 1
            conn.execute("UPDATE folders SET uidvalidity = ? WHERE id = ?", (row["uidvalidity"], row["id"]))
        _set_counter(conn, "uidvalidity", row["uidvalidity"])
        orphan = conn.execute("DELETE FROM subscriptions WHERE mailbox_id = ? AND name = ?",
                              (mailbox_id, name)).rowcount
        conn.execute("UPDATE folders SET subscribed = ? WHERE id = ?", (1 if orphan else 0, row["id"]))
        row["subscribed"] = 1 if orphan else 0
        created.append(row)
    return created


def delete_folder(conn: sqlite3.Connection, mailbox_id: str, name: str, folder_path: Path,
                  trash_dir: Path) -> Optional[Row]:
    """Drop a folder, its messages and their quota; its directory moves to `trash_dir`.

    Returns the deleted folder row (None if it did not exist). The caller
    removes `trash_dir` once the transaction has committed.
    """
    folder = get_folder(conn, mailbox_id, name)
    if folder is None:
        return None
    total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM messages WHERE folder_id = ?",
                         (folder["id"],)).fetchone()[0]
    conn.execute("DELETE FROM messages WHERE folder_id = ?", (folder["id"],))
    conn.execute("DELETE FROM folders WHERE id = ?", (folder["id"],))
    _set_counter(conn, "uidvalidity", folder["uidvalidity"])
    conn.execute("UPDATE mailboxes SET used_bytes = MAX(0, used_bytes - ?) WHERE id = ?", (total, mailbox_id))
    if folder["subscribed"]:
        conn.execute("INSERT OR IGNORE INTO subscriptions (mailbox_id, name) VALUES (?, ?)", (mailbox_id, name))
    if folder_path.is_dir():
        trash_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder_path, trash_dir)
    return folder


def rename_folder(conn: sqlite3.Connection, mailbox_id: str, old: str, new: str,
                  mailbox_root: Path) -> list[tuple[str, str]]:
    """Rename a folder and every folder below it (RFC 3501 §6.3.5); returns the (old, new) names.

    Their directories are renamed after the SQL. UIDVALIDITY is kept: the
    messages and their UIDs are unchanged.
    """
    rows = conn.execute(
        "SELECT id, name FROM folders WHERE mailbox_id = ? AND (name = ? OR name LIKE ? ESCAPE '!')",
        (mailbox_id, old, _like_prefix(old + "/"))).fetchall()
    pairs = [(r["name"], new + r["name"][len(old):]) for r in rows]
    for (src, dst), row in zip(pairs, rows):
        conn.execute("UPDATE folders SET name = ? WHERE id = ?", (dst, row["id"]))
        if conn.execute("DELETE FROM subscriptions WHERE mailbox_id = ? AND name = ?",
                        (mailbox_id, dst)).rowcount:
            conn.execute("UPDATE folders SET subscribed = 1 WHERE id = ?", (row["id"],))
    for src, dst in pairs:
        src_dir = maildir.folder_dir(mailbox_root, src)
        if src_dir.is_dir():
            os.rename(src_dir, maildir.folder_dir(mailbox_root, dst))
    return pairs


def _counter(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return row[0] if row else 0


def _set_counter(conn: sqlite3.Connection, name: str, value: int) -> None:
    """Raise a counter to `value` (never lowers it)."""
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                 "ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)", (name, value))


def _like_prefix(prefix: str) -> str:
    return prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def set_subscribed(conn: sqlite3.Connection, mailbox_id: str, name: str, subscribed: bool) -> None:
    folder = get_folder(conn, mailbox_id, name)
    if folder is not None:
        conn.execute("UPDATE folders SET subscribed = ? WHERE id = ?", (int(subscribed), folder["id"]))
    if subscribed and folder is None:
        conn.execute("INSERT OR IGNORE INTO subscriptions (mailbox_id, name) VALUES (?, ?)", (mailbox_id, name))
    elif not subscribed:
        conn.execute("DELETE FROM subscriptions WHERE mailbox_id = ? AND name = ?", (mailbox_id, name))


def subscribed_names(conn: sqlite3.Connection, mailbox_id: str) -> list[str]:
    names = [r[0] for r in conn.execute(
        "SELECT name FROM folders WHERE mailbox_id = ? AND subscribed = 1", (mailbox_id,))]
    names += [r[0] for r in conn.execute("SELECT name FROM subscriptions WHERE mailbox_id = ?", (mailbox_id,))]
    return sorted(set(names))


def claim_recent(conn: sqlite3.Connection, folder_id: int, up_to: Optional[int] = None) -> int:
    """Claim the \\Recent messages below UID `up_to` (default: every message now in the
    folder) for one session: returns the first UID that was still \\Recent before, so the
    session's \\Recent messages are the UIDs from it up to `up_to`.

    RFC 3501 §2.3.2: a message is \\Recent in one session only. The claim lives in the
    index, in the same write as the claim's check, so sessions in other worker processes
    never claim a message twice."""
    row = conn.execute("SELECT first_recent_uid, uidnext FROM folders WHERE id = ?", (folder_id,)).fetchone()
    if row is None:
        return up_to or 0
    first, uidnext = row
    up_to = uidnext if up_to is None else up_to
    if up_to > first:
        conn.execute("UPDATE folders SET first_recent_uid = ? WHERE id = ?", (up_to, folder_id))
    return first


def add_keywords(conn: sqlite3.Connection, folder_id: int, keywords: Iterable[str]) -> Optional[list[str]]:
    """Define keywords in a folder; returns the new list when it grew, else None."""
    row = conn.execute("SELECT keywords FROM folders WHERE id = ?", (folder_id,)).fetchone()
    if row is None:
        return None
    current = split_flags(row[0])
    known = {k.lower() for k in current}
    added = False
    for keyword in keywords:
        if keyword.lower() not in known:
            current.append(keyword)
            known.add(keyword.lower())
            added = True
    if not added:
        return None
    conn.execute("UPDATE folders SET keywords = ? WHERE id = ?", (" ".join(current), folder_id))
    return current


def folder_status(conn: sqlite3.Connection, folder_id: int, first_recent_uid: int) -> Row:
    """Counts for STATUS (RFC 3501 §6.3.10, plus SIZE and DELETED)."""
    folder = folder_by_id(conn, folder_id)
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), "
        "COALESCE(SUM(CASE WHEN flags LIKE '%\\Seen%' THEN 0 ELSE 1 END), 0), "
        "COALESCE(SUM(CASE WHEN flags LIKE '%\\Deleted%' THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN uid >= ? THEN 1 ELSE 0 END), 0) "
        "FROM messages WHERE folder_id = ?", (first_recent_uid, folder_id)).fetchone()
    assert folder is not None
    return {"messages": row[0], "size": row[1], "unseen": row[2], "deleted": row[3], "recent": row[4],
            "uidnext": folder["uidnext"], "uidvalidity": folder["uidvalidity"],
            "highestmodseq": folder["highestmodseq"]}


# ---- the message list of a selected folder -------------------------------

def _plain(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor returning plain tuples (much cheaper than sqlite3.Row for big results)."""
    cur = conn.cursor()
    cur.row_factory = None
    return cur


def load_messages(conn: sqlite3.Connection, folder_id: int) -> tuple[Optional[Row], list[tuple[int, str, int]]]:
    """The folder row and every message as (uid, flags, modseq), from a covering index."""
    folder = folder_by_id(conn, folder_id)
    if folder is None:
        return None, []
    rows = _plain(conn).execute("SELECT uid, flags, modseq FROM messages WHERE folder_id = ? ORDER BY uid",
                                (folder_id,)).fetchall()
    return folder, rows


def message_details(conn: sqlite3.Connection, folder_id: int, lo: int, hi: int,
                    cache: tuple[str, ...] = ()) -> list[tuple]:
    """(uid, id, size, internal_date, filename, *cache columns) for UIDs lo..hi, in UID order."""
    assert all(c in CACHE_COLUMNS for c in cache)
    if cache:
        extra = "".join(f", c.{c}" for c in cache)
        sql = (f"SELECT m.uid, m.id, m.size, m.internal_date, m.filename{extra} FROM messages m "
               "LEFT JOIN message_cache c ON c.message_id = m.id "
               "WHERE m.folder_id = ? AND m.uid BETWEEN ? AND ? ORDER BY m.uid")
    else:
        sql = ("SELECT uid, id, size, internal_date, filename FROM messages "
               "WHERE folder_id = ? AND uid BETWEEN ? AND ? ORDER BY uid")
    return _plain(conn).execute(sql, (folder_id, lo, hi)).fetchall()


def message_details_for(conn: sqlite3.Connection, folder_id: int, uids: list[int],
                        cache: tuple[str, ...] = ()) -> list[tuple]:
    """`message_details` for a set of UIDs: one query per contiguous run, only those UIDs."""
    wanted = set(uids)
    out: list[tuple] = []
    for lo, hi in _ranges(uids):
        out.extend(row for row in message_details(conn, folder_id, lo, hi, cache) if row[0] in wanted)
    return out


# Columns of the message index a header SEARCH can use: decoded Subject, formatted From.
INDEXED_HEADERS = {"subject": "subject", "from": "from_addr"}


def header_matches(conn: sqlite3.Connection, folder_id: int, header: str, needle: str) -> set[int]:
    """UIDs whose indexed `header` contains the casefolded `needle` (RFC 3501 §6.4.4 substring
    match, case-insensitive). SQLite's LIKE folds ASCII only, so it preselects the ASCII rows
    and every row with other characters is checked here with `str.casefold`."""
    column = INDEXED_HEADERS[header]
    other = f"length({column}) != length(CAST({column} AS BLOB))"  # characters beyond ASCII
    if needle.isascii():
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = _plain(conn).execute(
            f"SELECT uid, {column} FROM messages WHERE folder_id = ? AND ({column} LIKE ? ESCAPE '\\' OR {other})",
            (folder_id, pattern))
    else:  # only text beyond ASCII can hold it
        rows = _plain(conn).execute(f"SELECT uid, {column} FROM messages WHERE folder_id = ? AND {other}",
                                    (folder_id,))
    return {uid for uid, text in rows if needle in text.casefold()}


def changes_since(conn: sqlite3.Connection, folder_id: int, modseq: int) -> Row:
    """What changed in a folder after `modseq`: the folder row (None if deleted), the
    message count, and the rows (new messages and flag changes) with a higher modseq."""
    folder = folder_by_id(conn, folder_id)
    if folder is None:
        return {"folder": None, "count": 0, "rows": []}
    if folder["highestmodseq"] <= modseq:
        rows: list[MessageTuple] = []
    else:
        rows = _plain(conn).execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id = ? AND modseq > ? ORDER BY uid",
            (folder_id, modseq)).fetchall()
    return {"folder": folder, "count": folder["message_count"], "rows": rows}


def folder_uids(conn: sqlite3.Connection, folder_id: int) -> list[int]:
    return [r[0] for r in conn.execute("SELECT uid FROM messages WHERE folder_id = ? ORDER BY uid", (folder_id,))]


@contextlib.contextmanager
def _folder_fd(folder_path: Path) -> Iterator[Optional[int]]:
    """The folder's directory open for the `*at` calls; None if it is gone, files and all."""
    try:
        fd = os.open(folder_path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


Renames = list[tuple[int, str]]  # (UID, file name before the flag change) of renamed messages


def filenames(conn: sqlite3.Connection, folder_id: int, uids: list[int]) -> dict[int, str]:
    """UID -> the index's file name, for those of `uids` still in the folder."""
    return {r[0]: r[1] for r in _rows_for_uids(conn, folder_id, "uid, filename", uids)}


def rename_files(folder_path: Path, renames: Renames, current: Callable[[list[int]], dict[int, str]]) -> None:
    """Give message files the names the index holds for them now (names relative to the folder).

    `current(uids)` reads those names. It is read under an exclusive lock on the folder's
    directory, which the renames of every worker process take: a rename queued by an earlier
    flag change never undoes the name a later one gave, whichever process runs first. A file
    renamed meanwhile is found by its base name; one expunged meanwhile is skipped."""
    with _folder_fd(folder_path) as fd:
        if fd is None:
            return
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the directory is closed
        names = current([uid for uid, _ in renames])
        locator = maildir.Locator(folder_path)
        for uid, old in renames:
            new = names.get(uid)
            if new is None:
                continue
            if new != old:
                try:
                    os.rename(old, new, src_dir_fd=fd, dst_dir_fd=fd)
                    continue
                except FileNotFoundError:  # renamed by a later change already, or by another tool
                    pass
            # Also when the index is back at the old name (a flag set, then cleared): another
            # worker may have renamed the file in between.
            locator.apply(new, functools.partial(_move_to, fd, new))


def _move_to(dir_fd: int, new: str, name: str) -> None:
    """Rename `name` to `new` in the folder `dir_fd` is open on; nothing to do if it is `new`."""
    if name == new:
        os.stat(name, dir_fd=dir_fd)  # there, or FileNotFoundError
    else:
        os.rename(name, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


StoreMode = Literal["replace", "add", "remove"]


def store_flags(conn: sqlite3.Connection, folder_id: int, folder_path: Path, uids: list[int],
                mode: StoreMode, flags: list[str], rename: Callable[[int, Path, Renames], None]) -> Row:
    """STORE (RFC 3501 §6.4.6) on the given UIDs, atomically against other writers.

    Returns `rows`: (uid, flags, modseq, filename) of every targeted message
    still present, `modseq` of this change (None if nothing changed) and
    `keywords`, the folder's new keyword list if the store defined new ones.
    The files get their new names later, through `rename(folder_id, folder_path, renames)`
    (the daemon's `FlagRenames.queue`, which calls `rename_files`).
    """
    wanted = set(flags)
    keywords = [f for f in flags if not f.startswith("\\")]
    new_keywords = add_keywords(conn, folder_id, keywords) if keywords and mode != "remove" else None
    wanted_uids = set(uids)
    cur = _plain(conn)
    rows = []
    for lo, hi in _ranges(uids):
        rows.extend(r for r in cur.execute(
            "SELECT rowid, uid, flags, modseq, filename FROM messages WHERE folder_id = ? AND uid BETWEEN ? AND ?",
            (folder_id, lo, hi)) if r[1] in wanted_uids)
    changed: list[tuple[str, str, int, int]] = []
    renames: Renames = []
    out: list[tuple[int, str, int, str]] = []
    modseq: Optional[int] = None
    results: dict[str, tuple[str, str]] = {}  # old flags -> (new flags, info suffix): few distinct
    for rowid, uid, old_flags, old_modseq, old_name in rows:
        known = results.get(old_flags)
        if known is None:
            current = set(split_flags(old_flags))
            if mode == "replace":
                result = set(wanted)
            elif mode == "add":
                result = current | wanted
            else:
                result = current - wanted
            text = old_flags if result == current else join_flags(result)
            known = results[old_flags] = (text, maildir.info_suffix(result))
        text, suffix = known
        if text == old_flags:
            out.append((uid, old_flags, old_modseq, old_name))
            continue
        if modseq is None:
            modseq = _bump_modseq(conn, folder_id)
        filename = f"cur/{maildir.base_name(old_name)}{suffix}"
        if filename != old_name:
            renames.append((uid, old_name))
        changed.append((text, filename, modseq, rowid))
        out.append((uid, text, modseq, filename))
    if changed:
        conn.executemany("UPDATE messages SET flags = ?, filename = ?, modseq = ? WHERE rowid = ?", changed)
    if renames:
        rename(folder_id, folder_path, renames)
    return {"rows": out, "modseq": modseq, "keywords": new_keywords}


def expunge(conn: sqlite3.Connection, mailbox_id: str, folder_id: int, folder_path: Path,
            uids: Optional[list[int]] = None) -> list[int]:
    """Remove the messages flagged \\Deleted (only those in `uids` when given); returns their UIDs.

    The files are unlinked after the SQL: a crash before the commit leaves
    rows without files, which start-up reconciliation drops, so an expunged
    message never comes back.
    """
    rows = conn.execute(
        "SELECT uid, id, flags, size, filename, rowid FROM messages WHERE folder_id = ? "
        "AND flags LIKE '%\\Deleted%' ORDER BY uid", (folder_id,)).fetchall()
    allowed = set(uids) if uids is not None else None
    doomed = [r for r in rows if "\\Deleted" in split_flags(r["flags"])
              and (allowed is None or r["uid"] in allowed)]
    if not doomed:
        return []
    _bump_modseq(conn, folder_id)
    conn.executemany("DELETE FROM messages WHERE rowid = ?", [(r["rowid"],) for r in doomed])
    total = sum(r["size"] for r in doomed)
    conn.execute("UPDATE mailboxes SET used_bytes = MAX(0, used_bytes - ?) WHERE id = ?", (total, mailbox_id))
    with _folder_fd(folder_path) as fd:
        if fd is not None:
            locator = maildir.Locator(folder_path)
            for row in doomed:
                locator.apply(row["filename"], functools.partial(os.unlink, dir_fd=fd))
    return [r["uid"] for r in doomed]


def copy_messages(conn: sqlite3.Connection, mailbox_id: str, src_folder_id: int, dst_folder_id: int,
                  items: list[tuple[int, str]]) -> Row:
    """Index copies of messages whose files are already linked into the destination.

    `items` are (source uid, destination filename). Returns `uidvalidity` of the
    destination and `pairs` (source uid, new uid) in order; sources that
    vanished meanwhile are skipped.
    """
    dst = folder_by_id(conn, dst_folder_id)
    if dst is None:
        raise LookupError("destination folder vanished")
    uid = dst["uidnext"]
    modseq = dst["highestmodseq"] + 1
    created = now_iso()
    pairs: list[tuple[int, int]] = []
    keywords: set[str] = set()
    total = 0
    for src_uid, filename in items:
        src = conn.execute("SELECT id, size, flags FROM messages WHERE folder_id = ? AND uid = ?",
                           (src_folder_id, src_uid)).fetchone()
        if src is None:
            continue
        new = new_id("msg")
        conn.execute(
            f"INSERT INTO messages (id, mailbox_id, folder_id, uid, modseq, filename, created_at, {_COPIED_COLUMNS}) "
            f"SELECT ?, mailbox_id, ?, ?, ?, ?, ?, {_COPIED_COLUMNS} FROM messages WHERE id = ?",
            (new, dst_folder_id, uid, modseq, filename, created, src["id"]))
        conn.execute(
            "INSERT INTO message_cache (message_id, header, envelope, body, bodystructure) "
            "SELECT ?, header, envelope, body, bodystructure FROM message_cache WHERE message_id = ?",
            (new, src["id"]))
        keywords.update(f for f in split_flags(src["flags"]) if not f.startswith("\\"))
        total += src["size"]
        pairs.append((src_uid, uid))
        uid += 1
    if pairs:
        conn.execute("UPDATE folders SET uidnext = ?, highestmodseq = ? WHERE id = ?", (uid, modseq, dst_folder_id))
        conn.execute("UPDATE mailboxes SET used_bytes = used_bytes + ? WHERE id = ?", (total, mailbox_id))
        if keywords:
            add_keywords(conn, dst_folder_id, sorted(keywords))
    return {"uidvalidity": dst["uidvalidity"], "pairs": pairs}


def move_messages(conn: sqlite3.Connection, src_folder_id: int, src_path: Path, dst_folder_id: int,
                  dst_path: Path, uids: list[int]) -> Row:
    """MOVE (RFC 6851): the rows change folder and get new UIDs; the files follow.

    The message keeps its id (the API sees the same message in its new
    folder). Returns `uidvalidity` and `pairs` (old uid, new uid).
    """
    dst = folder_by_id(conn, dst_folder_id)
    if dst is None:
        raise LookupError("destination folder vanished")
    rows = _rows_for_uids(conn, src_folder_id, "uid, id, flags, filename", uids)
    if not rows:
        return {"uidvalidity": dst["uidvalidity"], "pairs": []}
    uid = dst["uidnext"]
    if src_folder_id != dst_folder_id:
        _bump_modseq(conn, src_folder_id)  # the source loses messages: other sessions must look
    dst_modseq = dst["highestmodseq"] + 1
    pairs = []
    files = []
    keywords: set[str] = set()
    for row in rows:
        conn.execute("UPDATE messages SET folder_id = ?, uid = ?, modseq = ? WHERE id = ?",
                     (dst_folder_id, uid, dst_modseq, row["id"]))
        pairs.append((row["uid"], uid))
        files.append(row["filename"])
        keywords.update(f for f in split_flags(row["flags"]) if not f.startswith("\\"))
        uid += 1
    conn.execute("UPDATE folders SET uidnext = ?, highestmodseq = ? WHERE id = ?", (uid, dst_modseq, dst_folder_id))
    if keywords:
        add_keywords(conn, dst_folder_id, sorted(keywords))
    if src_path != dst_path:
        locator = maildir.Locator(src_path)
        for filename in files:
            # The index has the name the flags call for; a pending flag rename may not
            # have happened yet, so take the file under whatever name it has now.
            locator.apply(filename, lambda name, filename=filename: os.rename(src_path / name, dst_path / filename))
    return {"uidvalidity": dst["uidvalidity"], "pairs": pairs}


# ---- the per-message cache -------------------------------------------------

CACHE_COLUMNS = ("header", "envelope", "body", "bodystructure")


def cache_sources(conn: sqlite3.Connection, ids: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(id, filename, folder name, local part, domain) of messages that have no cache row yet."""
    out: list[tuple[str, str, str, str, str]] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        out.extend(_plain(conn).execute(
            "SELECT m.id, m.filename, f.name, mb.local_part, d.name FROM messages m "
            "JOIN folders f ON f.id = m.folder_id JOIN mailboxes mb ON mb.id = m.mailbox_id "
            "JOIN domains d ON d.id = mb.domain_id "
            f"WHERE m.id IN ({marks}) AND NOT EXISTS "
            "(SELECT 1 FROM message_cache c WHERE c.message_id = m.id AND c.envelope IS NOT NULL)",
            chunk))
    return out


def cache_new(conn: sqlite3.Connection, entries: list[tuple[str, bytes, bytes]]) -> None:
    """The header and ENVELOPE cache of messages indexed in this transaction:
    (message id, header, envelope) each, in one statement per 300."""
    for start in range(0, len(entries), 300):
        chunk = entries[start:start + 300]
        conn.execute("INSERT INTO message_cache (message_id, header, envelope) VALUES "
                     + ", ".join(["(?, ?, ?)"] * len(chunk)), [v for entry in chunk for v in entry])


def cache_put(conn: sqlite3.Connection, entries: list[tuple[str, dict[str, bytes]]]) -> None:
    """Store computed values; rows of messages expunged meanwhile are skipped."""
    for message_id, values in entries:
        cols = [c for c in CACHE_COLUMNS if c in values]
        if not cols:
            continue
        names = ", ".join(cols)
        marks = ", ".join("?" * len(cols))
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols)
        conn.execute(
            f"INSERT INTO message_cache (message_id, {names}) SELECT ?, {marks} "
            f"WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?) "
            f"ON CONFLICT (message_id) DO UPDATE SET {updates}",
            (message_id, *(values[c] for c in cols), message_id))


def trash_name() -> str:
    """A unique directory name for a folder being deleted."""
    return f".deleted-{uuid.uuid4().hex}"
