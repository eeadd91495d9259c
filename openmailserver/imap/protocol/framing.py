"""Command framing: client bytes to complete commands, literals included (RFC 3501 §2.2, RFC 7888).

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
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from .errors import ParseError
from .syntax import _ATOM_RE, _LPAREN, _MAX_DIGITS, _SP, _TAG_RE

DEFAULT_MAX_LINE_LENGTH = 64 * 1024
DEFAULT_MAX_LITERAL_SIZE = 64 * 1024 * 1024
#: Continuation request the server sends after accepting a synchronising literal.
CONTINUATION = b"+ Ready for literal data\r\n"

_QUOTE_SCAN_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_LITERAL_MARKER_RE = re.compile(rb"\{([0-9]+)(\+?)\}\Z")


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
