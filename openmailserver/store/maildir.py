"""The Maildir++ tree: `mail_root/<domain>/<local>/` with dot folders.

Durable delivery (docs/architecture.md, "Invariants"): write to `tmp/` and rename into `new/` (`place`),
then fsync the file and the directory (`sync_file`, `sync_dir`). The message is
acknowledged only after those fsyncs and the index commit have all completed.
The three run at the same time: a power loss in between can
leave an index row whose file is missing or cut short (its size differs from
the `S=` in its name), always for a message never acknowledged, and start-up
reconciliation removes both. A crash before the rename leaves a file in `tmp/`
that no reader treats as mail and that start-up cleans away.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import storage_full

SUBDIRS = ("cur", "new", "tmp")
# System folders every mailbox gets, with their RFC 6154 SPECIAL-USE attribute.
DEFAULT_FOLDERS = {
    "INBOX": None,
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
# Maildir info flags (the `:2,` suffix) and the IMAP flags they stand for.
FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}

_counter = itertools.count()
_host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


def mailbox_root(mail_root: Path, domain: str, local: str) -> Path:
    """The Maildir of a mailbox. `domain` and `local` must come from `address` validation."""
    # Defence in depth: a validated address never holds a separator or a dot-only name.
    for part in (domain, local):
        if not part or "/" in part or "\0" in part or part.strip(".") == "":
            raise ValueError(f"mailbox path escapes the mail root: {domain}/{local}")
    return mail_root / domain / local


def folder_dir(root: Path, folder: str) -> Path:
    """INBOX is the Maildir itself; `A/B` is the Maildir++ folder `.A.B`."""
    if folder == "INBOX":
        return root
    return root / ("." + folder.replace("/", "."))


def ensure_folder(root: Path, folder: str) -> Path:
    path = folder_dir(root, folder)
    for sub in SUBDIRS:
        (path / sub).mkdir(parents=True, exist_ok=True)
    if folder != "INBOX":
        (path / "maildirfolder").touch(exist_ok=True)
    return path


def unique_name(size: int) -> str:
    """A Maildir unique name with Dovecot-style size field `S=`."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_host},S={size}"


def info_suffix(flags: set[str] | list[str] | str) -> str:
    if isinstance(flags, str):
        flags = flags.split()
    letters = sorted(FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS)
    return ":2," + "".join(letters)


def base_name(filename: str) -> str:
    """`cur/123.M1P2Q3.host,S=9:2,S` -> `123.M1P2Q3.host,S=9`."""
    name = filename.rsplit("/", 1)[-1]
    return name.split(":2,", 1)[0]


def sync_dir(path: Path) -> None:
    """fsync a directory, making the renames into it durable."""
    fsync_path(path, os.O_RDONLY | os.O_DIRECTORY)


def sync_file(path: Path) -> None:
    """fsync a file's data and inode."""
    fsync_path(path, os.O_RDONLY)


def fsync_path(path: Path, mode: int) -> None:
    """Open `path` with `mode` and fsync it; a full disk is `storage_full`."""
    try:
        fd = os.open(path, mode)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise storage_full() from exc
        raise


def new_name(size: int, flags: set[str] | None = None) -> str:
    """The name, relative to the folder directory, that `place` gives a new message file.

    Without flags the file goes to `new/`; with flags straight to `cur/` with
    its info suffix (as an APPEND with flags or a Sent copy).
    """
    name = unique_name(size)
    return f"cur/{name}{info_suffix(flags)}" if flags else f"new/{name}"


def place(folder_path: Path, data: bytes, target: str) -> None:
    """Write one message file and rename it to `target` (from `new_name`), not yet
    fsynced (`sync_file` on it and `sync_dir` on its directory do that)."""
    _write_and_rename(folder_path / "tmp" / base_name(target), folder_path / target, data, fsync=False)


def incomplete(path: Path) -> bool:
    """Whether a message file is shorter or longer than the `S=` size in its name: the
    write of a message that was never acknowledged, cut short by a power loss."""
    _, sep, rest = base_name(path.name).rpartition(",S=")
    if not sep or not rest.isdigit():
        return False  # a name from another tool, without a size
    try:
        return path.stat().st_size != int(rest)
    except FileNotFoundError:
        return False


def write_file_durably(tmp_path: Path, final_path: Path, data: bytes) -> None:
    """Write `tmp_path`, fsync it, rename it to `final_path`, fsync that directory."""
    _write_and_rename(tmp_path, final_path, data, fsync=True)
    sync_dir(final_path.parent)


def _write_and_rename(tmp_path: Path, final_path: Path, data: bytes, fsync: bool) -> None:
    try:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp_path, final_path)
    except OSError as exc:
        try:
            tmp_path.unlink()
        except OSError:
            pass
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise storage_full() from exc
        raise


def remove_file(folder_path: Path, filename: str) -> None:
    try:
        (folder_path / filename).unlink()
    except FileNotFoundError:
        pass


def clean_tmp(folder_path: Path) -> int:
    """Remove leftovers of interrupted deliveries; only safe while nothing writes."""
    removed = 0
    tmp = folder_path / "tmp"
    if tmp.is_dir():
        for entry in tmp.iterdir():
            if entry.is_file():
                entry.unlink()
                removed += 1
    return removed


class Locator:
    """Where a message file is now when it is not under the name the index gives: a flag
    rename still pending (or another tool) moved it. The folder is listed at the first miss
    and then only when asked to `refresh`, not once per file. Safe to share between threads."""

    def __init__(self, folder_path: Path) -> None:
        self.folder_path = folder_path
        self._index: dict[str, str] | None = None
        self._lock = threading.Lock()

    def find(self, filename: str, refresh: bool = False) -> str | None:
        """The current name (relative to the folder) of the file `filename` names, or None."""
        with self._lock:
            if self._index is None or refresh:
                self._index = list_files(self.folder_path)
            return self._index.get(base_name(filename))

    def apply(self, filename: str, action: Callable[[str], object]) -> bool:
        """`action(name)` on a message file: under the name the index gives it (`filename`) or,
        while a flag rename is still pending, the name it has now. Renames only move a file
        towards the name the index gives, so that name is tried again before the folder is
        listed afresh. False if the file is gone."""
        def names() -> Iterator[str | None]:
            yield filename
            yield self.find(filename)
            yield filename
            yield self.find(filename, refresh=True)

        for name in names():
            if name is None:
                return False
            try:
                action(name)
                return True
            except FileNotFoundError:
                continue
        return False


def read_message(folder_path: Path, filename: str) -> bytes:
    """A message file's bytes, `filename` being the name the index gives it (relative to the
    folder); FileNotFoundError if it is gone."""
    found: list[bytes] = []
    if not Locator(folder_path).apply(filename, lambda name: found.append((folder_path / name).read_bytes())):
        raise FileNotFoundError(errno.ENOENT, "message file is gone", str(folder_path / filename))
    return found[0]


def list_files(folder_path: Path) -> dict[str, str]:
    """Every message file of a folder: base name -> name relative to the folder."""
    found: dict[str, str] = {}
    for sub in ("new", "cur"):
        directory = folder_path / sub
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            if entry.is_file() and not entry.name.startswith("."):
                found[base_name(entry.name)] = f"{sub}/{entry.name}"
    return found
