"""SEARCH (RFC 3501 §6.4.4): evaluating a parsed key tree over the view of the selected folder.

`search` is the command. `run_search` runs in the executor and reads only
what the keys need: flag, sequence and UID keys use the view; size and date
keys the message details; SUBJECT and FROM the message index (decoded subject
and sender, one query per key that lets SQLite preselect the rows); other
header keys the cached header block (or the first bytes of the file, cached
afterwards); BODY and TEXT the whole message, whose decoded text (transfer
encodings and charsets undone, RFC 2047 headers decoded) is searched.
Matching is case-insensitive substring matching, as the RFC asks.

Keys are evaluated per message with cheap keys first where AND and OR allow,
so a flag or date key in front of a TEXT key saves reading messages.
"""

from __future__ import annotations

import email.utils
from datetime import date, timezone
from typing import Any, Callable, Iterable, Optional

from ..mime import structure
from ..store import mailstate
from . import protocol as p
from .context import Context
from .files import FileFinder
from .message import Msg, parse_iso
from .selected import Selected


async def search(sel: Selected, ctx: Context, args: p.SearchArgs, uid: bool) -> str:
    """SEARCH / UID SEARCH."""
    result, entries = await ctx.run_blocking(run_search, ctx.db, sel.folder["id"], FileFinder(sel.path),
                                             list(sel.msgs), args.criteria)
    if entries:
        ctx.spawn(ctx.adb.write(mailstate.cache_put, entries))
    numbers = [sel.msgs[i].uid if uid else i + 1 for i in result]
    ctx.send(b"* SEARCH" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
    return "OK Search completed"


def _cost(key: p.SearchKey) -> int:
    """0: view only; 1: message details; 2: index or header; 3: the whole message."""
    if isinstance(key, (p.SearchSize,)):
        return 1
    if isinstance(key, p.SearchDate):
        return 2 if key.field == "SENT" else 1
    if isinstance(key, p.SearchHeader):
        return 2
    if isinstance(key, p.SearchText):
        return 3
    if isinstance(key, p.SearchNot):
        return _cost(key.key)
    if isinstance(key, p.SearchOr):
        return max(_cost(key.left), _cost(key.right))
    if isinstance(key, p.SearchAnd):
        return max((_cost(k) for k in key.keys), default=0)
    return 0


def _any_key(key: p.SearchKey, test: Callable[[p.SearchKey], bool]) -> bool:
    """Whether `test` holds for a key of the tree (NOT, OR and AND looked through)."""
    if isinstance(key, p.SearchNot):
        return _any_key(key.key, test)
    if isinstance(key, p.SearchOr):
        return _any_key(key.left, test) or _any_key(key.right, test)
    if isinstance(key, p.SearchAnd):
        return any(_any_key(k, test) for k in key.keys)
    return test(key)


def _needs_details(key: p.SearchKey) -> bool:
    """Whether a key tree needs sizes, internal dates or file names of every message."""
    return _any_key(key, lambda k: isinstance(k, (p.SearchSize, p.SearchText))
                    or (isinstance(k, p.SearchDate) and k.field == "INTERNAL"))


def _indexed(key: p.SearchHeader) -> bool:
    """Whether the message index answers a header key (not an empty "has the field" test)."""
    return key.field.lower() in mailstate.INDEXED_HEADERS and bool(key.value)


def _uses_headers(key: p.SearchKey) -> bool:
    """Whether a key tree reads header blocks."""
    return _any_key(key, lambda k: (isinstance(k, p.SearchHeader) and not _indexed(k))
                    or (isinstance(k, p.SearchDate) and k.field == "SENT"))


class _Item:
    """One message being searched, with lazily loaded data."""

    __slots__ = ("seq", "msg", "header", "header_lower", "full", "texts", "sent")

    def __init__(self, seq: int, msg: Msg) -> None:
        self.seq = seq
        self.msg = msg
        self.header: Optional[bytes] = None
        self.header_lower: Optional[bytes] = None
        self.full: Optional[bytes] = None
        self.texts: Optional[tuple[str, str]] = None
        self.sent: Any = False


class _Search:
    def __init__(self, db, folder_id: int, finder: FileFinder, msgs: list[Msg]) -> None:
        self.db = db
        self.folder_id = folder_id
        self.finder = finder
        self.count = len(msgs)
        self.max_uid = msgs[-1].uid if msgs else 0
        self.entries: list[tuple[str, dict]] = []

    # -- data ----------------------------------------------------------------------

    def load_details(self, items: list[_Item]) -> None:
        todo = [it.msg.uid for it in items if it.msg.id is None]
        if not todo:
            return
        by_uid = {it.msg.uid: it for it in items}
        for row in self.db.read(mailstate.message_details_for, self.folder_id, todo):
            by_uid[row[0]].msg.set_details(*row[1:5])

    def load_headers(self, items: list[_Item]) -> None:
        rows = self.db.read(mailstate.message_details_for, self.folder_id, [it.msg.uid for it in items], ("header",))
        by_uid = {it.msg.uid: it for it in items}
        for row in rows:
            it = by_uid[row[0]]
            if it.msg.id is None:
                it.msg.set_details(*row[1:5])
            if row[5] is not None:
                it.header = bytes(row[5])

    def header_of(self, it: _Item) -> bytes:
        if it.header is None:
            header, _ = self.finder.head(it.msg.filename)
            it.header = header or b""
            if header is not None and it.msg.id is not None:
                self.entries.append((it.msg.id, {"header": header, "envelope": structure.envelope_bytes(header)}))
        return it.header

    def full_of(self, it: _Item) -> bytes:
        if it.full is None:
            raw, _ = self.finder.read(it.msg.filename, it.msg.size)
            it.full = raw or b""
        return it.full

    def texts_of(self, it: _Item) -> tuple[str, str]:
        if it.texts is None:
            try:
                headers, body = structure.search_text(self.full_of(it))
            except Exception:  # noqa: BLE001 - broken MIME searches as raw text
                raw = self.full_of(it).decode("utf-8", "replace")
                headers, _, body = raw.partition("\r\n\r\n")
            it.texts = (headers.casefold(), body.casefold())
        return it.texts

    # -- keys --------------------------------------------------------------------------

    def compile(self, key: p.SearchKey) -> Callable[[_Item], bool]:
        """A predicate for a key tree, built once per SEARCH instead of dispatching per message."""
        if isinstance(key, p.SearchAnd):
            parts = [self.compile(k) for k in sorted(key.keys, key=_cost)]
            if len(parts) == 1:
                return parts[0]
            return lambda it: all(f(it) for f in parts)
        if isinstance(key, p.SearchAll):
            return lambda it: True
        if isinstance(key, p.SearchFlag):
            present = key.present
            if key.flag == "\\Recent":
                return lambda it: it.msg.recent == present
            if key.flag.startswith("\\"):  # system flags: an exact substring test (see Msg.has)
                flag = key.flag
                return lambda it: (flag in it.msg.flags) == present
            keyword = key.flag.lower()  # keywords compare case-insensitively
            return lambda it: (keyword in it.msg.flags.lower().split(" ")) == present
        if isinstance(key, p.SearchSequence):
            seqset = key.sequence_set
            if key.uid:
                return lambda it: seqset.contains(it.msg.uid, self.max_uid)
            return lambda it: seqset.contains(it.seq, self.count)
        if isinstance(key, p.SearchSize):
            limit = key.size
            if key.relation == "LARGER":
                return lambda it: it.msg.size > limit
            return lambda it: it.msg.size < limit
        if isinstance(key, p.SearchDate):
            when_of = self.sent_date if key.field == "SENT" else self.internal_date
            day = key.date
            if key.relation == "BEFORE":
                return lambda it: when_of(it) < day
            if key.relation == "ON":
                return lambda it: when_of(it) == day
            return lambda it: when_of(it) >= day
        if isinstance(key, p.SearchHeader):
            name = key.field.lower()
            needle = key.value.casefold()
            if _indexed(key):
                matches = self.db.read(mailstate.header_matches, self.folder_id, name, needle)
                return lambda it: it.msg.uid in matches
            return lambda it: self.match_header(name, needle, it)
        if isinstance(key, p.SearchText):
            needle = key.value.casefold()
            everywhere = key.where == "TEXT"
            if not needle:
                return lambda it: True

            def text(it: _Item) -> bool:
                if self._cannot_contain(needle, it):
                    return False
                headers, body = self.texts_of(it)
                return needle in body or (everywhere and needle in headers)
            return text
        if isinstance(key, p.SearchNot):
            inner = self.compile(key.key)
            return lambda it: not inner(it)
        if isinstance(key, p.SearchOr):
            first, second = (self.compile(k) for k in sorted((key.left, key.right), key=_cost))
            return lambda it: first(it) or second(it)
        return lambda it: False

    def _cannot_contain(self, needle: str, it: _Item) -> bool:
        """A quick test on the raw bytes: ASCII text that is nowhere, not even encoded."""
        if not needle.isascii():
            return False
        raw = self.full_of(it).lower()
        if needle.encode("ascii") in raw:
            return False
        return not any(marker in raw for marker in (b"base64", b"quoted-printable", b"=?", b"utf-16", b"utf-32"))

    def match_header(self, name: str, needle: str, it: _Item) -> bool:
        header = self.header_of(it)
        if needle and needle.isascii() and b"=?" not in header:
            if it.header_lower is None:
                it.header_lower = header.lower()
            if needle.encode("ascii") not in it.header_lower:
                return False
        values = structure.header_values(header, name)
        if not needle:
            return bool(values)
        return any(needle in structure.decode_words(v).casefold() for v in values)

    def internal_date(self, it: _Item) -> date:
        return parse_iso(it.msg.idate).astimezone(timezone.utc).date()

    def sent_date(self, it: _Item) -> date:
        """The Date: header's own calendar date, time and zone disregarded (RFC 3501 §6.4.4)."""
        if it.sent is False:
            it.sent = None
            values = structure.header_values(self.header_of(it), "date")
            if values:
                parsed = email.utils.parsedate_tz(values[0])
                if parsed is not None:
                    try:
                        it.sent = date(parsed[0], parsed[1], parsed[2])
                    except (ValueError, TypeError):
                        it.sent = None
        return it.sent if it.sent is not None else self.internal_date(it)


def run_search(db, folder_id: int, finder: FileFinder, msgs: list[Msg], criteria: p.SearchAnd
               ) -> tuple[list[int], list[tuple[str, dict]]]:
    """Indexes of the matching messages, and header cache entries learnt on the way."""
    search = _Search(db, folder_id, finder, msgs)
    items: Iterable[_Item]
    details, headers = _needs_details(criteria), _uses_headers(criteria)
    if details or headers:
        # Keys that need no reading first: only messages they do not rule out are loaded.
        loaded = [_Item(i + 1, m) for i, m in enumerate(msgs)]
        cheap = p.SearchAnd(tuple(k for k in criteria.keys if _cost(k) == 0))
        if cheap.keys:
            prefilter = search.compile(cheap)
            loaded = [it for it in loaded if prefilter(it)]
        if details:
            search.load_details(loaded)
        if headers:
            search.load_headers(loaded)
        items = loaded
    else:
        # Nothing to load in bulk: one short-lived item at a time (thousands of live objects
        # would wake the garbage collector over the whole heap).
        items = (_Item(i + 1, m) for i, m in enumerate(msgs))
    result = []
    predicate = search.compile(criteria)
    try:
        for it in items:
            if predicate(it):
                result.append(it.seq - 1)
            if it.full is not None:
                it.full = None  # keep at most one message body in memory
                it.texts = None
    finally:
        finder.close()
    return result, search.entries


__all__ = ["search", "run_search"]
