"""Mailbox names on the wire: modified UTF-7 (RFC 3501 §5.1.3) and INBOX (RFC 3501 §5.1)."""

from __future__ import annotations

import base64
import binascii
import re

from .errors import InvalidMailboxName

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
