"""Flags (RFC 3501 §2.3.2): the system flags, their canonical spelling, and valid keywords."""

from __future__ import annotations

from .syntax import _ATOM_RE

#: System flags, RFC 3501 §2.3.2 (canonical spelling).
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent"})

_SYSTEM_FLAG_CANON = {f.upper(): f for f in SYSTEM_FLAGS}


def normalize_flag(flag: str) -> str:
    """Canonical spelling for system flags (``\\seen`` -> ``\\Seen``); others unchanged."""
    if flag.isascii():
        return _SYSTEM_FLAG_CANON.get(flag.upper(), flag)
    return flag


def is_valid_keyword(flag: str) -> bool:
    """True for a flag-keyword (an atom, RFC 3501 §9)."""
    return flag.isascii() and _ATOM_RE.fullmatch(flag.encode("ascii")) is not None


def is_valid_flag(flag: str) -> bool:
    """True for a keyword or a ``\\atom`` flag (system flag or flag-extension)."""
    if flag.startswith("\\"):
        return is_valid_keyword(flag[1:])
    return is_valid_keyword(flag)
