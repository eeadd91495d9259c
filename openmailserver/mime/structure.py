"""IMAP views of a message: ENVELOPE, BODYSTRUCTURE and BODY[section] data.

Pure functions over the raw bytes of a message (no disk, no network). The
parser keeps byte offsets into the original message, so every section an IMAP
client asks for (RFC 3501 §6.4.5) is returned byte for byte as stored:

* `split_header(raw)` finds the header block (up to and including the blank
  line); `header_fields(header)` lists `(name, raw field)` pairs.
* `envelope(header)` builds the RFC 3501 §7.4.2 ENVELOPE structure, with an
  RFC 5322 address parser that understands groups, routes, quoted strings and
  comments (a trailing comment is the display name, as in `u@d (Name)`).
* `parse(raw)` returns the MIME tree (`Entity`); `bodystructure(entity,
  extended)` gives BODY / BODYSTRUCTURE; `section(entity, part, specifier,
  fields)` gives the bytes of `BODY[part.specifier]` or None when the part
  does not exist.
* `search_text(raw)` gives decoded header and body text for SEARCH TEXT/BODY.

The structures are nested tuples of str / int / None, ready for
`imap.protocol.encode_value`. Nothing here raises on broken input: a missing
boundary, an unterminated header, a bad parameter or a nesting bomb degrade to
the most useful reading, as Dovecot does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import quopri
import re
from dataclasses import dataclass, field
from email.header import decode_header
from typing import Any, Optional

# Nesting deeper than this is treated as an opaque leaf (a MIME "bomb").
MAX_DEPTH = 64
# A multipart with more parts than this keeps only the first ones.
MAX_PARTS = 5000

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLDING_BYTES = re.compile(rb"\r?\n(?=[ \t])")

Value = Any  # nested tuples of str / int / None


# --------------------------------------------------------------------------
# Header block and fields
# --------------------------------------------------------------------------


def header_length(raw: bytes | memoryview, start: int = 0, end: int | None = None) -> int:
    """Length of the header block at `start`, including the blank line after it.

    A part whose first line is empty has a header of just that line. Without a
    blank line the whole range is header.
    """
    end = len(raw) if end is None else end
    data = raw if isinstance(raw, bytes) else bytes(raw)
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return 2
    if data.startswith(b"\n", start) and start + 1 <= end:
        return 1
    m = _HEADER_END.search(data, start, end)
    if m is None:
        return end - start
    return m.end() - start


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its blank line, body)."""
    n = header_length(raw)
    return raw[:n], raw[n:]


def header_fields(header: bytes) -> list[tuple[str, bytes]]:
    """`(lower-case name, raw field bytes incl. folding and line end)` in order.

    Lines without a colon (broken headers) are skipped.
    """
    out: list[tuple[str, bytes]] = []
    body = header
    # Drop the terminating blank line.
    if body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    elif body.endswith(b"\n\n"):
        body = body[:-1]
    elif body in (b"\r\n", b"\n"):
        return out
    pos = 0
    n = len(body)
    while pos < n:
        # A field runs to the next line that does not start with SP/HT.
        nl = body.find(b"\n", pos)
        end = n if nl < 0 else nl + 1
        while end < n and body[end] in (0x20, 0x09):
            nl = body.find(b"\n", end)
            end = n if nl < 0 else nl + 1
        line = body[pos:end]
        colon = line.find(b":")
        if colon > 0:
            name = line[:colon].strip(b" \t")
            if name and b"\n" not in name:
                out.append((name.decode("latin-1").lower(), line))
        pos = end
    return out


def field_value(raw_field: bytes) -> str:
    """The unfolded value of one raw field, as text (UTF-8, else Latin-1), trimmed."""
    colon = raw_field.find(b":")
    value = raw_field[colon + 1:]
    value = _FOLDING_BYTES.sub(b"", value)
    return _text(value).strip(" \t\r\n")


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def header_values(header: bytes, name: str) -> list[str]:
    """Unfolded values of every field called `name` (case-insensitive)."""
    name = name.lower()
    return [field_value(f) for n, f in header_fields(header) if n == name]


def first_value(fields: list[tuple[str, bytes]], name: str) -> Optional[str]:
    for n, f in fields:
        if n == name:
            return field_value(f)
    return None


