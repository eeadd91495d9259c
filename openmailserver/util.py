"""Small shared helpers: typed ids, UTC timestamps, disk and process checks."""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import datetime, timezone

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# Random byte -> id character: its low 5 bits pick one of the 32 (256 is a multiple of 32,
# so every character stays equally likely).
_ID_TABLE = bytes(ord(_ID_ALPHABET[b & 31]) for b in range(256))


def new_id(prefix: str, length: int = 12) -> str:
    """A short opaque id such as `msg_k3v9x2m4a7qe` (base32, 5 random bits a character)."""
    return f"{prefix}_" + secrets.token_bytes(length).translate(_ID_TABLE).decode()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    """UTC ISO 8601 with `Z`, second precision plus milliseconds."""
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"  # no "+00:00"


def disk_status(path) -> dict:
    """Free space where mail lives; `fail` below 200 MiB, or below 2% on a disk too small for that."""
    usage = shutil.disk_usage(path)
    floor = min(200 * 1024 * 1024, usage.total // 50)
    return {"status": "ok" if usage.free >= floor else "fail", "free_bytes": usage.free,
            "total_bytes": usage.total, "path": str(path)}


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
