"""Pure IMAP4rev1 protocol layer: command framing, parsing and serialisation.

This module does no I/O (no sockets, no asyncio) and no MIME parsing; it only
turns client bytes into typed command objects and Python values into IMAP wire
syntax.  It follows RFC 3501 (IMAP4rev1) plus the command syntax of LITERAL+
(RFC 7888), UIDPLUS (RFC 4315), MOVE (RFC 6851), IDLE (RFC 2177), ENABLE
(RFC 5161), ID (RFC 2971), NAMESPACE (RFC 2342), UNSELECT (RFC 3691),
SASL-IR (RFC 4959) and SPECIAL-USE (RFC 6154, incl. the LIST-EXTENDED syntax
of RFC 5258 it relies on).

Framing -- :class:`CommandReader`
---------------------------------
Feed raw bytes as they arrive; ``feed()`` returns a *lazy* iterator of events.
Because it is lazy, anything the server does while handling an event (accept a
literal, switch to IDLE mode...) takes effect before the next byte is looked
at, so pipelined input is always interpreted in the right mode::

    reader = CommandReader()            # max_line_length=64 KiB, max_literal_size=64 MiB
    while data := await stream.read(65536):
        for event in reader.feed(data):
            if isinstance(event, LiteralAnnounced):
                # The size is known before any payload is accepted.
                if event.size > limit_for(event.command):
                    reader.reject_literal("Literal too big", code="TOOBIG")
                else:
                    writer.write(reader.accept_literal())  # b"+ Ready..." or b""
            elif isinstance(event, RawCommand):
                try:
                    command = parse_command(event)
                except BadCharsetError as exc:
                    ...  # tagged NO [BADCHARSET (UTF-8 US-ASCII)]
                except ParseError as exc:
                    ...  # f"{exc.tag or '*'} BAD {exc}"
                else:
                    ...  # dispatch on command.name / command.uid / command.args
                    # after answering "+ idling": reader.expect_done()
                    # during AUTHENTICATE exchanges: reader.expect_line()
            elif isinstance(event, IdleDone):        # the line that ended IDLE
                ...  # event.valid is False when it was not "DONE"
            elif isinstance(event, ContinuationLine): # SASL client response
                ...
            elif isinstance(event, FramingError):    # over-long line, refused literal
                ...  # f"{event.tag or '*'} BAD {event.message}" (or NO [TOOBIG])

Events: :class:`RawCommand` (a complete command, literals included),
:class:`LiteralAnnounced` (the reader pauses until ``accept_literal()`` or
``reject_literal()`` is called), :class:`FramingError`, :class:`IdleDone`,
:class:`ContinuationLine`.  ``reader.reset()`` drops all buffered input: after
answering STARTTLS, stop iterating and call it before the TLS handshake, so
plaintext pipelined behind STARTTLS is never executed.

Framing choices:

* Lines end at LF; a CR right before it is dropped.  Bare LF is therefore
  accepted everywhere, like Dovecot does.
* Empty lines between commands are ignored (and blank lines while idling).
* In ``expect_line()``/``expect_done()`` mode an over-long line yields a
  tagless :class:`FramingError` and the reader returns to command mode.
* ``max_line_length`` limits the command text *excluding* literal payloads
  (summed over all the lines of one command).  On overflow a
  :class:`FramingError` is emitted at once (with the tag if it could be read),
  then input is discarded up to the end of the line; a ``{n+}`` literal
  announced at the end of a discarded line is swallowed too.
* Literals bigger than ``max_literal_size`` are refused without asking the
  server.  A refused synchronising literal produces a FramingError right away
  (no continuation is sent; the client aborts the command, RFC 3501 §7.5).  A
  refused non-synchronising literal is swallowed together with the rest of the
  command, and only then is the FramingError emitted (RFC 7888 §4), so the
  payload can never be mistaken for commands.
* A ``{n}`` at the end of a line counts as a literal only when it starts a
  token (preceded by SP or "(") and is not inside a quoted string.

Parsing -- :func:`parse_command`
--------------------------------
``parse_command(raw)`` takes a :class:`RawCommand` (or, for convenience and
tests, the flat wire bytes of a single command) and returns a :class:`Command`
``(tag, name, args, uid)``.  ``name`` is upper-case; ``UID FETCH`` becomes
``name="FETCH", uid=True``.  ``args`` is a small frozen dataclass per command
(:class:`LoginArgs`, :class:`FetchArgs`, ...), or ``None`` for commands
without arguments.  Any malformed input raises :class:`ParseError` (a
``ValueError``) carrying ``tag`` (when known), ``command`` and a short
message; no other exception escapes the parser for any input.  A CHARSET
other than UTF-8/US-ASCII in SEARCH raises the subclass
:class:`BadCharsetError` whose ``code`` is ``"BADCHARSET (UTF-8 US-ASCII)"``.

String conventions: atoms and quoted strings decode to ``str`` (UTF-8, 8-bit
is allowed inside quoted strings); literals are ``bytes`` in generic values
and in APPEND, and are UTF-8 decoded where the grammar wants text (user names,
mailbox names, search strings).  Mailbox names are decoded from modified
UTF-7 (RFC 3501 §5.1.3) and ``INBOX`` is case-insensitively normalised.
Trailing spaces at the end of a command are tolerated.

Strictness choices: modified UTF-7 is decoded strictly (raw 8-bit or
non-canonical names are a ParseError); in STORE and APPEND only the five
settable system flags are accepted after a backslash (``\\Recent`` and unknown
``\\Foo`` are rejected, ``\\seen`` is canonicalised to ``\\Seen``); SEARCH NEW
and OLD are expanded to their RFC 3501 definitions; numbers are limited to
32 bits (64 for LARGER/SMALLER); lists and search keys nest at most 32 deep.

Other building blocks: :class:`SequenceSet` / :func:`format_sequence_set`,
:class:`FetchAttribute` / :class:`Section`, the ``Search*`` key tree,
:func:`encode_mutf7` / :func:`decode_mutf7`, :func:`parse_imap_date`,
:func:`parse_imap_datetime`, :func:`imap_date`, and the serialisers
:func:`quote`, :func:`astring`, :func:`nstring`, :func:`literal`,
:func:`encode_value`, :func:`encode_mailbox`, :func:`flag_list`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Literal, Union

__all__ = [
    # constants
    "CONTINUATION", "DEFAULT_MAX_LINE_LENGTH", "DEFAULT_MAX_LITERAL_SIZE", "MAX_NUMBER",
    "QUOTED_MAX", "STATUS_ITEMS", "SUPPORTED_CHARSETS", "SYSTEM_FLAGS", "UID_COMMANDS",
    "FETCH_MACROS",
    # errors
    "ParseError", "BadCharsetError", "InvalidMailboxName",
    # framing
    "CommandReader", "RawCommand", "LiteralAnnounced", "FramingError", "IdleDone",
    "ContinuationLine", "ReaderEvent",
    # parsing
    "parse_command", "parse_values", "Command", "Atom", "Value",
    "AuthenticateArgs", "LoginArgs", "SelectArgs", "MailboxArgs", "CreateArgs", "RenameArgs",
    "ListArgs", "StatusArgs", "AppendArgs", "ExpungeArgs", "SearchArgs", "FetchArgs",
    "StoreArgs", "CopyArgs", "EnableArgs", "IdArgs", "CommandArgs",
    # sequence sets
    "SequenceSet", "format_sequence_set",
    # fetch
    "FetchAttribute", "Section",
    # search
    "SearchKey", "SearchAll", "SearchFlag", "SearchHeader", "SearchText", "SearchDate",
    "SearchSize", "SearchSequence", "SearchNot", "SearchOr", "SearchAnd",
    # mailbox names, dates, flags
    "encode_mutf7", "decode_mutf7", "decode_mailbox", "normalize_mailbox", "encode_mailbox",
    "parse_imap_date", "parse_imap_datetime", "imap_date",
    "normalize_flag", "is_valid_flag", "is_valid_keyword",
    # serialisation
    "LiteralData", "quote", "astring", "nstring", "literal", "encode_value", "flag_list",
]

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

DEFAULT_MAX_LINE_LENGTH = 64 * 1024
DEFAULT_MAX_LITERAL_SIZE = 64 * 1024 * 1024
#: Continuation request the server sends after accepting a synchronising literal.
CONTINUATION = b"+ Ready for literal data\r\n"
#: Strings longer than this (in bytes) are serialised as literals, not quoted.
QUOTED_MAX = 1024
#: nz-number / number are 32-bit unsigned (RFC 3501 §9).
MAX_NUMBER = 0xFFFFFFFF
#: SEARCH charsets we accept (RFC 3501 §6.4.4: US-ASCII mandatory, UTF-8 common).
SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")
#: Commands that may follow "UID" (RFC 3501 §6.4.8, RFC 4315 §2.1, RFC 6851).
UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE"})
#: STATUS items: RFC 3501 §6.3.10 plus SIZE (RFC 8438), DELETED (RFC 9051),
#: HIGHESTMODSEQ (RFC 7162) and APPENDLIMIT (RFC 7889).  Whether the server
#: supports the extensions is its own business.
STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
     "SIZE", "DELETED", "HIGHESTMODSEQ", "APPENDLIMIT"}
)
#: System flags, RFC 3501 §2.3.2 (canonical spelling).
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent"})

_MAX_DEPTH = 32  # nesting limit for parenthesised lists / search keys
_MAX_DIGITS = 20  # never int() more digits than this (also avoids Python's int/str limit)

_SP = 0x20
_DQUOTE = 0x22
_LPAREN = 0x28
_RPAREN = 0x29
_LBRACE = 0x7B
_LBRACKET = 0x5B
_RBRACKET = 0x5D
_BACKSLASH = 0x5C
_DOT = 0x2E
_LT = 0x3C

# Character classes (RFC 3501 §9).  atom-specials = "(" / ")" / "{" / SP /
# CTL / list-wildcards ("%" "*") / quoted-specials ('"' "\") / resp-specials ("]").
_ATOM_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')  # ATOM-CHAR / "]"
_TAG_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')  # ASTRING-CHAR except "+"
_LIST_MAILBOX_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')  # list-char
_VALUE_ATOM_RE = re.compile(rb'\\?[^\x00-\x20\x7f-\xff(){%*"\\]+|\\\*')
_NUMBER_RE = re.compile(rb"[0-9]+")
_SEQSET_TOKEN_RE = re.compile(rb"[0-9*:,]+")
# quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR excludes CR, LF, NUL and
# unescaped quoted-specials.  8-bit is tolerated (UTF-8).  Unrolled-loop form
# so that matching stays linear.
_QUOTED_RE = re.compile(rb'"([^"\\\r\n\x00]*(?:\\["\\][^"\\\r\n\x00]*)*)"')
_UNESCAPE_RE = re.compile(rb'\\(["\\])')
_QUOTE_SCAN_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_LITERAL_TOKEN_RE = re.compile(rb"\{([0-9]+)(\+?)\}")
_LITERAL_MARKER_RE = re.compile(rb"\{([0-9]+)(\+?)\}\Z")
_BASE64_RE = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_FETCH_NAME_RE = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_TEXT_RE = re.compile(rb"[A-Za-z.]+")
_PARTIAL_RE = re.compile(rb"<([0-9]+)\.([0-9]+)>")
_STORE_ITEM_RE = re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.IGNORECASE)
_HEADER_NAME_RE = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext
_QUOTABLE_RE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")  # TEXT-CHAR, 7-bit


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class ParseError(ValueError):
    """Malformed client input.

    ``tag`` is the command tag when it could be read (reply ``<tag> BAD``,
    otherwise ``* BAD``); ``command`` is the upper-cased command name when
    known; ``code`` is an optional response code (without brackets).
    """

    def __init__(
        self,
        message: str,
        *,
        tag: str | None = None,
        command: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.command = command
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, tag={self.tag!r}, code={self.code!r})"


class BadCharsetError(ParseError):
    """SEARCH named a charset we do not support (RFC 3501 §6.4.4).

    Reply ``<tag> NO [BADCHARSET (UTF-8 US-ASCII)] ...`` (see ``code``).
    """

    def __init__(self, charset: str, *, tag: str | None = None) -> None:
        super().__init__(
            "Unsupported charset",
            tag=tag,
            command="SEARCH",
            code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")",
        )
        self.charset = charset


class InvalidMailboxName(ParseError):
    """A mailbox name (or LIST pattern) that is not valid modified UTF-7 (RFC 3501 §5.1.3).

    The command is well-formed; the name just cannot exist. Servers answer
    ``NO`` (and LIST/LSUB simply match nothing), not ``BAD``.
    """

    def __init__(self) -> None:
        super().__init__("Mailbox name is not valid modified UTF-7", code="CANNOT")


# --------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RawCommand:
    """One complete command as received.

    ``fragments`` are the text lines (CRLF removed); every fragment but the
    last ends with a literal marker ``{n}``/``{n+}`` whose payload is the
    corresponding entry of ``literals``.
    """

    fragments: tuple[bytes, ...]
    literals: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.fragments) != len(self.literals) + 1:
            raise ValueError("RawCommand needs exactly one more fragment than literals")

    @property
    def tag(self) -> str | None:
        """The tag, if the command starts with a syntactically valid one."""
        return _peek_tag(self.fragments[0])

    def to_bytes(self) -> bytes:
        """Re-create the wire form (with CRLF line ends), e.g. for logging."""
        out = bytearray()
        for frag, lit in zip(self.fragments, self.literals, strict=False):
            out += frag + b"\r\n" + lit
        out += self.fragments[-1] + b"\r\n"
        return bytes(out)


@dataclass(frozen=True)
class LiteralAnnounced:
    """The client announced a literal; the reader waits for a decision.

    Call ``reader.accept_literal()`` (and write what it returns: the ``+``
    continuation for synchronising literals, nothing for ``{n+}``) or
    ``reader.reject_literal(...)``.
    """

    tag: str | None
    command: str | None  # e.g. "APPEND", "UID COPY" (best effort, upper-case)
    size: int
    synchronizing: bool
    index: int  # 0 for the first literal of the command
    total_size: int  # command bytes received so far (text + earlier literals)


@dataclass(frozen=True)
class FramingError:
    """A framing-level error; the server should answer ``<tag|*> BAD`` (or NO [code])."""

    message: str
    tag: str | None = None
    code: str | None = None  # e.g. "TOOBIG" (RFC 4469 / RFC 7888 §4)


@dataclass(frozen=True)
class IdleDone:
    """The line that ended IDLE (after ``expect_done()``); RFC 2177 §3."""

    valid: bool  # False if the line was not "DONE"
    line: bytes = b""


@dataclass(frozen=True)
class ContinuationLine:
    """A raw client line requested with ``expect_line()`` (SASL responses)."""

    data: bytes


ReaderEvent = RawCommand | LiteralAnnounced | FramingError | IdleDone | ContinuationLine


class _Signal(enum.Enum):
    NEED_MORE = 0


_NEED_MORE = _Signal.NEED_MORE
_ReaderMode = Literal["command", "literal", "await", "discard", "swallow", "line", "done"]


def _peek_tag(line: bytes | bytearray) -> str | None:
    """Return the tag at the start of ``line`` if it is followed by SP or the end."""
    m = _TAG_RE.match(line)
    if m is None or (m.end() < len(line) and line[m.end()] != _SP):
        return None
    return m.group(0).decode("ascii")


def _peek_command(line: bytes) -> str | None:
    """Best-effort upper-case command name ("APPEND", "UID COPY") of a first line."""
    parts = line.split(b" ", 3)
    if len(parts) < 2 or _peek_tag(line) is None or not _ATOM_RE.fullmatch(parts[1]):
        return None
    name = parts[1].decode("ascii").upper()
    if name == "UID" and len(parts) > 2 and _ATOM_RE.fullmatch(parts[2]):
        name += " " + parts[2].decode("ascii").upper()
    return name


def _inside_quotes(line: bytes, end: int) -> bool:
    """True if position ``end`` of ``line`` lies inside an unterminated quoted string."""
    pos = 0
    while True:
        q = line.find(b'"', pos, end)
        if q < 0:
            return False
        m = _QUOTE_SCAN_RE.match(line, q, end)
        if m is None:
            return True
        pos = m.end()


class CommandReader:
    """Incremental command framer (see the module docstring for usage).

    ``feed(data)`` buffers ``data`` and returns a lazy iterator over the
    events that can be produced so far; ``events()`` resumes without new
    data (e.g. after deciding on a literal outside the loop).
    """

    def __init__(
        self,
        *,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_literal_size: int = DEFAULT_MAX_LITERAL_SIZE,
    ) -> None:
        if max_line_length < 1 or max_literal_size < 0:
            raise ValueError("limits must be positive")
        self.max_line_length = max_line_length
        self.max_literal_size = max_literal_size
        self._init_state()

    def _init_state(self) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to contain no LF
        self._queue: deque[ReaderEvent] = deque()
        self._mode: _ReaderMode = "command"
        self._reset_command()
        self._remaining = 0  # bytes still expected for a literal / swallow
        self._lit_buf = bytearray()
        self._pending: LiteralAnnounced | None = None
        self._discard_error: FramingError | None = None
        self._discard_tail = b""

    # -- public API ---------------------------------------------------------

    def feed(self, data: bytes) -> Iterator[ReaderEvent]:
        """Buffer ``data`` and iterate over the events now available."""
        if data:
            self._buf += data
        return self._run()

    def events(self) -> Iterator[ReaderEvent]:
        """Iterate over events from already-buffered data."""
        return self._run()

    @property
    def pending_literal(self) -> LiteralAnnounced | None:
        """The literal awaiting ``accept_literal()``/``reject_literal()``, if any."""
        return self._pending

    @property
    def incomplete(self) -> bool:
        """True if a partial command, literal or line is buffered."""
        return bool(self._buf or self._frags or self._mode != "command" or self._queue)

    @property
    def buffered(self) -> int:
        """Number of received bytes not yet turned into events."""
        return len(self._buf)

    def accept_literal(self) -> bytes:
        """Accept the pending literal; returns the bytes to send to the client.

        That is :data:`CONTINUATION` for a synchronising literal and ``b""``
        for a non-synchronising one (RFC 7888 §3).
        """
        pending = self._take_pending()
        self._mode = "literal"
        self._remaining = pending.size
        self._lit_buf = bytearray()
        return CONTINUATION if pending.synchronizing else b""

    def reject_literal(self, message: str = "Literal refused", code: str | None = None) -> None:
        """Refuse the pending literal.

        A :class:`FramingError` with ``message``/``code`` and the command's tag
        is emitted: at once for a synchronising literal (no continuation is
        sent), or once the non-synchronising payload and the rest of the
        command have been swallowed.
        """
        pending = self._take_pending()
        self._refuse(FramingError(message, pending.tag, code), pending.synchronizing, pending.size)

    def expect_line(self) -> None:
        """Deliver the next line verbatim as :class:`ContinuationLine` (AUTHENTICATE)."""
        self._require_between_commands()
        self._mode = "line"

    def expect_done(self) -> None:
        """Deliver the next line as :class:`IdleDone` (call after the IDLE "+")."""
        self._require_between_commands()
        self._mode = "done"

    def reset(self) -> int:
        """Drop all buffered input and state; returns the number of bytes dropped.

        Call right after the STARTTLS handshake starts so that plaintext
        pipelined behind STARTTLS is never executed (RFC 3501 §6.2.1).
        """
        dropped = len(self._buf) + sum(len(f) for f in self._frags) + len(self._lit_buf)
        self._init_state()
        return dropped

    # -- internals ----------------------------------------------------------

    def _take_pending(self) -> LiteralAnnounced:
        pending = self._pending
        if pending is None or self._mode != "await":
            raise RuntimeError("no literal is awaiting a decision")
        self._pending = None
        return pending

    def _require_between_commands(self) -> None:
        if self._mode != "command" or self._frags:
            raise RuntimeError("reader is in the middle of a command")

    def _reset_command(self) -> None:
        self._frags: list[bytes] = []
        self._lits: list[bytes] = []
        self._text_len = 0
        self._lit_total = 0

    def _refuse(self, error: FramingError, synchronizing: bool, size: int) -> None:
        self._reset_command()
        if synchronizing:
            # The client waits for "+"; a tagged reply makes it abort (RFC 3501 §7.5).
            self._mode = "command"
            self._queue.append(error)
        else:
            # RFC 7888 §4: the payload is on its way; eat it, then the rest of
            # the command line, and only then report.
            self._mode = "swallow"
            self._remaining = size
            self._discard_error = error
            self._discard_tail = b""

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._scanned = max(0, self._scanned - n)

    def _run(self) -> Iterator[ReaderEvent]:
        while True:
            if self._queue:
                yield self._queue.popleft()
                continue
            event = self._step()
            if event is _NEED_MORE:
                return
            if event is not None:
                yield event

    def _step(self) -> ReaderEvent | _Signal | None:
        """Make one unit of progress; return an event, None, or NEED_MORE."""
        mode = self._mode
        if mode == "await":
            return _NEED_MORE
        if mode == "literal" or mode == "swallow":
            n = min(self._remaining, len(self._buf))
            if n:
                if mode == "literal":
                    self._lit_buf += self._buf[:n]
                self._consume(n)
                self._remaining -= n
            if self._remaining:
                return _NEED_MORE
            if mode == "literal":
                data = bytes(self._lit_buf)
                self._lit_buf = bytearray()
                self._lits.append(data)
                self._lit_total += len(data)
                self._mode = "command"
            else:
                self._mode = "discard"
            return None
        if mode == "discard":
            return self._step_discard()
        return self._step_line()

    def _step_discard(self) -> ReaderEvent | _Signal | None:
        idx = self._buf.find(b"\n")
        if idx < 0:
            # Keep a short tail to spot a "{n+}" marker straddling chunks.
            self._discard_tail = (self._discard_tail + bytes(self._buf[-40:]))[-40:]
            self._buf.clear()
            self._scanned = 0
            return _NEED_MORE
        tail = (self._discard_tail + bytes(self._buf[max(0, idx - 40) : idx]))[-40:]
        self._consume(idx + 1)
        self._discard_tail = b""
        if tail.endswith(b"\r"):
            tail = tail[:-1]
        m = _LITERAL_MARKER_RE.search(tail)
        if m is not None and m.group(2):
            # A non-synchronising literal follows: its bytes are not commands.
            self._mode = "swallow"
            digits = m.group(1)
            self._remaining = int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS
            return None
        self._mode = "command"
        error, self._discard_error = self._discard_error, None
        return error

    def _overflow(self) -> FramingError:
        tag = None
        if self._mode == "command":
            # Only look at the first max_line_length+1 bytes: they are present
            # however the input was chunked, so the result is chunking-independent.
            tag = (
                _peek_tag(self._frags[0])
                if self._frags
                else _peek_tag_prefix(self._buf[: self.max_line_length + 1])
            )
        self._reset_command()
        self._mode = "discard"
        self._discard_error = None
        self._discard_tail = b""
        return FramingError("Command line too long", tag)

    def _step_line(self) -> ReaderEvent | _Signal | None:
        idx = self._buf.find(b"\n", self._scanned)
        limit = self.max_line_length - self._text_len
        if idx < 0:
            self._scanned = len(self._buf)
            if len(self._buf) > limit + 1:  # +1: a trailing CR belongs to the terminator
                return self._overflow()
            return _NEED_MORE
        end = idx - 1 if idx > 0 and self._buf[idx - 1] == 0x0D else idx
        if end > limit:
            return self._overflow()
        line = bytes(self._buf[:end])
        self._consume(idx + 1)
        self._scanned = 0

        if self._mode == "line":
            self._mode = "command"
            return ContinuationLine(line)
        if self._mode == "done":
            stripped = line.strip(b" \t")
            if not stripped:
                return None  # tolerate blank lines while idling
            self._mode = "command"
            return IdleDone(stripped.upper() == b"DONE", line)

        if not self._frags and not line.strip(b" "):
            return None  # ignore empty lines between commands
        if line.endswith(b"}"):
            m = _LITERAL_MARKER_RE.search(line)
            if (
                m is not None
                and m.start() > 0
                and line[m.start() - 1] in (_SP, _LPAREN)
                and not _inside_quotes(line, m.start())
            ):
                return self._announce(line, m)
        self._frags.append(line)
        raw = RawCommand(tuple(self._frags), tuple(self._lits))
        self._reset_command()
        return raw

    def _announce(self, line: bytes, m: re.Match[bytes]) -> ReaderEvent | None:
        self._frags.append(line)
        self._text_len += len(line)
        digits = m.group(1)
        size = int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS
        synchronizing = not m.group(2)
        first = self._frags[0]
        tag = _peek_tag(first)
        if size > self.max_literal_size:
            self._refuse(FramingError("Literal too large", tag, "TOOBIG"), synchronizing, size)
            return None
        self._pending = LiteralAnnounced(
            tag=tag,
            command=_peek_command(first),
            size=size,
            synchronizing=synchronizing,
            index=len(self._lits),
            total_size=self._text_len + self._lit_total,
        )
        self._mode = "await"
        return self._pending


def _peek_tag_prefix(buf: bytearray) -> str | None:
    """Tag of a (possibly incomplete) line: only trusted if followed by SP."""
    m = _TAG_RE.match(buf)
    if m is None or m.end() >= len(buf) or buf[m.end()] != _SP:
        return None
    return m.group(0).decode("ascii")


def _split_flat(data: bytes) -> RawCommand:
    """Frame the wire bytes of exactly one command (convenience for tests/tools)."""
    reader = CommandReader(max_line_length=len(data) + 2, max_literal_size=1 << 62)
    commands: list[RawCommand] = []

    def drain(chunk: bytes) -> None:
        for event in reader.feed(chunk):
            if isinstance(event, LiteralAnnounced):
                reader.accept_literal()
            elif isinstance(event, RawCommand):
                commands.append(event)
            elif isinstance(event, FramingError):  # pragma: no cover - limits are generous
                raise ParseError(event.message, tag=event.tag, code=event.code)

    drain(bytes(data))
    if reader._mode == "command":  # terminate a final line lacking its CRLF
        drain(b"\r\n")
    if reader.incomplete:
        tag = commands[0].tag if commands else _peek_tag_prefix(bytearray(data))
        raise ParseError("Truncated literal", tag=tag)
    if not commands:
        raise ParseError("Empty command")
    if len(commands) > 1:
        raise ParseError("Unexpected line break", tag=commands[0].tag)
    return commands[0]


# --------------------------------------------------------------------------
# Generic values
# --------------------------------------------------------------------------


class Atom(str):
    """An IMAP atom: parsed from / serialised as an unquoted token."""

    __slots__ = ()


class LiteralData(bytes):
    """Bytes that :func:`encode_value` must send as a literal."""

    __slots__ = ()


#: A generic IMAP value: atom, quoted string (str), literal (bytes), NIL
#: (None), number (int, serialisation only) or parenthesised list (tuple).
Value = Union[Atom, str, bytes, None, int, "tuple[Value, ...]", "list[Value]"]


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"Invalid UTF-8 in {what}") from None


# --------------------------------------------------------------------------
# Tokeniser
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Sequence sets (RFC 3501 §9 sequence-set)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceSet:
    """A parsed sequence-set such as ``1,3:5,7:*``.

    ``ranges`` holds ``(start, end)`` pairs as written (``5:3`` stays
    reversed); ``None`` stands for ``*``.  ``*`` means the largest number in
    use: the message count for sequence numbers, the highest UID in the
    mailbox for UID sets (RFC 3501 §6.4.8, §9).  Every method that resolves
    ``*`` therefore takes ``largest``.

    Empty mailbox (``largest == 0``): an element involving ``*`` matches
    nothing, so ``*`` and ``1:*`` resolve to the empty set, and explicit
    numbers are outside the mailbox.  Results are always clipped to
    ``1..largest``; so ``n:*`` with ``n > largest`` yields ``[largest]``, as
    RFC 3501 §6.4.8 requires for UID ranges.  For message sequence numbers the
    RFC wants a BAD reply when a number exceeds the message count: check
    ``exceeds(exists)``.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    @classmethod
    def parse(cls, text: str | bytes) -> SequenceSet:
        """Parse ``seq-number / seq-range`` items separated by commas."""
        if isinstance(text, str):
            if not text.isascii():
                raise ParseError("Invalid sequence set")
            data = text.encode("ascii")
        else:
            data = bytes(text)
        if not data:
            raise ParseError("Empty sequence set")
        ranges: list[tuple[int | None, int | None]] = []
        for item in data.split(b","):
            ends = item.split(b":")
            if len(ends) > 2:
                raise ParseError("Invalid sequence range")
            values = [cls._endpoint(e) for e in ends]
            ranges.append((values[0], values[-1]))
        return cls(tuple(ranges))

    @staticmethod
    def _endpoint(tok: bytes) -> int | None:
        if tok == b"*":
            return None
        if not tok or not tok.isdigit():
            raise ParseError("Invalid sequence set")
        if tok[0] == 0x30:  # nz-number: 0 and leading zeros are invalid
            raise ParseError("Invalid message number 0" if tok.strip(b"0") == b"" else "Invalid sequence set")
        if len(tok) > 10 or int(tok) > MAX_NUMBER:
            raise ParseError("Sequence number out of range")
        return int(tok)

    def __str__(self) -> str:
        def fmt(v: int | None) -> str:
            return "*" if v is None else str(v)

        return ",".join(fmt(a) if a == b else f"{fmt(a)}:{fmt(b)}" for a, b in self.ranges)

    @property
    def has_star(self) -> bool:
        return any(a is None or b is None for a, b in self.ranges)

    def exceeds(self, largest: int) -> bool:
        """True if an explicit number is greater than ``largest``."""
        return any(v is not None and v > largest for r in self.ranges for v in r)

    def intervals(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ``(lo, hi)`` intervals clipped to ``1..largest``."""
        spans: list[tuple[int, int]] = []
        for a, b in self.ranges:
            if (a is None or b is None) and largest <= 0:
                continue  # '*' denotes nothing in an empty mailbox
            lo = largest if a is None else a
            hi = largest if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            hi = min(hi, largest)
            if lo <= hi:
                spans.append((lo, hi))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def iter(self, largest: int) -> Iterator[int]:
        """Ascending, de-duplicated numbers of the set within ``1..largest``."""
        for lo, hi in self.intervals(largest):
            yield from range(lo, hi + 1)

    def resolve(self, largest: int) -> list[int]:
        """``list(self.iter(largest))``."""
        return list(self.iter(largest))

    def contains(self, number: int, largest: int) -> bool:
        """Membership test, consistent with :meth:`resolve`."""
        if number < 1 or number > largest:
            return False
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            if lo <= number <= hi:
                return True
        return False


def format_sequence_set(numbers: Iterable[int]) -> str:
    """Compact form of a set of numbers: ``[1, 2, 3, 5]`` -> ``"1:3,5"``.

    Used for UIDPLUS ``APPENDUID``/``COPYUID`` (RFC 4315 §3).
    """
    values = sorted(set(numbers))
    if not values:
        raise ValueError("empty sequence set")
    if values[0] < 1 or values[-1] > MAX_NUMBER:
        raise ValueError("sequence numbers must be in 1..4294967295")
    parts: list[str] = []
    start = prev = values[0]
    for v in values[1:]:
        if v != prev + 1:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
            start = v
        prev = v
    parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


# --------------------------------------------------------------------------
# Modified UTF-7 mailbox names (RFC 3501 §5.1.3)
# --------------------------------------------------------------------------

_MUTF7_B64_RE = re.compile(r"[A-Za-z0-9+,]+")


def encode_mutf7(name: str) -> str:
    """Encode a mailbox name to modified UTF-7.

    Printable US-ASCII represents itself ("&" becomes "&-"); every run of
    other characters becomes "&" + modified BASE64 of UTF-16BE + "-".
    Raises ``ValueError`` for lone surrogates.
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            raw = "".join(run).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + b64 + "-")
            run.clear()

    for ch in name:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(text: str | bytes) -> str:
    """Strictly decode modified UTF-7; raises :class:`ParseError` if invalid.

    Rejected: non-printable or 8-bit characters, an unterminated shift, bad
    or non-canonical BASE64, odd UTF-16 length or lone surrogates, encoded
    printable ASCII, and adjacent encoded sequences.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidMailboxName() from None
    out: list[str] = []
    i, n = 0, len(text)
    after_shift = False
    while i < n:
        ch = text[i]
        if not " " <= ch <= "~":
            raise InvalidMailboxName()
        if ch != "&":
            out.append(ch)
            after_shift = False
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise InvalidMailboxName()
        chunk = text[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            after_shift = False
            continue
        if after_shift or not _MUTF7_B64_RE.fullmatch(chunk) or len(chunk) % 4 == 1:
            raise InvalidMailboxName()
        b64 = chunk.replace(",", "/")
        try:
            raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            decoded = raw.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidMailboxName() from None
        # Canonical form only: no stray bits, and printable ASCII never encoded.
        if base64.b64encode(raw).decode("ascii").rstrip("=") != b64 or any(
            " " <= c <= "~" for c in decoded
        ):
            raise InvalidMailboxName()
        out.append(decoded)
        after_shift = True
    return "".join(out)


def normalize_mailbox(name: str) -> str:
    """Map any case variant of INBOX to "INBOX" (RFC 3501 §5.1)."""
    return "INBOX" if name.isascii() and name.upper() == "INBOX" else name


def decode_mailbox(raw: str | bytes) -> str:
    """Wire mailbox name -> str: modified UTF-7 decoding + INBOX normalisation."""
    return normalize_mailbox(decode_mutf7(raw))


def encode_mailbox(name: str) -> bytes:
    """str mailbox name -> wire astring (modified UTF-7, atom when possible)."""
    return astring(encode_mutf7(name))


# --------------------------------------------------------------------------
# Dates (RFC 3501 §9 date, date-time)
# --------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.upper(): i for i, m in enumerate(_MONTHS, 1)}
_DATE_RE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
# date-day-fixed = (SP DIGIT) / 2DIGIT; a bare single digit is tolerated too.
_DATETIME_RE = re.compile(
    r" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)


def _ascii_text(text: str | bytes, what: str) -> str:
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise ParseError(f"Invalid {what}") from None
    return text


def parse_imap_date(text: str | bytes) -> date:
    """Parse a SEARCH date ``d-Mon-yyyy`` (month case-insensitive)."""
    m = _DATE_RE.fullmatch(_ascii_text(text, "date"))
    month = _MONTH_NUMBER.get(m.group(2).upper()) if m else None
    if m is None or month is None:
        raise ParseError("Invalid date")
    try:
        return date(int(m.group(3)), month, int(m.group(1)))
    except ValueError:
        raise ParseError("Invalid date") from None


def parse_imap_datetime(text: str | bytes) -> datetime:
    """Parse an APPEND date-time ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` into an aware datetime."""
    m = _DATETIME_RE.fullmatch(_ascii_text(text, "date-time"))
    month = _MONTH_NUMBER.get(m.group(2).upper()) if m else None
    if m is None or month is None:
        raise ParseError("Invalid date-time")
    day, year, hour, minute, second, zh, zm = (int(m.group(i)) for i in (1, 3, 4, 5, 6, 8, 9))
    if zh > 23 or zm > 59:
        raise ParseError("Invalid date-time")
    offset = timedelta(hours=zh, minutes=zm)
    if m.group(7) == "-":
        offset = -offset
    try:
        # A leap second (":60") is clamped; datetime cannot represent it.
        second = 59 if second == 60 else second
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError:
        raise ParseError("Invalid date-time") from None


def imap_date(value: datetime) -> str:
    """INTERNALDATE text, e.g. ``17-Jul-1996 02:44:25 -0700`` (naive = UTC).

    The day is zero-padded (``2DIGIT`` form of date-day-fixed).  Quote it
    with :func:`quote` when building a response.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    offset = value.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return (
        f"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{hh:02d}{mm:02d}"
    )


# --------------------------------------------------------------------------
# Flags (RFC 3501 §2.3.2)
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# FETCH attributes (RFC 3501 §6.4.5)
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# SEARCH keys (RFC 3501 §6.4.4)
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthenticateArgs:
    mechanism: str  # upper-case
    initial_response: str | None = None  # SASL-IR (RFC 4959); "=" means empty


@dataclass(frozen=True)
class LoginArgs:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class SelectArgs:
    """SELECT / EXAMINE; ``parameters`` are RFC 4466 select-params, e.g. (CONDSTORE)."""

    mailbox: str
    parameters: tuple[Value, ...] = ()


@dataclass(frozen=True)
class MailboxArgs:
    """DELETE, SUBSCRIBE, UNSUBSCRIBE."""

    mailbox: str


@dataclass(frozen=True)
class CreateArgs:
    """CREATE with optional RFC 4466 create-params, e.g. ``(USE (\\Drafts))`` (RFC 6154 §3)."""

    mailbox: str
    parameters: tuple[Value, ...] = ()

    @property
    def special_use(self) -> tuple[str, ...]:
        """Special-use attributes requested with ``USE (...)``."""
        params = self.parameters
        for i, item in enumerate(params[:-1]):
            if item == "USE" and isinstance(params[i + 1], tuple):
                return tuple(str(v) for v in params[i + 1] if isinstance(v, str))  # type: ignore[union-attr]
        return ()


@dataclass(frozen=True)
class RenameArgs:
    source: str
    destination: str


@dataclass(frozen=True)
class ListArgs:
    """LIST / LSUB.  LIST-EXTENDED (RFC 5258) options and multiple patterns are kept."""

    reference: str
    patterns: tuple[str, ...]
    selection_options: tuple[Value, ...] = ()
    return_options: tuple[Value, ...] = ()

    @property
    def pattern(self) -> str:
        return self.patterns[0]


@dataclass(frozen=True)
class StatusArgs:
    mailbox: str
    items: tuple[str, ...]  # upper-case, members of STATUS_ITEMS


@dataclass(frozen=True)
class AppendArgs:
    mailbox: str
    message: bytes = field(repr=False)
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None


@dataclass(frozen=True)
class ExpungeArgs:
    """UID EXPUNGE <set> (RFC 4315 §2.1)."""

    sequence_set: SequenceSet


@dataclass(frozen=True)
class SearchArgs:
    criteria: SearchAnd
    charset: str | None = None  # "UTF-8" or "US-ASCII" when given


@dataclass(frozen=True)
class FetchArgs:
    """FETCH; ``attributes`` has macros expanded, ``macro`` records which one was used.

    For UID FETCH the server must add UID to the response itself (RFC 3501 §6.4.8).
    """

    sequence_set: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    macro: str | None = None


@dataclass(frozen=True)
class StoreArgs:
    sequence_set: SequenceSet
    operation: Literal["replace", "add", "remove"]  # FLAGS, +FLAGS, -FLAGS
    flags: tuple[str, ...]
    silent: bool = False


@dataclass(frozen=True)
class CopyArgs:
    """COPY and MOVE (RFC 6851)."""

    sequence_set: SequenceSet
    mailbox: str


@dataclass(frozen=True)
class EnableArgs:
    capabilities: tuple[str, ...]  # upper-case


@dataclass(frozen=True)
class IdArgs:
    """ID (RFC 2971): None for ``ID NIL``, otherwise field/value pairs in order."""

    parameters: tuple[tuple[str, str | None], ...] | None

    def as_dict(self) -> dict[str, str | None]:
        return dict(self.parameters or ())


CommandArgs = (
    AuthenticateArgs | LoginArgs | SelectArgs | MailboxArgs | CreateArgs | RenameArgs | ListArgs
    | StatusArgs | AppendArgs | ExpungeArgs | SearchArgs | FetchArgs | StoreArgs | CopyArgs
    | EnableArgs | IdArgs
)


@dataclass(frozen=True)
class Command:
    """A parsed command: ``name`` is upper-case; ``uid`` marks the UID prefix."""

    tag: str
    name: str
    args: CommandArgs | None = None
    uid: bool = False

    @property
    def full_name(self) -> str:
        """e.g. "UID FETCH" or "NOOP"."""
        return f"UID {self.name}" if self.uid else self.name


_Parser = Callable[[_Cursor, bool], CommandArgs | None]


def _p_none(cur: _Cursor, uid: bool) -> None:
    return None


def _p_authenticate(cur: _Cursor, uid: bool) -> AuthenticateArgs:
    cur.sp("authentication mechanism")
    mechanism = cur.atom("authentication mechanism").upper()
    initial: str | None = None
    if cur.try_sp():  # RFC 4959: base64 / "="
        tok = cur.take(_ATOM_RE)
        if tok is None or not (tok == b"=" or _BASE64_RE.fullmatch(tok)):
            raise ParseError("Invalid initial response")
        initial = tok.decode("ascii")
    return AuthenticateArgs(mechanism, initial)


def _p_login(cur: _Cursor, uid: bool) -> LoginArgs:
    cur.sp("user name")
    user = cur.astring_str("user name")
    cur.sp("password")
    return LoginArgs(user, cur.astring_str("password"))


def _p_select(cur: _Cursor, uid: bool) -> SelectArgs:
    cur.sp("mailbox name")
    mailbox = cur.mailbox()
    params = cur.options() if cur.try_sp() else ()
    return SelectArgs(mailbox, params)


def _p_mailbox(cur: _Cursor, uid: bool) -> MailboxArgs:
    cur.sp("mailbox name")
    return MailboxArgs(cur.mailbox())


def _p_create(cur: _Cursor, uid: bool) -> CreateArgs:
    cur.sp("mailbox name")
    mailbox = cur.mailbox()
    params = cur.options() if cur.try_sp() else ()
    return CreateArgs(mailbox, params)


def _p_rename(cur: _Cursor, uid: bool) -> RenameArgs:
    cur.sp("mailbox name")
    source = cur.mailbox()
    cur.sp("new mailbox name")
    return RenameArgs(source, cur.mailbox("new mailbox name"))


def _p_list(cur: _Cursor, uid: bool) -> ListArgs:
    # RFC 3501 §6.3.8, extended by RFC 5258 §6:
    # LIST [SP "(" sel-opts ")"] SP mailbox SP (list-mailbox / "(" patterns ")") [SP RETURN (...)]
    cur.sp("reference name")
    selection: tuple[Value, ...] = ()
    if cur.peek() == _LPAREN:
        selection = cur.options()
        cur.sp("reference name")
    reference = decode_mutf7(cur.astring("reference name"))
    cur.sp("mailbox pattern")
    if cur.peek() == _LPAREN:
        cur.pos += 1
        patterns = [cur.list_mailbox()]
        while cur.try_sp():
            patterns.append(cur.list_mailbox())
        cur.expect(_RPAREN, ")")
    else:
        patterns = [cur.list_mailbox()]
    returns: tuple[Value, ...] = ()
    if cur.try_sp():
        if cur.atom("RETURN").upper() != "RETURN":
            raise ParseError("Unexpected extra arguments")
        cur.sp("return options")
        returns = cur.options()
    return ListArgs(reference, tuple(patterns), selection, returns)


def _p_lsub(cur: _Cursor, uid: bool) -> ListArgs:
    cur.sp("reference name")
    reference = decode_mutf7(cur.astring("reference name"))
    cur.sp("mailbox pattern")
    return ListArgs(reference, (cur.list_mailbox(),))


def _p_status(cur: _Cursor, uid: bool) -> StatusArgs:
    cur.sp("mailbox name")
    mailbox = cur.mailbox()
    cur.sp("status items")
    cur.expect(_LPAREN, "status items")
    items: list[str] = []
    while True:
        item = cur.atom("status item").upper()
        if item not in STATUS_ITEMS:
            raise ParseError("Unknown status item")
        items.append(item)
        if not cur.try_sp():
            break
    cur.expect(_RPAREN, ")")
    return StatusArgs(mailbox, tuple(items))


def _p_append(cur: _Cursor, uid: bool) -> AppendArgs:
    # append = "APPEND" SP mailbox [SP flag-list] [SP date-time] SP literal
    cur.sp("mailbox name")
    mailbox = cur.mailbox()
    cur.sp("message literal")
    flags: tuple[str, ...] = ()
    when: datetime | None = None
    if cur.peek() == _LPAREN:
        flags = cur.flag_list()
        cur.sp("message literal")
    if cur.peek() == _DQUOTE:
        when = parse_imap_datetime(cur.quoted())
        cur.sp("message literal")
    if cur.peek() != _LBRACE:
        raise cur.missing("message literal")
    return AppendArgs(mailbox, cur.literal(), flags, when)


def _p_expunge(cur: _Cursor, uid: bool) -> ExpungeArgs | None:
    if not uid:
        return None
    cur.sp("sequence set")
    return ExpungeArgs(cur.sequence_set())


def _p_search(cur: _Cursor, uid: bool) -> SearchArgs:
    cur.sp("search criteria")
    charset: str | None = None
    start = cur.pos
    tok = cur.take(_ATOM_RE)
    if tok is not None and tok.upper() == b"CHARSET":
        cur.sp("charset")
        charset = cur.astring_str("charset").upper()
        if charset not in SUPPORTED_CHARSETS:
            raise BadCharsetError(charset)
        cur.sp("search criteria")
    else:
        cur.pos = start
    keys = [_parse_search_key(cur)]
    while cur.try_sp():
        keys.append(_parse_search_key(cur))
    return SearchArgs(SearchAnd(tuple(keys)), charset)


def _p_fetch(cur: _Cursor, uid: bool) -> FetchArgs:
    cur.sp("sequence set")
    seqset = cur.sequence_set()
    cur.sp("fetch attributes")
    if cur.peek() == _LPAREN:
        cur.pos += 1
        attrs = [_parse_fetch_att(cur)]
        while cur.try_sp():
            attrs.append(_parse_fetch_att(cur))
        cur.expect(_RPAREN, ")")
        return FetchArgs(seqset, tuple(attrs))
    start = cur.pos
    tok = cur.take(_ATOM_RE)
    macro = tok.decode("ascii").upper() if tok else ""
    if macro in FETCH_MACROS:
        return FetchArgs(seqset, FETCH_MACROS[macro], macro)
    cur.pos = start
    return FetchArgs(seqset, (_parse_fetch_att(cur),))


def _p_store(cur: _Cursor, uid: bool) -> StoreArgs:
    # store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
    cur.sp("sequence set")
    seqset = cur.sequence_set()
    cur.sp("store item")
    m = _STORE_ITEM_RE.match(cur.buf, cur.pos)
    if m is None or (m.end() < len(cur.buf) and cur.buf[m.end()] != _SP):
        raise cur.missing("store item")
    cur.pos = m.end()
    operation: Literal["replace", "add", "remove"] = {b"": "replace", b"+": "add", b"-": "remove"}[
        m.group(1)
    ]  # type: ignore[assignment]
    cur.sp("flags")
    if cur.peek() == _LPAREN:
        flags = cur.flag_list()
    else:
        flag_items = [cur.flag()]
        while cur.try_sp():
            flag_items.append(cur.flag())
        flags = tuple(flag_items)
    return StoreArgs(seqset, operation, flags, silent=m.group(2) is not None)


def _p_copy(cur: _Cursor, uid: bool) -> CopyArgs:
    cur.sp("sequence set")
    seqset = cur.sequence_set()
    cur.sp("mailbox name")
    return CopyArgs(seqset, cur.mailbox())


def _p_enable(cur: _Cursor, uid: bool) -> EnableArgs:
    cur.sp("capability")
    caps = [cur.atom("capability").upper()]
    while cur.try_sp():
        caps.append(cur.atom("capability").upper())
    return EnableArgs(tuple(caps))


def _p_id(cur: _Cursor, uid: bool) -> IdArgs:
    # id = "ID" SP ("(" #(string SP nstring) ")" / nil); field names are
    # accepted as astring for leniency.
    cur.sp("ID parameters")
    if cur.peek() != _LPAREN:
        tok = cur.take(_ATOM_RE)
        if tok is not None and tok.upper() == b"NIL":
            return IdArgs(None)
        raise cur.missing("ID parameters")
    cur.pos += 1
    pairs: list[tuple[str, str | None]] = []
    if cur.peek() != _RPAREN:
        while True:
            key = cur.astring_str("ID field name")
            cur.sp("ID field value")
            raw = cur.nstring("ID field value")
            pairs.append((key, None if raw is None else _utf8(raw, "ID field value")))
            if not cur.try_sp():
                break
    cur.expect(_RPAREN, ")")
    return IdArgs(tuple(pairs))


_COMMAND_PARSERS: dict[str, _Parser] = {
    "CAPABILITY": _p_none, "NOOP": _p_none, "LOGOUT": _p_none, "STARTTLS": _p_none,
    "CHECK": _p_none, "CLOSE": _p_none, "UNSELECT": _p_none, "IDLE": _p_none,
    "NAMESPACE": _p_none,
    "AUTHENTICATE": _p_authenticate, "LOGIN": _p_login,
    "SELECT": _p_select, "EXAMINE": _p_select,
    "CREATE": _p_create, "DELETE": _p_mailbox, "SUBSCRIBE": _p_mailbox, "UNSUBSCRIBE": _p_mailbox,
    "RENAME": _p_rename, "LIST": _p_list, "LSUB": _p_lsub, "STATUS": _p_status,
    "APPEND": _p_append, "EXPUNGE": _p_expunge, "SEARCH": _p_search, "FETCH": _p_fetch,
    "STORE": _p_store, "COPY": _p_copy, "MOVE": _p_copy, "ENABLE": _p_enable, "ID": _p_id,
}


def parse_command(data: RawCommand | bytes) -> Command:
    """Parse one complete command; raises :class:`ParseError` on malformed input.

    ``data`` is a :class:`RawCommand` from the reader, or the wire bytes of a
    single command (final CRLF optional, literals as ``{n}\\r\\n<data>``).
    """
    raw = data if isinstance(data, RawCommand) else _split_flat(data)
    cur = _Cursor(raw)
    tag_tok = cur.take(_TAG_RE)
    if tag_tok is None:
        raise ParseError("Missing or invalid tag")
    tag = tag_tok.decode("ascii")
    name: str | None = None
    try:
        if cur.peek() != _SP:
            raise ParseError("Missing command" if cur.at_end() else "Invalid tag")
        cur.pos += 1
        name = cur.atom("command name").upper()
        uid = False
        if name == "UID":
            cur.sp("UID command")
            name = cur.atom("UID command").upper()
            if name not in UID_COMMANDS:
                raise ParseError("Invalid UID command")
            uid = True
        parser = _COMMAND_PARSERS.get(name)
        if parser is None:
            raise ParseError("Unknown command")
        args = parser(cur, uid)
        cur.expect_end()
    except ParseError as exc:
        if exc.tag is None:
            exc.tag = tag
        if exc.command is None and name is not None:
            exc.command = name[:32]
        raise
    return Command(tag, name, args, uid)


# --------------------------------------------------------------------------
# Serialisation (server -> client)
# --------------------------------------------------------------------------


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


def flag_list(flags: Iterable[str]) -> bytes:
    """Render ``(\\Seen $Label)``; raises ValueError for invalid flags."""
    items = []
    for flag in flags:
        if not (is_valid_flag(flag) or flag == "\\*"):
            raise ValueError(f"invalid flag {flag!r}")
        items.append(flag.encode("ascii"))
    return b"(" + b" ".join(items) + b")"