def select_fields(header: bytes, names: tuple[str, ...] | list[str], exclude: bool = False) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT (RFC 3501 §6.4.5): the chosen raw fields + CRLF."""
    wanted = {n.lower() for n in names}
    parts = [f for n, f in header_fields(header) if (n in wanted) != exclude]
    out = b"".join(p if p.endswith(b"\n") else p + b"\r\n" for p in parts)
    return out + b"\r\n"


# Fields added on the way to us, by relays or by us (RFC 5321 §4.4 trace fields, RFC 8601
# Authentication-Results, RFC 8617 ARC sets, RFC 7208 §9.1 Received-SPF, Delivered-To and
# X-Original-To of local delivery): a retransmission by another path carries other values.
TRACE_FIELDS = ("received", "return-path", "delivered-to", "x-original-to", "authentication-results",
                "arc-seal", "arc-message-signature", "arc-authentication-results", "received-spf")


def content_digest(raw: bytes) -> str:
    """SHA-256 of what the sender controls: every header field but the trace fields, in order
    and byte for byte, and the body. Two copies with one digest are the same message."""
    n = header_length(raw)
    digest = hashlib.sha256(select_fields(raw[:n], TRACE_FIELDS, exclude=True))
    digest.update(memoryview(raw)[n:])
    return digest.hexdigest()


def decode_words(value: str) -> str:
    """RFC 2047 encoded words to text; never raises."""
    if "=?" not in value:
        return value
    try:
        chunks = decode_header(value)
    except Exception:  # noqa: BLE001 - a broken encoded word stays as written
        return value
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            out.append(chunk.decode(charset or "ascii", "replace"))
        except LookupError:
            out.append(chunk.decode("utf-8", "replace"))
    return "".join(out)


# --------------------------------------------------------------------------
# RFC 5322 addresses
# --------------------------------------------------------------------------

def _tokens(text: str) -> list[tuple[str, str]]:
    """Split a header value into (kind, text): atom, quoted, comment, literal, or a special char."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == '"':
            i += 1
            buf = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            i += 1
            out.append(("quoted", "".join(buf)))
        elif c == "(":
            depth, i, buf = 1, i + 1, []
            while i < n and depth:
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if not depth:
                        break
                buf.append(ch)
                i += 1
            i += 1
            out.append(("comment", "".join(buf).strip()))
        elif c == "[":
            end = text.find("]", i)
            end = n if end < 0 else end + 1
            out.append(("literal", text[i:end]))
            i = end
        elif c in "<>@,;:":
            out.append((c, c))
            i += 1
        else:
            start = i
            while i < n and text[i] not in " \t\r\n\"(<>@,;:[":
                i += 1
            if i == start:  # a stray special such as ")" or "]"
                i += 1
            out.append(("atom", text[start:i]))
    return out


Address = tuple[Optional[str], Optional[str], Optional[str], Optional[str]]
MISSING_DOMAIN = "MISSING_DOMAIN"


def _addr_spec(tokens: list[tuple[str, str]]) -> tuple[Optional[str], Optional[str]]:
    """(local part, domain) from the tokens of an addr-spec."""
    local: list[str] = []
    domain: list[str] = []
    target = local
    seen_at = False
    for kind, text in tokens:
        if kind == "comment":
            continue
        if kind == "@" and not seen_at:
            seen_at = True
            target = domain
            continue
        if kind in ("atom", "quoted", "literal", "@"):
            target.append(text)
    mailbox = "".join(local) or None
    host = "".join(domain) if seen_at else None
    return mailbox, host


def _mailbox(tokens: list[tuple[str, str]]) -> Optional[Address]:
    """One mailbox (name-addr or addr-spec) from its tokens; None when empty."""
    if not tokens:
        return None
    if any(k == "<" for k, _ in tokens):
        lt = next(i for i, (k, _) in enumerate(tokens) if k == "<")
        gt = next((i for i, (k, _) in enumerate(tokens) if k == ">" and i > lt), len(tokens))
        phrase = [t for k, t in tokens[:lt] if k in ("atom", "quoted")]
        inner = tokens[lt + 1:gt]
        route = None
        colon = next((i for i, (k, _) in enumerate(inner) if k == ":"), None)
        if colon is not None:
            route = "".join(t for k, t in inner[:colon] if k != "comment") or None
            inner = inner[colon + 1:]
        mailbox, host = _addr_spec(inner)
        name = " ".join(phrase) if phrase else None
        if name is None:
            comments = [t for k, t in tokens if k == "comment" and t]
            name = comments[-1] if comments else None
        if mailbox is None and host is None and route is None:
            return None if name is None else (name, None, "", MISSING_DOMAIN)
        return (name, route, mailbox or "", host if host is not None else MISSING_DOMAIN)
    words = [(k, t) for k, t in tokens if k != "comment"]
    if not words:
        return None
    mailbox, host = _addr_spec(words)
    comments = [t for k, t in tokens if k == "comment" and t]
    name = comments[-1] if comments else None
    if mailbox is None and host is None:
        return None
    return (name, None, mailbox or "", host if host else MISSING_DOMAIN)


