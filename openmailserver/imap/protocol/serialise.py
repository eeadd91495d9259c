"""Serialisation (server -> client): Python values to IMAP wire syntax."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .flags import is_valid_flag
from .names import encode_mutf7
from .syntax import _ASTRING_RE
from .tokens import Atom, Value

#: Strings longer than this (in bytes) are serialised as literals, not quoted.
QUOTED_MAX = 1024

_QUOTABLE_RE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")  # TEXT-CHAR, 7-bit


class LiteralData(bytes):
    """Bytes that :func:`encode_value` must send as a literal."""

    __slots__ = ()


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def literal(value: str | bytes) -> bytes:
    """``{n}\\r\\n`` + data (server literals are always synchronising-form)."""
    data = _as_bytes(value)
    return b"{%d}\r\n" % len(data) + data


def quote(value: str | bytes, *, max_quoted: int = QUOTED_MAX) -> bytes:
    """Render an IMAP ``string``: quoted when safe, otherwise a literal.

    A literal is used for CR, LF, NUL, 8-bit data (str is UTF-8 encoded) or
    more than ``max_quoted`` bytes.
    """
    data = _as_bytes(value)
    if len(data) <= max_quoted and _QUOTABLE_RE.fullmatch(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def astring(value: str | bytes) -> bytes:
    """Render an ``astring``: a bare atom when possible, else :func:`quote`.

    "NIL" is always quoted so it cannot be confused with nil.
    """
    data = _as_bytes(value)
    if data and _ASTRING_RE.fullmatch(data) and data.upper() != b"NIL":
        return data
    return quote(data)


def nstring(value: str | bytes | None) -> bytes:
    """Render an ``nstring``: NIL for None, else :func:`quote`."""
    return b"NIL" if value is None else quote(value)


def encode_value(value: Value) -> bytes:
    """Render a generic value recursively.

    None -> NIL; int -> number; :class:`Atom` -> verbatim; :class:`LiteralData`
    -> literal; str/bytes -> :func:`quote`; list/tuple -> parenthesised list.
    """
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP representation")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("IMAP numbers are unsigned")
        return str(value).encode("ascii")
    if isinstance(value, Atom):
        return value.encode("ascii")
    if isinstance(value, LiteralData):
        return literal(value)
    if isinstance(value, (str, bytes)):
        return quote(value)
    if isinstance(value, (list, tuple)):
        return b"(" + b" ".join(encode_value(v) for v in value) + b")"
    raise TypeError(f"cannot serialise {type(value).__name__}")


def encode_mailbox(name: str) -> bytes:
    """str mailbox name -> wire astring (modified UTF-7, atom when possible)."""
    return astring(encode_mutf7(name))


def flag_list(flags: Iterable[str]) -> bytes:
    """Render ``(\\Seen $Label)``; raises ValueError for invalid flags."""
    items = []
    for flag in flags:
        if not (is_valid_flag(flag) or flag == "\\*"):
            raise ValueError(f"invalid flag {flag!r}")
        items.append(flag.encode("ascii"))
    return b"(" + b" ".join(items) + b")"
