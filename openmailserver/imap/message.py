"""One message of a session's view of its selected folder (`Msg`), and how its flags and date are written.

`parse_iso` reads the ISO 8601 dates of the message index; FETCH (INTERNALDATE) and SEARCH
(BEFORE, ON, SINCE) both use it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from ..store import mailstate
from . import protocol as p

SYSTEM_FLAGS = mailstate.SYSTEM_FLAG_ORDER


class Msg:
    """One message of the view. Details (id, size, date, file) load when first needed."""

    __slots__ = ("uid", "flags", "modseq", "recent", "id", "size", "idate", "filename", "_flagbytes", "_idate")

    def __init__(self, uid: int, flags: str, modseq: int, recent: bool) -> None:
        self.uid = uid
        self.flags = flags
        self.modseq = modseq
        self.recent = recent
        self.id: Optional[str] = None
        self.size = 0
        self.idate = ""
        self.filename = ""
        self._flagbytes: Optional[bytes] = None
        self._idate: Optional[bytes] = None

    def set_details(self, message_id: str, size: int, idate: str, filename: str) -> None:
        self.id, self.size, self.idate, self.filename = message_id, size, idate, filename

    def set_flags(self, flags: str) -> None:
        self.flags = flags
        self._flagbytes = None

    @property
    def flag_list(self) -> list[str]:
        return mailstate.split_flags(self.flags)

    def has(self, flag: str) -> bool:
        # System flags are the only flags that start with a backslash, and no
        # keyword contains one, so a substring test is exact for them.
        return flag in self.flags if flag.startswith("\\") else flag in self.flags.split(" ")

    def flag_bytes(self) -> bytes:
        if self._flagbytes is None:
            self._flagbytes = format_flags(self.flag_list, self.recent)
        return self._flagbytes

    def internal_date(self) -> bytes:
        if self._idate is None:
            self._idate = b'"' + p.imap_date(parse_iso(self.idate)).encode("ascii") + b'"'
        return self._idate


def parse_iso(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(timezone.utc)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def format_flags(flags: list[str], recent: bool = False) -> bytes:
    items = [f for f in SYSTEM_FLAGS if f in flags] + [f for f in flags if f not in SYSTEM_FLAGS]
    if recent:
        items.append("\\Recent")
    return ("(" + " ".join(items) + ")").encode("utf-8", "replace")
