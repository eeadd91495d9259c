"""Parsing commands -- :func:`parse_command` -- and the argument classes of every command.

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
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .dates import parse_imap_datetime
from .errors import BadCharsetError, ParseError
from .fetch import FETCH_MACROS, FetchAttribute, _parse_fetch_att
from .framing import RawCommand, _split_flat
from .names import decode_mutf7
from .search import SearchAnd, _parse_search_key
from .sequence import SequenceSet
from .syntax import _ATOM_RE, _DQUOTE, _LBRACE, _LPAREN, _RPAREN, _SP, _TAG_RE, SUPPORTED_CHARSETS
from .tokens import Value, _Cursor, _utf8

#: Commands that may follow "UID" (RFC 3501 §6.4.8, RFC 4315 §2.1, RFC 6851).
UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE"})
#: STATUS items: RFC 3501 §6.3.10 plus SIZE (RFC 8438), DELETED (RFC 9051),
#: HIGHESTMODSEQ (RFC 7162) and APPENDLIMIT (RFC 7889).  Whether the server
#: supports the extensions is its own business.
STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
     "SIZE", "DELETED", "HIGHESTMODSEQ", "APPENDLIMIT"}
)

_BASE64_RE = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_STORE_ITEM_RE = re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.IGNORECASE)


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
