"""MIME and RFC 5322 header handling that needs no disk or network.

This first part covers what the index stores for each message: decoded
Subject/From/To, Date, Message-ID and the threading headers.
"""

from __future__ import annotations

import io
import re
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import Any


_MSGID = re.compile(r"<([^<>\s]+)>")
HEADER_SCAN_LIMIT = 256 * 1024


def header_block(raw: bytes) -> bytes:
    """The header section of a message (up to the first blank line)."""
    head = raw[:HEADER_SCAN_LIMIT]
    for sep in (b"\r\n\r\n", b"\n\n"):
        index = head.find(sep)
        if index != -1:
            return head[: index + len(sep)]
    return head


def parse_headers(raw: bytes) -> Message:
    return BytesParser(policy=compat32).parsebytes(header_block(raw), headersonly=True)


def decode_text(value: Any) -> str:
    """An RFC 2047 encoded header value as text; never raises."""
    if value is None:
        return ""
    if isinstance(value, str) and "=?" not in value:  # no encoded words: nothing to decode
        return value.strip()
    try:
        return str(make_header(decode_header(str(value)))).strip()
    except (UnicodeError, ValueError, LookupError, TypeError):
        return str(value).strip()


def header_str(message: Message, name: str, default: str = "") -> str:
    """A header as a plain string; compat32 hands back `Header` objects for 8-bit values."""
    value = message.get(name)
    return default if value is None else str(value)


def message_ids(value: Any) -> list[str]:
    """Message-IDs in a Message-ID/In-Reply-To/References value, without brackets."""
    if not value:
        return []
    return [m.group(1) for m in _MSGID.finditer(str(value))]


def format_addresses(values: list[str]) -> str:
    pairs = getaddresses([decode_text(v) for v in values if v])
    return ", ".join(f"{name} <{addr}>" if name else addr for name, addr in pairs if addr or name)


def index_meta(raw: bytes) -> dict[str, Any]:
    """What the message index stores about a message."""
    return index_meta_of(parse_headers(raw))


def index_meta_of(headers: Message) -> dict[str, Any]:
    """`index_meta` from headers already parsed (`parse_headers`)."""
    ids = message_ids(headers.get("Message-ID"))
    in_reply_to = message_ids(headers.get("In-Reply-To"))
    return {
        "message_id": ids[0] if ids else None,
        "in_reply_to": in_reply_to[0] if in_reply_to else None,
        "references": message_ids(headers.get("References")),
        "subject": decode_text(headers.get("Subject")),
        "from": format_addresses(headers.get_all("From") or []),
        "to": format_addresses((headers.get_all("To") or []) + (headers.get_all("Cc") or [])),
        "date": decode_text(headers.get("Date")) or None,
    }


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = str(part.get_payload()).encode("utf-8", "replace")
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        text = payload.decode("utf-8", "replace")
    return text.replace("\r\n", "\n")  # JSON consumers want plain newlines


def bodies(raw: bytes) -> tuple[str | None, str | None]:
    """The first text/plain and text/html parts that are not attachments; never raises."""
    try:
        message = BytesParser(policy=compat32).parsebytes(raw)
    except Exception:  # noqa: BLE001 - broken MIME degrades to "no body"
        return None, None
    text = html = None
    for part in message.walk():
        if part.is_multipart():
            continue
        disposition = header_str(part, "Content-Disposition").split(";")[0].strip().lower()
        if disposition == "attachment":
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and text is None:
            text = _part_text(part)
        elif ctype == "text/html" and html is None:
            html = _part_text(part)
    return text, html


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except (TypeError, ValueError, AttributeError):  # malformed RFC 2231 parameters
        return None
    return str(name) if name is not None else None


def attachment_list(raw: bytes) -> list[dict[str, Any]]:
    """Metadata of every attachment: filename, contentType, sizeBytes, index (for download)."""
    try:
        message = BytesParser(policy=compat32).parsebytes(raw)
    except Exception:  # noqa: BLE001 - broken MIME has no usable attachments
        return []
    out = []
    for index, part in enumerate(p for p in message.walk() if not p.is_multipart()):
        disposition = header_str(part, "Content-Disposition").split(";")[0].strip().lower()
        filename = _filename(part)
        if disposition != "attachment" and not filename:
            continue
        payload = part.get_payload(decode=True) or b""
        out.append({"index": index, "filename": decode_text(filename) if filename else f"attachment-{index}",
                    "contentType": part.get_content_type(), "sizeBytes": len(payload)})
    return out


