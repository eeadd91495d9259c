"""DKIM signing (our own relaxed/relaxed canonicalisation and OpenSSL RSA) checked by
dkimpy's verifier, over the message as the SMTP client transmits it."""

from __future__ import annotations

import re

import dkim as dkimpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmailserver.mailauth import dkim

DOMAIN, SELECTOR = "signer.test", "oms"


@pytest.fixture(scope="module")
def key() -> tuple[str, bytes]:
    pem = dkim.generate_private_key()
    return pem, dkim.public_key_record(pem).encode("ascii")


def dns_for(record: bytes):
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None
    return dnsfunc


def on_the_wire(message: bytes) -> bytes:
    """What the receiver gets: every line ending CRLF, a final CRLF (RFC 5321 §2.3.8, §4.1.1.4)."""
    wire = re.sub(rb"\r\n|\n|\r", b"\r\n", message)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


def verifies(message: bytes, key: tuple[str, bytes]) -> bool:
    signature = dkim.sign(message, DOMAIN, SELECTOR, key[0])
    return dkimpy.verify(on_the_wire(signature + message), dnsfunc=dns_for(key[1]))


def test_signature_verifies_and_has_the_expected_tags(key):
    message = (b"From: Alice <alice@signer.test>\r\nTo: bob@example.test\r\nSubject: hello\r\n"
               b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@signer.test>\r\n"
               b"X-Not-Signed: yes\r\n\r\nhi\r\n")
    signature = dkim.sign(message, DOMAIN, SELECTOR, key[0])
    assert signature.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=signer.test;")
    assert signature.endswith(b"\r\n") and all(len(line) <= dkim.FOLD_AT for line in signature.split(b"\r\n"))
    tags = dict(t.split(b"=", 1) for t in re.sub(rb"\s+", b"", signature.split(b":", 1)[1]).split(b";"))
    assert tags[b"h"] == b"from:to:subject:date:message-id" and tags[b"s"] == b"oms" and tags[b"i"] == b"@signer.test"
    assert dkimpy.verify(signature + message, dnsfunc=dns_for(key[1]))


def test_same_bytes_as_dkimpy(key, monkeypatch):
    """With the same time stamp and header list, the header is dkimpy's but for where lines
    are folded (PKCS#1 v1.5 signatures are deterministic, so b= is the same too)."""
    message = (b"From: a@signer.test\r\nTo:  b@example.test ,\r\n\tc@example.test  \r\nSubject: x  y\r\n"
               b"MIME-Version: 1.0\r\n\r\nline one  \r\n\r\n  two\t\tthree\r\n\r\n\r\n")
    monkeypatch.setattr(dkimpy.time, "time", lambda: 1_700_000_000)
    theirs = dkimpy.sign(message, SELECTOR.encode(), DOMAIN.encode(), key[0].encode(),
                         canonicalize=(b"relaxed", b"relaxed"),
                         include_headers=[b"from", b"to", b"subject", b"mime-version"])
    ours = dkim.sign(message, DOMAIN, SELECTOR, key[0], now=1_700_000_000)
    assert re.sub(rb"\s+", b"", ours) == re.sub(rb"\s+", b"", theirs)


def test_altered_messages_fail(key):
    message = b"From: a@signer.test\r\nSubject: pay 10\r\n\r\nsend 10 coins\r\n"
    signed = dkim.sign(message, DOMAIN, SELECTOR, key[0]) + message
    dnsfunc = dns_for(key[1])
    assert dkimpy.verify(signed, dnsfunc=dnsfunc)
    assert not dkimpy.verify(signed.replace(b"send 10", b"send 99"), dnsfunc=dnsfunc)
    assert not dkimpy.verify(signed.replace(b"pay 10", b"pay 99"), dnsfunc=dnsfunc)
    # Whitespace changes are what relaxed canonicalisation tolerates.
    assert dkimpy.verify(signed.replace(b"Subject: pay 10", b"Subject:   pay \t 10  "), dnsfunc=dnsfunc)
    assert dkimpy.verify(signed.replace(b"coins\r\n", b"coins  \r\n\r\n\r\n"), dnsfunc=dnsfunc)


