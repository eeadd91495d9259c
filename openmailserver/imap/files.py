"""Message files of a folder: reading them (`FileFinder`) and linking or copying them into another folder.

A message file may be renamed at any time (its flags are part of its name, and
`store.renames` renames files after flag changes), so every read goes through a
`FileFinder`, which finds a file under its current name.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

from ..mime import structure
from ..store import maildir

HEADER_READ = 16 * 1024
HEADER_READ_MAX = 1024 * 1024


class FileFinder:
    """Reads message files, also when their name changed since the view learnt it (flags renamed).

    Several threads may read through one finder at once (a FETCH loads batches ahead).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.locator = maildir.Locator(folder)
        self.dir_fd: Optional[int] = None
        self.lock = threading.Lock()

    def _fd(self) -> int:
        if self.dir_fd is None:
            with self.lock:
                if self.dir_fd is None:
                    self.dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        return self.dir_fd

    def close(self) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def _open_fd(self, filename: str) -> tuple[Optional[int], str]:
        """The file open for reading and its current name; None if it is gone."""
        try:  # the common case, without a closure
            return os.open(filename, os.O_RDONLY, dir_fd=self._fd()), filename
        except FileNotFoundError:
            pass
        opened: list[tuple[int, str]] = []
        if self.locator.apply(filename, lambda name: opened.append(
                (os.open(name, os.O_RDONLY, dir_fd=self._fd()), name))):
            return opened[0]
        return None, filename

    def read(self, filename: str, size: int = 0) -> tuple[Optional[bytes], str]:
        """The whole file (None if gone) and its current name."""
        fd, current = self._open_fd(filename)
        if fd is None:
            return None, current
        try:
            want = max(size, 0) + 1
            data = os.read(fd, want)
            if len(data) < want:  # a short read of a regular file: that was all of it
                return data, current
            chunks = [data]
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks), current
        finally:
            os.close(fd)

    def head(self, filename: str) -> tuple[Optional[bytes], str]:
        """The header block of a file (None if gone) and its current name."""
        fd, current = self._open_fd(filename)
        if fd is None:
            return None, current
        try:
            data = os.read(fd, HEADER_READ)
            while True:
                n = structure.header_length(data)
                if n < len(data) or len(data) >= HEADER_READ_MAX:
                    return data[:n], current
                more = os.read(fd, HEADER_READ)
                if not more:
                    return data, current
                data += more
        finally:
            os.close(fd)


def link_files(src: Path, dst: Path, files: list[tuple[str, int]]) -> list[Optional[str]]:
    """Hard-link (or copy) message files into another folder; returns their new names there."""
    finder = FileFinder(src)
    out: list[Optional[str]] = []
    try:
        for filename, size in files:
            fd, current = finder._open_fd(filename)
            if fd is None:
                out.append(None)
                continue
            # The flags of the name the index gives, which a pending rename may not have yet.
            sub, _, name = filename.partition("/")
            info = name.partition(":2,")[2]
            new_name = f"{sub}/{maildir.unique_name(size)}" + (f":2,{info}" if sub == "cur" else "")
            try:
                try:
                    os.link(src / current, dst / new_name)
                except OSError:  # no hard links here (another file system, or not allowed)
                    with os.fdopen(os.dup(fd), "rb") as fh:
                        _write_copy(dst, dst / new_name, fh.read())
            finally:
                os.close(fd)
            out.append(new_name)
    finally:
        finder.close()
    fsync_dirs([dst / "cur", dst / "new"])
    return out


def _write_copy(folder: Path, final: Path, data: bytes) -> None:
    tmp = folder / "tmp" / final.name.split(":2,", 1)[0]
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, final)


def unlink_all(folder: Path, names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(folder / name)
        except FileNotFoundError:
            pass


def fsync_dirs(paths: list[Path]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
