"""A board in shared memory that every worker of one daemon reads: who is alive and serving,
and how many connections and sessions are open, per listener, per client address, per user.

The supervisor maps it (from `data_dir/openmailserver.board`, so that `openmailserver
status` can read it too) before it forks the workers, so each inherits the same pages. Each
worker writes only its own row, so no lock is needed; a reader adds the rows up. When a
worker dies, the supervisor clears its row before starting the replacement: the dead one's
connections stop counting, and nothing leaks. Per-address and per-user counts live in
hashed slots: two keys that share a slot count together, which can only refuse early,
never admit more than the limit allows (with 16,384 slots a collision is rare).
"""

from __future__ import annotations

import mmap
import os
import time
import zlib
from pathlib import Path

from ..util import process_alive

# The named counters of a row, after its header.
LISTENERS = ("smtp", "submission", "submission_starttls", "imap", "imaps", "api")
_HEADER = ("pid", "started", "serving", "restarts", "heartbeat")
_SLOTS = 1 << 14
_ROW = len(_HEADER) + len(LISTENERS) + _SLOTS
_LISTENER_AT = {name: len(_HEADER) + i for i, name in enumerate(LISTENERS)}
_SLOTS_AT = len(_HEADER) + len(LISTENERS)
_PID, _STARTED, _SERVING, _RESTARTS, _HEARTBEAT = range(len(_HEADER))


class Board:
    """`workers` rows of 64-bit integers in shared memory: a new file at `path`, or anonymous
    memory (a runtime outside a daemon)."""

    def __init__(self, workers: int, path: Path | None = None) -> None:
        self.workers = workers
        size = workers * _ROW * 8
        if path is None:
            self._memory = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                # Blocks reserved now: a page of a sparse file first written on a full disk
                # would kill the writer with SIGBUS.
                os.posix_fallocate(fd, 0, size)
                self._memory = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        self._cells = memoryview(self._memory).cast("q")
        self.index = 0  # the row this process writes (a worker's number)

    @classmethod
    def read(cls, path: Path) -> "Board | None":
        """The board a running daemon keeps at `path`, to read (None when there is none)."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        if not data or len(data) % (_ROW * 8):
            return None
        board = cls.__new__(cls)
        board.workers, board.index = len(data) // (_ROW * 8), 0
        board._memory = None
        board._cells = memoryview(bytearray(data)).cast("q")
        return board

    # -- the supervisor's side ---------------------------------------------------

    def clear(self, index: int) -> None:
        """Forget a worker that died: its counts no longer count. Its restarts are kept."""
        base = index * _ROW
        restarts = self._cells[base + _RESTARTS]
        self._cells[base:base + _ROW] = memoryview(bytes(_ROW * 8)).cast("q")
        self._cells[base + _RESTARTS] = restarts

    def started(self, index: int, pid: int, restart: bool) -> None:
        base = index * _ROW
        self._cells[base + _PID] = pid
        self._cells[base + _STARTED] = int(time.time())
        if restart:
            self._cells[base + _RESTARTS] += 1

    # -- a worker's side -----------------------------------------------------------

    def serving(self) -> None:
        self._cells[self.index * _ROW + _SERVING] = 1
        self.beat()

    def beat(self) -> None:
        self._cells[self.index * _ROW + _HEARTBEAT] = int(time.time())

    def opened(self, listener: str, delta: int = 1) -> None:
        self._cells[self.index * _ROW + _LISTENER_AT[listener]] += delta

    def add(self, key: str, delta: int) -> None:
        self._cells[self.index * _ROW + _SLOTS_AT + _slot(key)] += delta

    # -- anyone's ------------------------------------------------------------------

    def count(self, key: str) -> int:
        """Open connections or sessions under `key`, over every worker."""
        at = _SLOTS_AT + _slot(key)
        return sum(self._cells[i * _ROW + at] for i in range(self.workers))

    def sessions(self, listener: str) -> int:
        at = _LISTENER_AT[listener]
        return sum(self._cells[i * _ROW + at] for i in range(self.workers))

    def workers_status(self) -> list[dict[str, int | bool | dict[str, int]]]:
        """Each worker: number, pid, start time, whether it serves, restarts, open sessions."""
        out = []
        for i in range(self.workers):
            base = i * _ROW
            pid = self._cells[base + _PID]
            out.append({"worker": i + 1, "pid": pid, "alive": bool(pid) and process_alive(pid),
                        "serving": bool(self._cells[base + _SERVING]), "started_at": self._cells[base + _STARTED],
                        "restarts": self._cells[base + _RESTARTS],
                        "sessions": {name: self._cells[base + at] for name, at in _LISTENER_AT.items()}})
        return out

    def close(self) -> None:
        self._cells.release()
        if self._memory is not None:
            self._memory.close()


def _slot(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % _SLOTS
