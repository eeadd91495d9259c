"""The tokeniser of commands (`_Cursor`) and the generic values it reads (atoms, strings, literals, lists)."""

from __future__ import annotations

import re
from typing import Union

from .errors import ParseError
from .flags import SYSTEM_FLAGS, normalize_flag
from .framing import RawCommand, _split_flat
from .names import decode_mailbox, decode_mutf7
from .sequence import SequenceSet
from .syntax import (
    _ASTRING_RE,
    _ATOM_RE,
    _BACKSLASH,
    _DQUOTE,
    _LBRACE,
    _LPAREN,
    _MAX_DIGITS,
    _NUMBER_RE,
    _RPAREN,
    _SP,
    MAX_NUMBER,
)

_MAX_DEPTH = 32  # nesting limit for parenthesised lists / search keys

_LIST_MAILBOX_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')  # list-char
_VALUE_ATOM_RE = re.compile(rb'\\?[^\x00-\x20\x7f-\xff(){%*"\\]+|\\\*')
_SEQSET_TOKEN_RE = re.compile(rb"[0-9*:,]+")
# quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR excludes CR, LF, NUL and
# unescaped quoted-specials.  8-bit is tolerated (UTF-8).  Unrolled-loop form
# so that matching stays linear.
_QUOTED_RE = re.compile(rb'"([^"\\\r\n\x00]*(?:\\["\\][^"\\\r\n\x00]*)*)"')
_UNESCAPE_RE = re.compile(rb'\\(["\\])')
_LITERAL_TOKEN_RE = re.compile(rb"\{([0-9]+)(\+?)\}")


class Atom(str):
    """An IMAP atom: parsed from / serialised as an unquoted token."""

    __slots__ = ()


#: A generic IMAP value: atom, quoted string (str), literal (bytes), NIL
#: (None), number (int, serialisation only) or parenthesised list (tuple).
Value = Union[Atom, str, bytes, None, int, "tuple[Value, ...]", "list[Value]"]


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"Invalid UTF-8 in {what}") from None


