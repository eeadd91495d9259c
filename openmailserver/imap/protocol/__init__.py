"""Pure IMAP4rev1 protocol layer: command framing, parsing and serialisation.

This package does no I/O (no sockets, no asyncio) and no MIME parsing, and it
imports nothing from the rest of openmailserver; it only turns client bytes
into typed command objects and Python values into IMAP wire syntax.  It
follows RFC 3501 (IMAP4rev1) plus the command syntax of LITERAL+ (RFC 7888),
UIDPLUS (RFC 4315), MOVE (RFC 6851), IDLE (RFC 2177), ENABLE (RFC 5161), ID
(RFC 2971), NAMESPACE (RFC 2342), UNSELECT (RFC 3691), SASL-IR (RFC 4959)
and SPECIAL-USE (RFC 6154, incl. the LIST-EXTENDED syntax of RFC 5258 it
relies on).

Its modules, in the order a command meets them:

* `framing`: :class:`CommandReader` cuts client bytes into complete commands
  (lines and literals) and says when a literal needs an answer first;
* `tokens`: the tokeniser (atoms, strings, literals, lists) and generic values;
* `commands`: :func:`parse_command` and the argument class of each command,
  with the parsers of the pieces in `fetch` (FETCH attributes), `search`
  (SEARCH keys), `sequence` (sequence sets), `names` (modified UTF-7 mailbox
  names), `dates` and `flags`;
* `serialise`: Python values to wire syntax (:func:`quote`, :func:`astring`,
  :func:`literal`, :func:`encode_value`, :func:`encode_mailbox`, ...);
* `errors`: :class:`ParseError` and its refinements; `syntax`: the character
  classes and limits several of them share.

Everything public is re-exported here, so users write
``from openmailserver.imap import protocol as p`` and ``p.SequenceSet``.
"""

from __future__ import annotations

from .commands import (
    STATUS_ITEMS,
    UID_COMMANDS,
    AppendArgs,
    AuthenticateArgs,
    Command,
    CommandArgs,
    CopyArgs,
    CreateArgs,
    EnableArgs,
    ExpungeArgs,
    FetchArgs,
    IdArgs,
    ListArgs,
    LoginArgs,
    MailboxArgs,
    RenameArgs,
    SearchArgs,
    SelectArgs,
    StatusArgs,
    StoreArgs,
    parse_command,
)
from .dates import imap_date, parse_imap_date, parse_imap_datetime
from .errors import BadCharsetError, InvalidMailboxName, ParseError
from .fetch import FETCH_MACROS, FetchAttribute, Section
from .flags import SYSTEM_FLAGS, is_valid_flag, is_valid_keyword, normalize_flag
from .framing import (
    CONTINUATION,
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_LITERAL_SIZE,
    CommandReader,
    ContinuationLine,
    FramingError,
    IdleDone,
    LiteralAnnounced,
    RawCommand,
    ReaderEvent,
)
from .names import decode_mailbox, decode_mutf7, encode_mutf7, normalize_mailbox
from .search import (
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchNot,
    SearchOr,
    SearchSequence,
    SearchSize,
    SearchText,
)
from .sequence import SequenceSet, format_sequence_set
from .serialise import (
    QUOTED_MAX,
    LiteralData,
    astring,
    encode_mailbox,
    encode_value,
    flag_list,
    literal,
    nstring,
    quote,
)
from .syntax import MAX_NUMBER, SUPPORTED_CHARSETS
from .tokens import Atom, Value, parse_values

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