def attachment_data(raw: bytes, index: int) -> tuple[dict[str, Any], bytes] | None:
    """The attachment numbered `index` by `attachment_list`, decoded."""
    try:
        message = BytesParser(policy=compat32).parsebytes(raw)
    except Exception:  # noqa: BLE001
        return None
    for n, part in enumerate(p for p in message.walk() if not p.is_multipart()):
        if n == index:
            filename = _filename(part)
            meta = {"index": n, "filename": decode_text(filename) if filename else f"attachment-{n}",
                    "contentType": part.get_content_type()}
            return meta, part.get_payload(decode=True) or b""
    return None


class _TextExtractor(HTMLParser):
    """HTML to readable plain text: blocks become lines, links keep their target, no scripts."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table",
              "ul", "ol", "hr", "section", "article", "header", "footer"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "a" and self._href:
            if self._href.startswith(("http://", "https://", "mailto:")):
                self.parts.append(f" ({self._href})")
            self._href = None

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser is lenient; anything else degrades to tag stripping
        return re.sub(r"<[^>]+>", " ", html)
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


_QUOTE_INTRO = re.compile(r"^(on .{0,200}wrote:|am .{0,200}schrieb .{0,100}:|le .{0,200}a écrit ?:)\s*$", re.I)
_CUT_MARKERS = ("-----original message-----", "---------- forwarded message", "________________________________")


def extract_new_text(text: str) -> str:
    """The part of a reply its author wrote: quoted history and the signature removed."""
    kept: list[str] = []
    lines = text.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(">"):
            break
        if _QUOTE_INTRO.match(stripped) or stripped.lower().startswith(_CUT_MARKERS):
            break
        if line in ("-- ", "--") and index > 0:  # RFC 3676 §4.3 signature separator
            break
        kept.append(line)
    return "\n".join(kept).strip() + ("\n" if any(k.strip() for k in kept) else "")


# Attachment text for agents: what is extracted, and the caps that bound the work.
PARSE_MAX_BYTES = 10 * 1024 * 1024
PARSED_TEXT_MAX_CHARS = 100_000


def attachment_text(content_type: str, filename: str, data: bytes) -> tuple[str | None, str]:
    """(text, extraction method) for text/*, CSV, HTML and PDF; (None, reason) otherwise."""
    name = filename.lower()
    if len(data) > PARSE_MAX_BYTES:
        return None, "skipped_too_large"
    try:
        if content_type == "application/pdf" or name.endswith(".pdf"):
            from pypdf import PdfReader  # imported when first needed: it alone takes 0.15 s

            reader = PdfReader(io.BytesIO(data))
            text = "\n".join((page.extract_text() or "") for page in reader.pages[:200])
            method = "pdf"
        elif content_type == "text/html" or name.endswith((".html", ".htm")):
            text, method = html_to_text(data.decode("utf-8", "replace")), "html"
        elif content_type in ("text/csv", "application/csv") or name.endswith(".csv"):
            text, method = data.decode("utf-8-sig", "replace").replace("\r\n", "\n"), "csv"
        elif content_type.startswith("text/") or content_type in ("application/json", "application/xml"):
            text, method = data.decode("utf-8", "replace").replace("\r\n", "\n"), "text"
        else:
            return None, "unsupported"
    except Exception:  # noqa: BLE001 - a damaged file yields no text, never an error
        return None, "failed"
    return text[:PARSED_TEXT_MAX_CHARS], method


def attachments_with_text(raw: bytes) -> list[dict[str, Any]]:
    """Attachment metadata plus extracted text: index, filename, content_type, size, parsed_text,
    extraction_method."""
    out = []
    for meta in attachment_list(raw):
        found = attachment_data(raw, meta["index"])
        data = found[1] if found else b""
        text, method = attachment_text(meta["contentType"], meta["filename"], data)
        out.append({"index": meta["index"], "filename": meta["filename"], "content_type": meta["contentType"],
                    "size": meta["sizeBytes"], "parsed_text": text, "extraction_method": method})
    return out
