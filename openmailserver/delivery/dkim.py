"""DKIM keys (RFC 6376 §3.6.1 key records) and signing."""

from __future__ import annotations

import base64

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..mime import parse_headers

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


def sign(message: bytes, domain: str, selector: str, private_pem: str) -> bytes:
    """The `DKIM-Signature:` header line(s) for `message` (rsa-sha256, relaxed/relaxed)."""
    present = {name.lower() for name in parse_headers(message).keys()}
    include = [h.encode("ascii") for h in SIGNED_HEADERS if h in present]
    return dkim.sign(message, selector.encode("ascii"), domain.encode("ascii"), private_pem.encode("ascii"),
                     canonicalize=(b"relaxed", b"relaxed"), include_headers=include)
