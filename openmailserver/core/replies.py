"""Reply, reply-all and forward: who receives it, its subject, threading headers and quote.

RFC 5322 §3.6.4: a reply's In-Reply-To is the parent's Message-ID and its
References are the parent's References (or In-Reply-To) plus that Message-ID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses
from typing import Any

from .. import mime
from ..errors import ErrorCode, MailError

_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|antw)(\[\d+\])?\s*:\s*)+", re.I)
_FORWARD_PREFIX = re.compile(r"^\s*((fwd?|wg|tr)\s*:\s*)+", re.I)


@dataclass
class Draft:
    to: list[str]
    cc: list[str]
    subject: str
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    quote: str = ""


def reply_subject(subject: str) -> str:
    """`Re: <original>` without stacking prefixes (Re: Re: AW: …)."""
    return "Re: " + _REPLY_PREFIX.sub("", subject or "").strip()


def forward_subject(subject: str) -> str:
    return "Fwd: " + _FORWARD_PREFIX.sub("", subject or "").strip()


def _addresses(headers: Message, *names: str) -> list[str]:
    values: list[str] = []
    for name in names:
        values += headers.get_all(name) or []
    return [addr.strip() for _, addr in getaddresses(values) if "@" in addr]


def _unique(addresses: list[str], exclude: set[str]) -> list[str]:
    seen, out = set(exclude), []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)
    return out


def loop_guard(headers: Message, envelope_from: str | None) -> None:
    """Never answer automatic mail or bounces (RFC 3834 §2, RFC 5321 §4.5.5)."""
    auto = mime.header_str(headers, "Auto-Submitted", "no").strip().lower()
    if auto != "no":
        raise MailError(ErrorCode.LOOP_GUARD, f"the message is automatic (Auto-Submitted: {auto}); it is not answered", fix="send a new message instead if a person must be told")
    if envelope_from == "" or "multipart/report" in mime.header_str(headers, "Content-Type").lower():
        raise MailError(ErrorCode.LOOP_GUARD, "the message is a delivery report; it is not answered")


def reply(raw: bytes, own: set[str], reply_all: bool, envelope_from: str | None) -> Draft:
    headers = mime.parse_headers(raw)
    loop_guard(headers, envelope_from)
    own_lower = {a.lower() for a in own}
    sender = _addresses(headers, "Reply-To") or _addresses(headers, "From")
    if all(a.lower() in own_lower for a in sender):  # answering our own sent message: to its recipients
        sender = _addresses(headers, "To")
    to = _unique(sender, own_lower)
    cc: list[str] = []
    if reply_all:
        to = _unique(to + _addresses(headers, "To"), own_lower)
        cc = _unique(_addresses(headers, "Cc"), own_lower | {a.lower() for a in to})
    if not to and not cc:
        raise MailError(ErrorCode.NO_RECIPIENTS, "nobody is left to reply to")
    parent = mime.message_ids(headers.get("Message-ID"))
    references = mime.message_ids(headers.get("References")) or mime.message_ids(headers.get("In-Reply-To"))
    return Draft(to=to, cc=cc, subject=reply_subject(mime.decode_text(headers.get("Subject"))),
                 in_reply_to=parent[0] if parent else None,
                 references=references + parent[:1])


def quoted(raw: bytes) -> str:
    """`On <date>, <from> wrote:` and the original text, each line behind `> `."""
    headers = mime.parse_headers(raw)
    text, html = mime.bodies(raw)
    if text is None and html is not None:
        text = mime.html_to_text(html)
    lines = (text or "").rstrip("\n").split("\n")
    who = mime.decode_text(headers.get("From")) or "someone"
    when = mime.decode_text(headers.get("Date"))
    intro = f"On {when}, {who} wrote:" if when else f"{who} wrote:"
    return "\n\n" + intro + "\n" + "\n".join(f"> {line}" if line else ">" for line in lines) + "\n"


def forwarded(raw: bytes) -> str:
    headers = mime.parse_headers(raw)
    text, html = mime.bodies(raw)
    if text is None and html is not None:
        text = mime.html_to_text(html)
    block = ["", "", "---------- Forwarded message ----------"]
    for name in ("From", "Date", "Subject", "To", "Cc"):
        value = mime.decode_text(headers.get(name))
        if value:
            block.append(f"{name}: {value}")
    return "\n".join(block) + "\n\n" + (text or "")


def original_attachments(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for meta in mime.attachment_list(raw):
        found = mime.attachment_data(raw, meta["index"])
        if found:
            info, data = found
            out.append({"filename": info["filename"], "content_type": info["contentType"], "content": data})
    return out