def parse_addresses(value: str) -> list[Address]:
    """An address list as ENVELOPE address structures, groups included (RFC 3501 §7.4.2).

    A group is `(NIL NIL name NIL)` ... `(NIL NIL NIL NIL)`.
    """
    tokens = _tokens(value)
    out: list[Address] = []
    current: list[tuple[str, str]] = []
    in_group = False
    in_angle = False
    for tok in tokens:
        kind = tok[0]
        if kind == "<":
            in_angle = True
        elif kind == ">":
            in_angle = False
        if in_angle:
            current.append(tok)
            continue
        if kind == ":" and not in_group:
            name = " ".join(t for k, t in current if k in ("atom", "quoted")) or ""
            out.append((None, None, name, None))
            in_group = True
            current = []
        elif kind == ",":
            m = _mailbox(current)
            if m:
                out.append(m)
            current = []
        elif kind == ";" and in_group:
            m = _mailbox(current)
            if m:
                out.append(m)
            out.append((None, None, None, None))
            in_group = False
            current = []
        else:
            current.append(tok)
    m = _mailbox(current)
    if m:
        out.append(m)
    if in_group:
        out.append((None, None, None, None))
    return out


# --------------------------------------------------------------------------
# ENVELOPE
# --------------------------------------------------------------------------


def _nstring(value: Optional[str]) -> Optional[str]:
    return value if value else None


def envelope(header: bytes) -> Value:
    """The ENVELOPE structure of a message header (RFC 3501 §7.4.2)."""
    fields = header_fields(header)

    def addrs(name: str) -> Optional[tuple]:
        values = [field_value(f) for n, f in fields if n == name]
        found: list[Address] = []
        for v in values:
            found.extend(parse_addresses(v))
        return tuple(found) if found else None

    from_ = addrs("from")
    sender = addrs("sender") or from_
    reply_to = addrs("reply-to") or from_
    return (
        _nstring(first_value(fields, "date")),
        _nstring(first_value(fields, "subject")),
        from_,
        sender,
        reply_to,
        addrs("to"),
        addrs("cc"),
        addrs("bcc"),
        _nstring(first_value(fields, "in-reply-to")),
        _nstring(first_value(fields, "message-id")),
    )


# --------------------------------------------------------------------------
# Content-Type and friends
# --------------------------------------------------------------------------

_RFC2231 = re.compile(r"^(.*?)(?:\*(\d+))?(\*)?$")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")


