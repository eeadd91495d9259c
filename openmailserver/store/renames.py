"""Flag renames of message files, done when the IMAP server has a quiet moment.

A flag change (IMAP STORE, the API's labels) commits the new flags, and the file
names that carry them (Maildir's `:2,` suffix), to the index at once; that is
what every reader goes by. The files themselves are renamed afterwards, all on
one thread, in commit order (`mailstate.rename_files`). Until then a file has
its old name, and readers find it by its base name (`maildir.Locator`). Each
worker process has its own thread, so a file is renamed to the name the index
holds when the rename runs, not to the one it held at the commit: that way the
commit order holds across workers too.

The renames wait while IMAP commands keep arriving. Every rename gives up the GIL
and then has to get it back, so ten thousand of them (a client marking a whole
folder read) interleaved with a stream of APPENDs slow each APPEND down by a
third. They start once no command has run for `quiet` seconds, go in slices
that look again in between, and stop waiting once the oldest has waited
`patience` seconds. `close()` does whatever is left at once.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from . import mailstate

log = logging.getLogger(__name__)


class FlagRenames:
    def __init__(self, current: Callable[[int, list[int]], dict[int, str]], quiet: float = 0.05,
                 patience: float = 2.0, slice_size: int = 256) -> None:
        """`current(folder_id, uids)`: the index's file names of those messages now."""
        self.current = current
        self.quiet, self.patience, self.slice_size = quiet, patience, slice_size
        self.running = 0  # IMAP commands under way; changed on the event loop only
        self.last_command = 0.0  # time.monotonic() at which the last of them ended
        self._pending: deque[tuple[int, Path, mailstate.Renames, float]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._stopped = False  # the thread has done everything and returned
        self._thread = threading.Thread(target=self._run, name="flag-renames", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a daemon that stops without closing still renames

    def command_started(self) -> None:
        self.running += 1

    def command_ended(self) -> None:
        self.running -= 1
        self.last_command = time.monotonic()

    def queue(self, folder_id: int, folder_path: Path, renames: mailstate.Renames) -> None:
        """Called on the database writer thread while the flag change commits."""
        with self._cond:
            if not self._stopped:
                self._pending.append((folder_id, folder_path, renames, time.monotonic()))
                self._cond.notify()
                return
        self._rename(folder_id, folder_path, renames)  # after close(): nothing is pending

    def close(self) -> None:
        """Do every pending rename now and stop the thread; blocks until they are done."""
        atexit.unregister(self.close)
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _wait(self, since: float) -> float:
        """How much longer renames queued at `since` should wait; 0 to go now."""
        now = time.monotonic()
        patience_left = since + self.patience - now
        if self._closing or patience_left <= 0:
            return 0.0
        quiet_at = now + self.quiet if self.running else self.last_command + self.quiet
        return max(0.0, min(quiet_at - now, patience_left))

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._pending:
                        if self._closing:
                            self._stopped = True
                            return
                        self._cond.wait()
                        continue
                    folder_id, folder_path, renames, since = self._pending[0]
                    wait = self._wait(since)
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                part, rest = renames[:self.slice_size], renames[self.slice_size:]
                if rest:
                    self._pending[0] = (folder_id, folder_path, rest, since)
                else:
                    self._pending.popleft()
            self._rename(folder_id, folder_path, part)

    def _rename(self, folder_id: int, folder_path: Path, renames: mailstate.Renames) -> None:
        try:
            mailstate.rename_files(folder_path, renames, lambda uids: self.current(folder_id, uids))
        except Exception:  # noqa: BLE001 - the index keeps the flags; the thread must go on
            log.exception("renaming message files in %s failed", folder_path)
