"""Logging: JSON lines in `data_dir/logs/openmailserver.log`, readable lines on stderr.

A session or request id travels in a context variable. Every record passes a
filter that replaces API keys by their visible prefix, so a key pasted into a
command or a header never reaches a log; passwords are never logged at all.
"""

from __future__ import annotations

import contextvars
import errno
import json
import logging
import logging.handlers
import os
import sys
from collections import deque
from datetime import datetime, timezone

from ..auth.credentials import redact_keys
from ..config import Settings

LOG_FILE = "openmailserver.log"
session_id: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="-")


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):  # the other handler's filter did it already
            return True
        message = record.getMessage()
        record.msg = redact_keys(message)
        record.args = None
        record.session = session_id.get()
        record.redacted = True
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "session": getattr(record, "session", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = redact_keys(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class _FileHandler(logging.handlers.RotatingFileHandler):
    """A full disk costs log lines, not a traceback on stderr for every record."""

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - logging's name
        # The stock check stats the path twice and formats the record once more, for each
        # record. Ours is a regular file we opened: rolling over once it has reached the limit
        # (one line past it at most) needs only its size.
        if self.stream is None:
            self.stream = self._open()
        if not (self.maxBytes > 0 and self.stream.tell() >= self.maxBytes):
            return False
        # Every worker process writes this file (appending). The first to see it full rolls it
        # over; the others, still writing to the rolled-over file, only follow to the new one.
        try:
            current = os.stat(self.baseFilename).st_ino
        except FileNotFoundError:
            current = None
        if current is not None and current != os.fstat(self.stream.fileno()).st_ino:
            self.stream.close()
            self.stream = self._open()
            return False
        return True

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return
        super().handleError(record)


def setup_logging(settings: Settings, stderr: bool = True) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(settings.log_level.upper() if settings.log_level.upper() in
                  ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
    redact = _Redact()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    file_handler = _FileHandler(
        settings.log_dir / LOG_FILE, maxBytes=50 * 1024 * 1024, backupCount=5, encoding="utf-8")
    file_handler.setFormatter(JsonFormatter())
    file_handler.addFilter(redact)
    root.addHandler(file_handler)
    if stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(session)s] %(message)s"))
        console.addFilter(redact)
        root.addHandler(console)
    # Library loggers that would otherwise echo every request or SMTP line.
    for noisy in ("uvicorn.access", "mail.log", "mail.debug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def read_entries(path, min_level: int, last: int | None, offset: int = 0) -> tuple[list[dict], int]:
    """Log entries at `min_level` or above from byte `offset` on; only the newest `last` when given.

    Returns the entries and the offset to continue from (for `--follow`).
    """
    entries: deque[dict] = deque(maxlen=last) if last else deque()
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            for raw in fh:
                if not raw.endswith(b"\n"):  # a line still being written: read it next time
                    break
                offset += len(raw)
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if LEVELS.get(entry.get("level", "info"), 20) >= min_level:
                    entries.append(entry)
    except FileNotFoundError:
        return [], 0
    return list(entries), offset