def _parse_params(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`; name=value` pairs after the main value; RFC 2231 continuations are joined."""
    params: list[tuple[str, str]] = []
    i, n = 0, len(tokens)
    while i < n:
        if tokens[i][0] != ";":
            i += 1
            continue
        i += 1
        if i >= n or tokens[i][0] not in ("atom", "quoted"):
            continue
        name_tok = tokens[i][1]
        i += 1
        name, eq, value = name_tok.partition("=")
        if not eq:
            # name = value split around "=" by whitespace, or value quoted after "name="
            if i < n and tokens[i][0] == "atom" and tokens[i][1].startswith("="):
                value = tokens[i][1][1:]
                i += 1
                eq = "="
            else:
                continue
        if not value and i < n and tokens[i][0] == "quoted":
            value = tokens[i][1]
            i += 1
        params.append((name.strip(), value))
    return _join_rfc2231(params)


def _join_rfc2231(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    plain: list[tuple[str, str]] = []
    pieces: dict[str, list[tuple[int, bool, str]]] = {}
    order: list[str] = []
    for name, value in params:
        m = _RFC2231.match(name)
        if m and (m.group(2) is not None or m.group(3)) and m.group(1):
            base = m.group(1).lower()
            index = int(m.group(2)) if m.group(2) is not None else 0
            encoded = bool(m.group(3))
            if base not in pieces:
                pieces[base] = []
                order.append(base)
                plain.append((m.group(1), "\0" + base))
            pieces[base].append((index, encoded, value))
        else:
            plain.append((name, value))
    if not pieces:
        return plain
    joined: dict[str, str] = {}
    for base in order:
        parts = sorted(pieces[base], key=lambda p: p[0])
        charset = None
        text = []
        for n, (index, encoded, value) in enumerate(parts):
            if encoded:
                if n == 0 and value.count("'") >= 2:
                    charset, _, value = value.split("'", 2)
                raw = _percent_decode(value)
                try:
                    text.append(raw.decode(charset or "utf-8", "replace"))
                except LookupError:
                    text.append(raw.decode("utf-8", "replace"))
            else:
                text.append(value)
        joined[base] = "".join(text)
    return [(n, joined[v[1:]] if v.startswith("\0") else v) for n, v in plain]


def _percent_decode(value: str) -> bytes:
    out = bytearray()
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "%" and _HEX2.fullmatch(value[i + 1:i + 3]):
            out.append(int(value[i + 1:i + 3], 16))
            i += 3
        else:
            out += c.encode("utf-8")
            i += 1
    return bytes(out)


def parse_content_type(value: Optional[str]) -> tuple[str, str, list[tuple[str, str]]]:
    """(type, subtype, params) lower-cased type/subtype; ("", "", []) when absent or broken."""
    if not value:
        return "", "", []
    tokens = _tokens(value.replace("/", " / ", 1))
    main = [t for k, t in tokens[:3] if k == "atom"]
    params = _parse_params(tokens)
    if len(main) >= 3 and main[1] == "/" and main[0] and main[2]:
        return main[0].lower(), main[2].lower(), params
    # Accept "type/subtype" glued to a following ';'-less token too.
    return "", "", params


def parse_disposition(value: Optional[str]) -> Optional[tuple[str, list[tuple[str, str]]]]:
    if not value:
        return None
    tokens = _tokens(value)
    if not tokens or tokens[0][0] not in ("atom", "quoted"):
        return None
    return tokens[0][1], _parse_params(tokens)


# --------------------------------------------------------------------------
# The MIME tree
# --------------------------------------------------------------------------


@dataclass
class Entity:
    """One MIME entity; `raw[start:body_start]` is its header, `raw[body_start:end]` its body."""

    raw: bytes = field(repr=False)
    start: int
    body_start: int
    end: int
    type: str
    subtype: str
    params: list[tuple[str, str]]
    fields: list[tuple[str, bytes]] = field(repr=False)
    children: list["Entity"] = field(default_factory=list)
    message: Optional["Entity"] = None  # the encapsulated message of message/rfc822

    @property
    def header(self) -> bytes:
        return self.raw[self.start:self.body_start]

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start:self.end]

    @property
    def whole(self) -> bytes:
        return self.raw[self.start:self.end]

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart" and bool(self.children)

    @property
    def is_message(self) -> bool:
        return self.message is not None

    def param(self, name: str) -> Optional[str]:
        name = name.lower()
        for n, v in self.params:
            if n.lower() == name:
                return v
        return None


def parse(raw: bytes) -> Entity:
    """The MIME tree of a whole message."""
    return _parse_entity(raw, 0, len(raw), ("text", "plain"), 0)


def _parse_entity(raw: bytes, start: int, end: int, default: tuple[str, str], depth: int) -> Entity:
    hlen = header_length(raw, start, end)
    body_start = start + hlen
    fields = header_fields(raw[start:body_start])
    ctype, subtype, params = parse_content_type(first_value(fields, "content-type"))
    if not ctype:
        ctype, subtype = default
        if not params and default == ("text", "plain"):
            params = [("charset", "us-ascii")]
    entity = Entity(raw, start, body_start, end, ctype, subtype, params, fields)
    if depth >= MAX_DEPTH:
        return entity
    if ctype == "multipart":
        boundary = entity.param("boundary")
        if boundary:
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            for pstart, pend in _split_multipart(raw, body_start, end, boundary.encode("utf-8", "replace")):
                entity.children.append(_parse_entity(raw, pstart, pend, child_default, depth + 1))
                if len(entity.children) >= MAX_PARTS:
                    break
    elif ctype == "message" and subtype in ("rfc822", "global"):
        entity.message = _parse_entity(raw, body_start, end, ("text", "plain"), depth + 1)
    return entity


def _split_multipart(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the body parts between delimiter lines (RFC 2046 §5.1.1).

    The CRLF before a delimiter belongs to the delimiter. Trailing white space
    after a delimiter is allowed. A missing close delimiter ends the last part
    at the end of the body.
    """
    marker = b"--" + boundary
    parts: list[tuple[int, int]] = []
    part_start: Optional[int] = None
    pos = start
    mlen = len(marker)
    while pos < end:
        idx = raw.find(marker, pos, end)
        if idx < 0:
            break
        # Must start a line.
        if idx != start and raw[idx - 1] != 0x0A:
            pos = idx + mlen
            continue
        after = idx + mlen
        closing = raw.startswith(b"--", after) and after + 2 <= end
        tail = after + 2 if closing else after
        # Only transport padding may follow on the line.
        line_end = raw.find(b"\n", tail, end)
        line_end = end if line_end < 0 else line_end + 1
        rest = raw[tail:line_end].strip(b" \t\r\n")
        if rest:
            pos = after
            continue
        if part_start is not None:
            # The line break before the delimiter belongs to it.
            pend = idx
            if pend > part_start and raw[pend - 1] == 0x0A:
                pend -= 1
                if pend > part_start and raw[pend - 1] == 0x0D:
                    pend -= 1
            parts.append((part_start, pend))
        if closing:
            return parts
        part_start = line_end
        pos = line_end
        if len(parts) >= MAX_PARTS:
            return parts
    if part_start is not None and part_start <= end:
        parts.append((part_start, end))
    return parts


# --------------------------------------------------------------------------
# BODY / BODYSTRUCTURE
# --------------------------------------------------------------------------


def _params_value(params: list[tuple[str, str]]) -> Optional[tuple]:
    if not params:
        return None
    out: list[str] = []
    for name, value in params:
        out.extend((name.upper(), value))
    return tuple(out)


def _line_count(data: bytes) -> int:
    if not data:
        return 0
    count = data.count(b"\n")
    if not data.endswith(b"\n"):
        count += 1
    return count


def _language(value: Optional[str]) -> Optional[Any]:
    if not value:
        return None
    langs = [v.strip() for v in value.split(",") if v.strip()]
    if not langs:
        return None
    return langs[0] if len(langs) == 1 else tuple(langs)


def _disposition(entity: Entity) -> Optional[tuple]:
    parsed = parse_disposition(first_value(entity.fields, "content-disposition"))
    if parsed is None:
        return None
    kind, params = parsed
    return (kind.upper(), _params_value(params))


def bodystructure(entity: Entity, extended: bool = True) -> Value:
    """BODYSTRUCTURE (extended=True) or BODY (extended=False), RFC 3501 §7.4.2."""
    if entity.is_multipart:
        parts = [bodystructure(child, extended) for child in entity.children]
        out: list[Any] = [*parts, entity.subtype.upper()]
        if extended:
            out += [
                _params_value(entity.params),
                _disposition(entity),
                _language(first_value(entity.fields, "content-language")),
                _nstring(first_value(entity.fields, "content-location")),
            ]
        return _Multi(out)
    ctype, subtype = entity.type, entity.subtype
    if ctype == "multipart":  # no parts found: present it as an empty text part
        ctype, subtype = "text", "plain"
    body = entity.body
    encoding = (first_value(entity.fields, "content-transfer-encoding") or "7BIT").strip().upper() or "7BIT"
    out = [
        ctype.upper(),
        subtype.upper(),
        _params_value(entity.params),
        _nstring(first_value(entity.fields, "content-id")),
        _nstring(first_value(entity.fields, "content-description")),
        encoding,
        len(body),
    ]
    if entity.message is not None:
        inner = entity.message
        out += [envelope(inner.header), bodystructure(inner, extended), _line_count(body)]
    elif ctype == "text":
        out.append(_line_count(body))
    if extended:
        out += [
            _nstring(first_value(entity.fields, "content-md5")),
            _disposition(entity),
            _language(first_value(entity.fields, "content-language")),
            _nstring(first_value(entity.fields, "content-location")),
        ]
    return tuple(out)


class _Multi(tuple):
    """A multipart body: its child bodies are written without separating spaces."""

    __slots__ = ()

    def __new__(cls, items: list[Any]) -> "_Multi":
        return super().__new__(cls, items)


_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
QUOTED_MAX = 1024


def _quote(text: str) -> bytes:
    """An IMAP string: quoted when 7-bit and short (RFC 3501 §4.3), else a literal."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= QUOTED_MAX and _QUOTABLE.fullmatch(data):
        if b"\\" in data or b'"' in data:
            data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + data + b'"'
    return b"{%d}\r\n" % len(data) + data


def encode(value: Value) -> bytes:
    """Serialise ENVELOPE/BODYSTRUCTURE values (strings quoted or as literals)."""
    if value.__class__ is str:
        return _quote(value)
    if value is None:
        return b"NIL"
    if isinstance(value, _Multi):
        # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        nbodies = 0
        while nbodies < len(value) and isinstance(value[nbodies], tuple):
            nbodies += 1
        head = b"".join(encode(v) for v in value[:nbodies])
        tail = b" ".join(encode(v) for v in value[nbodies:])
        return b"(" + head + b" " + tail + b")"
    if isinstance(value, (tuple, list)):
        return b"(" + b" ".join([encode(v) for v in value]) + b")"
    if isinstance(value, bool):
        raise TypeError("bool")
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, str):
        return _quote(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def envelope_bytes(header: bytes) -> bytes:
    return encode(envelope(header))


def bodystructure_bytes(raw: bytes, extended: bool = True) -> bytes:
    return encode(bodystructure(parse(raw), extended))


# --------------------------------------------------------------------------
# BODY[section]
# --------------------------------------------------------------------------


def find_part(root: Entity, part: tuple[int, ...]) -> Optional[Entity]:
    """The entity named by a part number path (RFC 3501 §6.4.5), or None."""
    node = root
    as_message = True  # the root is a message; stepping into it picks its body part
    for number in part:
        if number < 1:
            return None
        if not as_message and node.message is not None:
            node, as_message = node.message, True  # into an encapsulated message
        if node.is_multipart:
            if number > len(node.children):
                return None
            node = node.children[number - 1]
        elif not (as_message and number == 1):
            return None  # only a message has a part 1 that is its own body
        as_message = False
    return node


def section(root: Entity, part: tuple[int, ...], specifier: Optional[str],
            fields: tuple[str, ...] = ()) -> Optional[bytes]:
    """The bytes of BODY[part.specifier]; None when the part does not exist."""
    if not part:
        target: Optional[Entity] = root
        message: Optional[Entity] = root
    else:
        target = find_part(root, part)
        if target is None:
            return None
        message = target.message if target.message is not None else target
    if specifier is None:
        return target.whole if not part else target.body
    if specifier == "MIME":
        return target.header if part else None
    assert message is not None
    if specifier == "HEADER":
        return message.header
    if specifier == "TEXT":
        return message.body
    if specifier in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return select_fields(message.header, fields, exclude=specifier == "HEADER.FIELDS.NOT")
    return None


# --------------------------------------------------------------------------
# Text for SEARCH
# --------------------------------------------------------------------------


def decode_body(entity: Entity) -> bytes:
    """The body of a leaf entity with its Content-Transfer-Encoding undone."""
    encoding = (first_value(entity.fields, "content-transfer-encoding") or "").strip().lower()
    body = entity.body
    try:
        if encoding == "base64":
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/]", b"", body) + b"===")
        if encoding == "quoted-printable":
            return quopri.decodestring(body)
    except (binascii.Error, ValueError):
        return body
    return body


def _charset_text(data: bytes, charset: Optional[str]) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def search_text(raw: bytes) -> tuple[str, str]:
    """(decoded header text, decoded body text) for SEARCH TEXT/BODY.

    Header text covers every field of every message header in the tree
    (RFC 2047 decoded); body text covers text/* leaves (transfer encoding and
    charset undone) and the raw body of other non-binary leaves.
    """
    root = parse(raw)
    headers: list[str] = []
    bodies: list[str] = []

    def walk(entity: Entity, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        if entity.is_multipart:
            for child in entity.children:
                walk(child, depth + 1)
            return
        if entity.message is not None:
            msg = entity.message
            headers.extend(decode_words(field_value(f)) for _, f in msg.fields)
            walk(msg, depth + 1)
            return
        if entity.type in ("text", "message") or not entity.type:
            bodies.append(_charset_text(decode_body(entity), entity.param("charset")))

    headers.extend(f"{n}: {decode_words(field_value(f))}" for n, f in root.fields)
    walk(root, 0)
    return "\n".join(headers), "\n".join(bodies)