class _Cursor:
    """Reads tokens from a RawCommand; literals are only found at fragment ends."""

    def __init__(self, raw: RawCommand) -> None:
        self._frags = raw.fragments
        self._lits = raw.literals
        self.depth = 0
        self._load(0)

    def _load(self, index: int) -> None:
        self._fi = index
        buf = self._frags[index]
        if index == len(self._frags) - 1:
            buf = buf.rstrip(b" ")  # tolerate trailing spaces
        self.buf = buf
        self.pos = 0

    # -- primitives -----------------------------------------------------------

    def peek(self) -> int:
        return self.buf[self.pos] if self.pos < len(self.buf) else -1

    def at_end(self) -> bool:
        return self.pos >= len(self.buf) and self._fi >= len(self._lits)

    def missing(self, what: str) -> ParseError:
        return ParseError(f"Missing {what}" if self.at_end() else f"Invalid {what}")

    def expect_end(self) -> None:
        if not self.at_end():
            raise ParseError("Unexpected extra arguments")

    def expect(self, char: int, what: str) -> None:
        if self.peek() != char:
            raise ParseError(f"Missing {what}" if self.at_end() else f"Expected {what}")
        self.pos += 1

    def sp(self, what: str) -> None:
        """Consume the single SP that precedes argument ``what``."""
        if self.peek() == _SP:
            self.pos += 1
            return
        if self.at_end():
            raise ParseError(f"Missing {what}")
        raise ParseError(f"Expected space before {what}")

    def try_sp(self) -> bool:
        if self.peek() == _SP:
            self.pos += 1
            return True
        return False

    def take(self, regex: re.Pattern[bytes]) -> bytes | None:
        m = regex.match(self.buf, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group(0)

    def push_depth(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ParseError("Too deeply nested")

    # -- tokens ---------------------------------------------------------------

    def atom(self, what: str) -> str:
        tok = self.take(_ATOM_RE)
        if tok is None:
            raise self.missing(what)
        return tok.decode("ascii")

    def quoted(self) -> bytes:
        m = _QUOTED_RE.match(self.buf, self.pos)
        if m is None:
            raise ParseError("Unterminated or invalid quoted string")
        self.pos = m.end()
        body = m.group(1)
        return _UNESCAPE_RE.sub(rb"\1", body) if b"\\" in body else body

    def literal(self) -> bytes:
        m = _LITERAL_TOKEN_RE.match(self.buf, self.pos)
        if m is None:
            raise ParseError("Invalid literal")
        if m.end() != len(self.buf) or self._fi >= len(self._lits):
            raise ParseError("Literal without data")
        data = self._lits[self._fi]
        digits = m.group(1)
        if len(digits) > _MAX_DIGITS or int(digits) != len(data):
            raise ParseError("Literal size mismatch")
        self._load(self._fi + 1)
        return data

    def string(self, what: str) -> bytes:
        """string = quoted / literal"""
        c = self.peek()
        if c == _DQUOTE:
            return self.quoted()
        if c == _LBRACE:
            return self.literal()
        raise self.missing(what)

    def astring(self, what: str) -> bytes:
        """astring = 1*ASTRING-CHAR / string"""
        c = self.peek()
        if c in (_DQUOTE, _LBRACE):
            return self.string(what)
        tok = self.take(_ASTRING_RE)
        if tok is None:
            raise self.missing(what)
        return tok

    def astring_str(self, what: str) -> str:
        return _utf8(self.astring(what), what)

    def nstring(self, what: str) -> bytes | None:
        """nstring = string / NIL"""
        c = self.peek()
        if c in (_DQUOTE, _LBRACE):
            return self.string(what)
        tok = self.take(_ATOM_RE)
        if tok is not None and tok.upper() == b"NIL":
            return None
        raise self.missing(what)

    def number(self, what: str, *, nonzero: bool = False, maximum: int = MAX_NUMBER) -> int:
        tok = self.take(_NUMBER_RE)
        if tok is None:
            raise self.missing(what)
        if nonzero and tok[0] == 0x30:
            raise ParseError(f"Invalid {what}")
        if len(tok) > _MAX_DIGITS or int(tok) > maximum:
            raise ParseError(f"{what.capitalize()} out of range")
        return int(tok)

    def mailbox(self, what: str = "mailbox name") -> str:
        return decode_mailbox(self.astring(what))

    def list_mailbox(self) -> str:
        """list-mailbox = 1*list-char / string  (RFC 3501 §6.3.8 wildcards % *)"""
        c = self.peek()
        if c in (_DQUOTE, _LBRACE):
            raw = self.string("mailbox pattern")
        else:
            tok = self.take(_LIST_MAILBOX_RE)
            if tok is None:
                raise self.missing("mailbox pattern")
            raw = tok
        return decode_mutf7(raw)

    def sequence_set(self) -> SequenceSet:
        tok = self.take(_SEQSET_TOKEN_RE)
        if tok is None:
            raise self.missing("sequence set")
        return SequenceSet.parse(tok)

    def flag(self, *, allow_recent: bool = False) -> str:
        """flag = "\\" atom (system flag) / atom (keyword), RFC 3501 §9."""
        if self.peek() == _BACKSLASH:
            self.pos += 1
            tok = self.take(_ATOM_RE)
            if tok is None:
                raise ParseError("Invalid flag")
            flag = normalize_flag("\\" + tok.decode("ascii"))
            if flag not in SYSTEM_FLAGS or (flag == "\\Recent" and not allow_recent):
                raise ParseError("Invalid system flag")
            return flag
        return self.atom("flag")

    def flag_list(self) -> tuple[str, ...]:
        """flag-list = "(" [flag *(SP flag)] ")" """
        self.expect(_LPAREN, "flag list")
        flags: list[str] = []
        if self.peek() != _RPAREN:
            flags.append(self.flag())
            while self.try_sp():
                flags.append(self.flag())
        self.expect(_RPAREN, ")")
        return tuple(flags)

    def value(self) -> Value:
        c = self.peek()
        if c == _LPAREN:
            return self.value_list()
        if c == _DQUOTE:
            return _utf8(self.quoted(), "quoted string")
        if c == _LBRACE:
            return self.literal()
        tok = self.take(_VALUE_ATOM_RE)
        if tok is None:
            raise self.missing("value")
        if tok.upper() == b"NIL":
            return None
        return Atom(tok.decode("ascii"))

    def value_list(self) -> tuple[Value, ...]:
        self.expect(_LPAREN, "(")
        self.push_depth()
        items: list[Value] = []
        if self.peek() != _RPAREN:
            items.append(self.value())
            while self.try_sp():
                items.append(self.value())
        self.expect(_RPAREN, ")")
        self.depth -= 1
        return tuple(items)

    def options(self) -> tuple[Value, ...]:
        """A parenthesised option list; top-level atoms are upper-cased."""
        return tuple(Atom(v.upper()) if isinstance(v, Atom) else v for v in self.value_list())


def parse_values(data: bytes) -> tuple[Value, ...]:
    """Parse SP-separated generic values (atoms, strings, literals, NIL, lists).

    Handy for tests and tooling; literals use the ``{n}\\r\\n`` wire syntax.
    """
    if not data.strip(b" \r\n"):
        return ()
    # A dummy leading token lets the framer see a literal in first position.
    cur = _Cursor(_split_flat(b"* " + data))
    cur.pos = 2
    items = [cur.value()]
    while cur.try_sp():
        items.append(cur.value())
    cur.expect_end()
    return tuple(items)
