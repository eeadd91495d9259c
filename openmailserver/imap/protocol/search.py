"""SEARCH keys (RFC 3501 §6.4.4): the key tree and its parser (evaluation is `imap.search`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from .dates import parse_imap_date
from .errors import ParseError
from .sequence import SequenceSet
from .syntax import _ATOM_RE, _DQUOTE, _LPAREN, _RPAREN
from .tokens import _Cursor


@dataclass(frozen=True)
class SearchKey:
    """Base class of the search tree nodes."""


@dataclass(frozen=True)
class SearchAll(SearchKey):
    """ALL"""


@dataclass(frozen=True)
class SearchFlag(SearchKey):
    """A flag test: ANSWERED, UNSEEN, KEYWORD x, UNKEYWORD x, RECENT...

    ``flag`` is a canonical system flag or a keyword; ``present`` is False for
    the UN* forms.  NEW is ``SearchAnd((\\Recent, \\Seen absent))`` and OLD is
    ``\\Recent`` absent, exactly as RFC 3501 defines them.
    """

    flag: str
    present: bool = True


@dataclass(frozen=True)
class SearchHeader(SearchKey):
    """Substring match in a header field (BCC, CC, FROM, SUBJECT, TO, HEADER).

    An empty ``value`` matches every message having the field.
    """

    field: str
    value: str


@dataclass(frozen=True)
class SearchText(SearchKey):
    """BODY (body only) or TEXT (header + body) substring match."""

    where: Literal["BODY", "TEXT"]
    value: str


@dataclass(frozen=True)
class SearchDate(SearchKey):
    """BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE (Date: header)."""

    field: Literal["INTERNAL", "SENT"]
    relation: Literal["BEFORE", "ON", "SINCE"]
    date: date


@dataclass(frozen=True)
class SearchSize(SearchKey):
    """LARGER n / SMALLER n (RFC822.SIZE)."""

    relation: Literal["LARGER", "SMALLER"]
    size: int


@dataclass(frozen=True)
class SearchSequence(SearchKey):
    """A bare sequence set (message numbers) or UID <set>."""

    sequence_set: SequenceSet
    uid: bool = False


@dataclass(frozen=True)
class SearchNot(SearchKey):
    key: SearchKey


@dataclass(frozen=True)
class SearchOr(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class SearchAnd(SearchKey):
    """All keys must match; used for the top level and parenthesised groups."""

    keys: tuple[SearchKey, ...]


_SEARCH_FLAGS: dict[str, tuple[str, bool]] = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
    "RECENT": ("\\Recent", True), "OLD": ("\\Recent", False),
}
_SEARCH_HEADERS = {"BCC": "Bcc", "CC": "Cc", "FROM": "From", "SUBJECT": "Subject", "TO": "To"}
_SEARCH_DATES: dict[str, tuple[Literal["INTERNAL", "SENT"], Literal["BEFORE", "ON", "SINCE"]]] = {
    "BEFORE": ("INTERNAL", "BEFORE"), "ON": ("INTERNAL", "ON"), "SINCE": ("INTERNAL", "SINCE"),
    "SENTBEFORE": ("SENT", "BEFORE"), "SENTON": ("SENT", "ON"), "SENTSINCE": ("SENT", "SINCE"),
}
_MAX_SIZE = (1 << 63) - 1  # LARGER/SMALLER: accept number64 (RFC 9051) sizes


def _search_date(cur: _Cursor) -> date:
    """date = date-text / DQUOTE date-text DQUOTE"""
    if cur.peek() == _DQUOTE:
        return parse_imap_date(cur.quoted())
    tok = cur.take(_ATOM_RE)
    if tok is None:
        raise cur.missing("date")
    return parse_imap_date(tok)


def _parse_search_key(cur: _Cursor) -> SearchKey:
    c = cur.peek()
    if c == _LPAREN:
        cur.pos += 1
        cur.push_depth()
        keys = [_parse_search_key(cur)]
        while cur.try_sp():
            keys.append(_parse_search_key(cur))
        cur.expect(_RPAREN, ")")
        cur.depth -= 1
        return SearchAnd(tuple(keys))
    if c == 0x2A or 0x30 <= c <= 0x39:  # '*' or digit
        return SearchSequence(cur.sequence_set())
    name = cur.atom("search key").upper()
    if name == "ALL":
        return SearchAll()
    if name in _SEARCH_FLAGS:
        flag, present = _SEARCH_FLAGS[name]
        return SearchFlag(flag, present)
    if name == "NEW":
        return SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False)))
    if name in ("KEYWORD", "UNKEYWORD"):
        cur.sp("keyword")
        return SearchFlag(cur.atom("keyword"), name == "KEYWORD")
    if name in _SEARCH_HEADERS:
        cur.sp("search string")
        return SearchHeader(_SEARCH_HEADERS[name], cur.astring_str("search string"))
    if name == "HEADER":
        cur.sp("header field name")
        field_name = cur.astring_str("header field name")
        cur.sp("search string")
        return SearchHeader(field_name, cur.astring_str("search string"))
    if name in ("BODY", "TEXT"):
        cur.sp("search string")
        return SearchText(name, cur.astring_str("search string"))  # type: ignore[arg-type]
    if name in _SEARCH_DATES:
        cur.sp("date")
        kind, relation = _SEARCH_DATES[name]
        return SearchDate(kind, relation, _search_date(cur))
    if name in ("LARGER", "SMALLER"):
        cur.sp("size")
        return SearchSize(name, cur.number("size", maximum=_MAX_SIZE))  # type: ignore[arg-type]
    if name == "UID":
        cur.sp("sequence set")
        return SearchSequence(cur.sequence_set(), uid=True)
    if name == "NOT":
        cur.sp("search key")
        cur.push_depth()
        key = _parse_search_key(cur)
        cur.depth -= 1
        return SearchNot(key)
    if name == "OR":
        cur.push_depth()
        cur.sp("search key")
        left = _parse_search_key(cur)
        cur.sp("search key")
        right = _parse_search_key(cur)
        cur.depth -= 1
        return SearchOr(left, right)
    raise ParseError("Unknown search key")
