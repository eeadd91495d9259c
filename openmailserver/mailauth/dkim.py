"""DKIM keys (RFC 6376 §3.6.1 key records) and signing (rsa-sha256, relaxed/relaxed).

The signer canonicalises and hashes the message itself and signs with the
`cryptography` package (OpenSSL): dkimpy's RSA is pure Python and takes about
10 ms per 2048-bit signature; OpenSSL takes well under one. dkimpy stays the
verifier (inbound mail, and the tests check it accepts what we sign).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

DEFAULT_SELECTOR = "oms"
KEY_BITS = 2048


def generate_private_key() -> str:
    """A new RSA private key as PKCS#1 PEM text (what dkimpy reads)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_key_record(private_pem: str) -> str:
    """The TXT record value to publish at `<selector>._domainkey.<domain>`."""
    key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


# RFC 6376 §5.4.1: the header fields worth signing, when present.
SIGNED_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references", "reply-to",
    "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
)

# The SMTP client sends every CRLF, bare LF and bare CR as CRLF (RFC 5321 §2.3.8), so
# the receiver verifies that form: canonicalise the same one.
_LINE_ENDING = re.compile(rb"\r\n|\n|\r")
_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_TO_COMPRESS = re.compile(rb"\t[ \t]*| [ \t]+")  # any WSP run but a lone SP
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
FOLD_AT = 72  # columns per line of the signature header (RFC 5322 §2.1.1 recommends 78 at most)


@functools.lru_cache(maxsize=64)
def _private_key(private_pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("the DKIM key is not an RSA key")
    return key


def _wire_lines(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The message as transmitted, split into header fields (name, raw text after the
    colon, continuation lines included) and the body (CRLF line endings)."""
    crlf = message.count(b"\r\n")
    wire = message if message.count(b"\n") == crlf == message.count(b"\r") else _LINE_ENDING.sub(b"\r\n", message)
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    if wire.startswith(b"\r\n"):
        head, body = b"", wire[2:]
    else:
        end = wire.find(b"\r\n\r\n")
        head, body = (wire, b"") if end == -1 else (wire[:end + 2], wire[end + 4:])
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if fields:  # RFC 5322 §2.2.3: a continuation line belongs to the field above
                name, value = fields[-1]
                fields[-1] = (name, value + b"\r\n" + line)
            continue
        match = _FIELD_NAME.match(line)
        if match:  # other lines (an mbox "From " line, garbage) are no field and never signed
            fields.append((match.group(1), line[match.end():]))
    return fields, body


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2: lower-case name, unfolded value, WSP runs as one SP, no WSP
    around the colon or at the end."""
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.lower() + b":" + value


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 on a CRLF body: no WSP at line ends, WSP runs as one SP, no empty
    lines at the end; a non-empty body ends with CRLF, an empty one stays empty."""
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP_TO_COMPRESS.sub(b" ", body)
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def _select(fields: list[tuple[bytes, bytes]], names: list[bytes]) -> list[tuple[bytes, bytes]]:
    """RFC 6376 §5.4.2: each name in h= takes the last not yet used instance of that field."""
    chosen, used = [], set()
    for name in names:
        for index in range(len(fields) - 1, -1, -1):
            if index not in used and fields[index][0].lower() == name:
                used.add(index)
                chosen.append(fields[index])
                break
    return chosen


def _fold(tags: list[bytes], signature: bytes) -> bytes:
    """The signature header, folded at spaces between and inside tags and inside b=
    (RFC 6376 §3.5 allows FWS there) so no line passes FOLD_AT columns."""
    lines, line = [], b"DKIM-Signature:"
    for word in b"; ".join(tags).split(b" "):
        if len(line) + 1 + len(word) > FOLD_AT and line.strip():
            lines.append(line)
            line = b""
        line += b" " + word
    lines.append(line + b";")
    data, width = b"b=" + signature, FOLD_AT - 1
    lines += [b" " + data[i:i + width] for i in range(0, len(data), width)]
    return b"\r\n".join(lines) + b"\r\n"


def sign(message: bytes, domain: str, selector: str, private_pem: str, now: float | None = None) -> bytes:
    """The `DKIM-Signature:` header line(s) for `message` (rsa-sha256, relaxed/relaxed)."""
    fields, body = _wire_lines(message)
    present = {name.lower() for name, _ in fields}
    names = [h.encode("ascii") for h in SIGNED_HEADERS if h.encode("ascii") in present]
    if b"from" not in names:  # RFC 6376 §5.4: From MUST be signed
        raise ValueError("a message without a From: header field cannot be DKIM-signed")
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    d = domain.encode("ascii")
    tags = [b"v=1", b"a=rsa-sha256", b"c=relaxed/relaxed", b"d=" + d, b"i=@" + d, b"q=dns/txt",
            b"s=" + selector.encode("ascii"), b"t=%d" % int(time.time() if now is None else now),
            b"h=" + b" : ".join(names), b"bh=" + body_hash]
    # RFC 6376 §3.7: the selected fields, then this header with an empty b= and no final CRLF.
    hashed = b"".join(_relaxed_header(name, value) + b"\r\n" for name, value in _select(fields, names))
    hashed += _relaxed_header(b"DKIM-Signature", b" " + b"; ".join(tags) + b"; b=")
    signature = _private_key(private_pem).sign(hashed, padding.PKCS1v15(), hashes.SHA256())
    return _fold(tags, base64.b64encode(signature))