def test_bottom_instance_of_a_repeated_field_is_signed(key):
    """RFC 6376 §5.4.2: h= names a field once, which covers its last instance."""
    message = b"Subject: first\r\nFrom: a@signer.test\r\nSubject: last\r\n\r\nbody\r\n"
    signed = dkim.sign(message, DOMAIN, SELECTOR, key[0]) + message
    dnsfunc = dns_for(key[1])
    assert dkimpy.verify(signed, dnsfunc=dnsfunc)
    assert dkimpy.verify(signed.replace(b"Subject: first", b"Subject: changed"), dnsfunc=dnsfunc)
    assert not dkimpy.verify(signed.replace(b"Subject: last", b"Subject: changed"), dnsfunc=dnsfunc)


@pytest.mark.parametrize("message", [
    b"From: a@signer.test\r\n\r\n",                      # empty body
    b"From: a@signer.test\r\n",                          # no body at all
    b"From: a@signer.test\r\n\r\n\r\n\r\n",              # only empty lines
    b"From: a@signer.test\r\n\r\n \t \r\n",              # only whitespace
    b"From: a@signer.test\nSubject: lf only\n\nbody\n\n",  # LF line endings
    b"From: a@signer.test\r\n\r\nno final newline   ",   # the client adds CRLF
    b"From: a@signer.test\r\nSubject: bare cr in the body\r\n\r\nx\ry\r\n",
    b"From: a@signer.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n\xc3\xa9t\xc3\xa9\r\n",
    b"From:a@signer.test\r\nSubject:   spaced\r\nTo:\r\n x@example.test\r\n\r\nbody\r\n",
])
def test_edge_cases_verify(key, message):
    assert verifies(message, key)


def test_space_before_the_colon_is_not_hashed(key):
    """RFC 6376 §3.4.2 deletes WSP before the colon (RFC 5322 §4.5.3's obsolete syntax; dkimpy's
    verifier cannot parse it, so compare the signatures)."""
    plain = b"From: a@signer.test\r\nSubject: x\r\n\r\nbody\r\n"
    spaced = b"From \t: a@signer.test\r\nSubject : x\r\n\r\nbody\r\n"
    assert dkim.sign(spaced, DOMAIN, SELECTOR, key[0], now=1) == dkim.sign(plain, DOMAIN, SELECTOR, key[0], now=1)


def test_message_without_from_is_refused(key):
    with pytest.raises(ValueError):
        dkim.sign(b"Subject: no sender\r\n\r\nx\r\n", DOMAIN, SELECTOR, key[0])


# Any field but a second From (RFC 5322 §3.6 allows one; dkimpy fails such messages on purpose).
_NAMES = st.sampled_from(["To", "Cc", "Subject", "Date", "Message-ID", "References", "Reply-To", "MIME-Version",
                          "Content-Type", "X-Mailer", "Received", "subject", "TO", "In-Reply-To"])
_WSP = st.text(alphabet=" \t", max_size=3)
_WORD = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=12)


@st.composite
def _field(draw) -> bytes:
    words = draw(st.lists(_WORD, min_size=0, max_size=6))
    value = b""
    for word in words:
        fold = draw(st.booleans())
        value += (b"\r\n" + (draw(_WSP) or " ").encode() if fold and value else draw(_WSP).encode() or b" ")
        value += word.encode()
    return draw(_NAMES).encode() + b":" + value + draw(_WSP).encode()


@st.composite
def _message(draw) -> bytes:
    fields = [b"From: someone@signer.test"] + draw(st.lists(_field(), max_size=10))
    order = draw(st.permutations(fields))
    body_lines = draw(st.lists(st.text(alphabet=st.sampled_from("ab .:\t xyz"), max_size=30), max_size=8))
    body = b"\r\n".join(line.encode() for line in body_lines)
    ending = draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b" \r\n \r\n"]))
    message = b"\r\n".join(order) + b"\r\n\r\n" + body + ending
    return message.replace(b"\r\n", b"\n") if draw(st.booleans()) else message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=_message())
def test_dkimpy_accepts_our_signatures(key, message):
    assert verifies(message, key), message
