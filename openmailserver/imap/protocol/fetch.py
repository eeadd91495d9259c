"""FETCH data items (RFC 3501 §6.4.5): sections, partials and macros, and their parser."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ParseError
from .serialise import astring
from .syntax import _DOT, _LBRACKET, _LPAREN, _LT, _NUMBER_RE, _RBRACKET, _RPAREN, MAX_NUMBER
from .tokens import _Cursor, _utf8

_FETCH_NAME_RE = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_TEXT_RE = re.compile(rb"[A-Za-z.]+")
_PARTIAL_RE = re.compile(rb"<([0-9]+)\.([0-9]+)>")
_HEADER_NAME_RE = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext
_SECTION_SPECIFIERS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
_SIMPLE_FETCH = frozenset(
    {"FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
     "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID"}
)


@dataclass(frozen=True)
class Section:
    """A BODY[...] section: part path plus optional specifier.

    ``specifier`` is one of HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT,
    MIME or None (whole part); ``headers`` lists the field names (as sent)
    for HEADER.FIELDS[.NOT].
    """

    part: tuple[int, ...] = ()
    specifier: str | None = None
    headers: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = ".".join(str(p) for p in self.part)
        if self.specifier:
            text += ("." if text else "") + self.specifier
        if self.specifier in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            names = b" ".join(astring(h) for h in self.headers).decode("ascii")
            text += f" ({names})"
        return text


@dataclass(frozen=True)
class FetchAttribute:
    """One FETCH data item.

    ``name`` is the upper-case item name (``BODY.PEEK[...]`` is ``name="BODY"``
    with ``peek=True``); ``section`` is set for ``BODY[...]`` forms (plain
    ``BODY`` without brackets means the non-extensible BODYSTRUCTURE);
    ``partial`` is ``(origin, count)`` from ``<origin.count>``.
    """

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    @property
    def response_name(self) -> str:
        """Item name in the FETCH response, e.g. ``BODY[HEADER.FIELDS (SUBJECT)]<0>``.

        RFC 3501 §7.4.2: .PEEK is dropped and a partial shows only its origin.
        """
        if self.section is None:
            return self.name
        text = f"{self.name}[{self.section}]"
        if self.partial is not None:
            text += f"<{self.partial[0]}>"
        return text

    @property
    def sets_seen(self) -> bool:
        """Whether fetching implicitly sets \\Seen (RFC 3501 §6.4.5)."""
        if self.name == "BODY":
            return self.section is not None and not self.peek
        return self.name in ("RFC822", "RFC822.TEXT")


def _fa(name: str) -> FetchAttribute:
    return FetchAttribute(name)


#: FETCH macros (RFC 3501 §6.4.5).
FETCH_MACROS: dict[str, tuple[FetchAttribute, ...]] = {
    "ALL": (_fa("FLAGS"), _fa("INTERNALDATE"), _fa("RFC822.SIZE"), _fa("ENVELOPE")),
    "FAST": (_fa("FLAGS"), _fa("INTERNALDATE"), _fa("RFC822.SIZE")),
    "FULL": (_fa("FLAGS"), _fa("INTERNALDATE"), _fa("RFC822.SIZE"), _fa("ENVELOPE"), _fa("BODY")),
}


def _parse_section(cur: _Cursor) -> Section:
    """section-spec inside the brackets (the "[" is already consumed)."""
    parts: list[int] = []
    dot = False
    while True:
        tok = cur.take(_NUMBER_RE)
        if tok is None:
            break
        if tok[0] == 0x30 or len(tok) > 10 or int(tok) > MAX_NUMBER:
            raise ParseError("Invalid section part number")
        parts.append(int(tok))
        dot = cur.peek() == _DOT
        if not dot:
            break
        cur.pos += 1
    specifier: str | None = None
    headers: tuple[str, ...] = ()
    if cur.peek() == _RBRACKET:
        if dot:
            raise ParseError("Invalid section")
    else:
        if parts and not dot:
            raise ParseError("Invalid section")
        tok = cur.take(_SECTION_TEXT_RE)
        specifier = tok.decode("ascii").upper() if tok else None
        if specifier not in _SECTION_SPECIFIERS or (specifier == "MIME" and not parts):
            raise ParseError("Invalid section")
        if specifier in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            cur.sp("header list")
            headers = _parse_header_list(cur)
    cur.expect(_RBRACKET, "]")
    return Section(tuple(parts), specifier, headers)


def _parse_header_list(cur: _Cursor) -> tuple[str, ...]:
    """header-list = "(" header-fld-name *(SP header-fld-name) ")" """
    cur.expect(_LPAREN, "header list")
    names: list[str] = []
    while True:
        name = _utf8(cur.astring("header field name"), "header field name")
        if not _HEADER_NAME_RE.fullmatch(name):
            raise ParseError("Invalid header field name")
        names.append(name)
        if not cur.try_sp():
            break
    cur.expect(_RPAREN, ")")
    return tuple(names)


def _parse_fetch_att(cur: _Cursor) -> FetchAttribute:
    tok = cur.take(_FETCH_NAME_RE)
    if tok is None:
        raise cur.missing("fetch attribute")
    name = tok.decode("ascii").upper()
    if name in ("BODY", "BODY.PEEK") and cur.peek() == _LBRACKET:
        cur.pos += 1
        section = _parse_section(cur)
        partial = None
        if cur.peek() == _LT:
            m = _PARTIAL_RE.match(cur.buf, cur.pos)
            if m is None:
                raise ParseError("Invalid partial")
            start, count = m.group(1), m.group(2)
            if (
                count[0] == 0x30
                or len(start) > 10
                or len(count) > 10
                or int(start) > MAX_NUMBER
                or int(count) > MAX_NUMBER
            ):
                raise ParseError("Invalid partial")
            cur.pos = m.end()
            partial = (int(start), int(count))
        return FetchAttribute("BODY", section, partial, peek=name == "BODY.PEEK")
    if name in _SIMPLE_FETCH:
        return FetchAttribute(name)
    raise ParseError("Unknown fetch attribute")
