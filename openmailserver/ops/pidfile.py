"""The pid file of the daemon serving a data dir: written at start, removed at a clean stop."""

from __future__ import annotations

import contextlib
import os

from ..config import Settings
from ..util import process_alive


def write(settings: Settings) -> None:
    settings.pid_path.write_text(f"{os.getpid()}\n")


def remove(settings: Settings) -> None:
    with contextlib.suppress(FileNotFoundError):
        settings.pid_path.unlink()


def running_pid(settings: Settings) -> int | None:
    """The pid of a daemon serving this data dir, if one is alive."""
    try:
        pid = int(settings.pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if process_alive(pid) else None
