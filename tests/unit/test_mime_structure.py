"""openmailserver.mime.structure: ENVELOPE, BODYSTRUCTURE, BODY[section], search text."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imaptest.runner import NIL, Atom, tokenize

from openmailserver.mime import structure as s


def parse_values(data: bytes) -> tuple:
    """IMAP values as Python (numbers as int, NIL as None); raises on invalid syntax.

    Uses the conformance runner's tokenizer, which (like IMAP) allows list
    items without a space between them, as in multipart bodies.
    """
    tokens, end = tokenize(data + b"\r\n")
    assert end == len(data) + 2, "trailing data"

    def convert(value):
        if isinstance(value, list):
            return tuple(convert(v) for v in value)
        if value is NIL:
            return None
        if isinstance(value, Atom) and value.isdigit():
            return int(value)
        if isinstance(value, Atom):
            raise AssertionError(f"unexpected atom {value!r}")
        return str(value)

    return tuple(convert(t) for t in tokens)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


# ---------------------------------------------------------------------------
# Header block and fields
# ---------------------------------------------------------------------------


def test_split_header_includes_the_blank_line():
    raw = crlf("A: 1\nB: 2\n\nbody\n")
    header, body = s.split_header(raw)
    assert header == crlf("A: 1\nB: 2\n\n") and body == b"body\r\n"


@pytest.mark.parametrize("raw,header_len", [
    (b"\r\nbody", 2),               # empty header: just the blank line
    (b"\nbody", 1),
    (b"A: 1\r\n", 6),               # no blank line: all header
    (b"", 0),
    (b"A: 1\n\nbody", 6),           # bare LF
])
def test_header_length_edge_cases(raw, header_len):
    assert s.header_length(raw) == header_len


def test_header_fields_keep_folding_and_skip_broken_lines():
    header = crlf("Subject: one\n two\nno colon here\nX-A:b\n\n")
    fields = s.header_fields(header)
    assert fields == [("subject", b"Subject: one\r\n two\r\n"), ("x-a", b"X-A:b\r\n")]
    assert s.field_value(fields[0][1]) == "one two"
    assert s.header_values(header, "SUBJECT") == ["one two"]


def test_select_fields_and_not():
    header = crlf("From: a@b\nSubject: s\nDate: d\nSubject: again\n\n")
    assert s.select_fields(header, ["subject", "SUBJECT"]) == crlf("Subject: s\nSubject: again\n\n")
    assert s.select_fields(header, ["subject"], exclude=True) == crlf("From: a@b\nDate: d\n\n")
    assert s.select_fields(header, ["x-none"]) == b"\r\n"


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_field_name = st.sampled_from(["From", "To", "Subject", "Message-ID", "DKIM-Signature", "X-Mailer", "Date"])
_trace_name = st.sampled_from(["Received", "Return-Path", "Delivered-To", "Authentication-Results", "ARC-Seal",
                               "received-spf", "X-Original-To"])
_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=20)


@FAST
@given(fields=st.lists(st.tuples(_field_name, _value), min_size=1, max_size=6),
       traces=st.lists(st.tuples(st.integers(0, 6), _trace_name, _value), max_size=4),
       body=st.binary(max_size=60))
def test_content_digest_ignores_trace_fields_only(fields, traces, body):
    """Trace fields anywhere in the header (folded or not) leave the digest alone; a change to
    any other field, to their order or to the body is another message."""
    def message(fs):
        return b"".join(f"{n}: {v}\r\n".encode() for n, v in fs) + b"\r\n" + body

    plain = s.content_digest(message(fields))
    with_traces = list(fields)
    for at, name, value in traces:
        with_traces.insert(min(at, len(with_traces)), (name, f"{value}\r\n\t{value}"))
    assert s.content_digest(message(with_traces)) == plain
    changed = [(fields[0][0], fields[0][1] + "x")] + fields[1:]
    assert s.content_digest(message(changed)) != plain
    assert s.content_digest(message(fields) + b"x") != plain
    if len(fields) > 1 and fields[0] != fields[-1]:
        assert s.content_digest(message(fields[::-1])) != plain


def test_content_digest_of_a_message_without_a_blank_line():
    assert s.content_digest(b"Subject: a\r\n") != s.content_digest(b"Subject: b\r\n")
    assert s.content_digest(b"") == s.content_digest(b"Received: x\r\n")


def test_decode_words():
    assert s.decode_words("=?utf-8?q?caf=C3=A9?= ok") == "café ok"
    assert s.decode_words("=?iso-8859-1?b?" + base64.b64encode("naïve".encode("latin-1")).decode() + "?=") == "naïve"
    assert s.decode_words("=?bogus-charset?q?x?=") == "x"
    assert s.decode_words("=?utf-8?q?unterminated") == "=?utf-8?q?unterminated"


# ---------------------------------------------------------------------------
# Addresses and ENVELOPE
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("user@example.org", [(None, None, "user", "example.org")]),
    ("Real Name <user@example.org>", [("Real Name", None, "user", "example.org")]),
    ('"Doe, John" <j@x.org>', [("Doe, John", None, "j", "x.org")]),
    ("user@domain (Real Name)", [("Real Name", None, "user", "domain")]),
    ("<@route,@other:user@domain>", [(None, "@route,@other", "user", "domain")]),
    ("a@b, c@d", [(None, None, "a", "b"), (None, None, "c", "d")]),
    ("group: g1@d1.org, g2@d2.org;, x@y", [
        (None, None, "group", None), (None, None, "g1", "d1.org"), (None, None, "g2", "d2.org"),
        (None, None, None, None), (None, None, "x", "y")]),
    ("undisclosed-recipients:;", [(None, None, "undisclosed-recipients", None), (None, None, None, None)]),
    ("group2: (foo) ;", [(None, None, "group2", None), (None, None, None, None)]),
    ("localonly", [(None, None, "localonly", s.MISSING_DOMAIN)]),
    ('"quoted local"@x.org', [(None, None, "quoted local", "x.org")]),
    ("John Q. Public <jqp@x.org>", [("John Q. Public", None, "jqp", "x.org")]),
    ("", []),
    (",,,", []),
    ("unterminated: a@b", [(None, None, "unterminated", None), (None, None, "a", "b"), (None, None, None, None)]),
])
def test_parse_addresses(value, expected):
    assert s.parse_addresses(value) == expected


def test_envelope_full():
    header = crlf(
        "Message-ID: <msg@id>\nIn-Reply-To: <r@id>\nDate: Thu, 15 Feb 2007 01:02:03 +0200\n"
        "Subject: =?utf-8?q?caf=C3=A9?=\nFrom: From Real <f@fd.org>\nSender: S <s@sd.org>\n"
        "Reply-To: R <r@rd.org>\nTo: T <t@td.org>, u@ud.org\nCc: c@cd.org\nBcc: b@bd.org\n\n")
    env = s.envelope(header)
    assert env == (
        "Thu, 15 Feb 2007 01:02:03 +0200", "=?utf-8?q?caf=C3=A9?=",  # subjects stay encoded (RFC 3501 §7.4.2)
        (("From Real", None, "f", "fd.org"),), (("S", None, "s", "sd.org"),), (("R", None, "r", "rd.org"),),
        (("T", None, "t", "td.org"), (None, None, "u", "ud.org")), ((None, None, "c", "cd.org"),),
        ((None, None, "b", "bd.org"),), "<r@id>", "<msg@id>")


def test_envelope_defaults_sender_and_reply_to_to_from():
    env = s.envelope(crlf("From: a@b\nSender: \nReply-To:\n\n"))
    assert env[3] == env[4] == env[2] == ((None, None, "a", "b"),)
    assert s.envelope(b"\r\n") == (None,) * 10


def test_envelope_bytes_are_valid_imap():
    data = s.envelope_bytes(crlf('From: "Quote \\" here" <a@b>\nSubject: line\n\n'))
    assert parse_values(data)[0][2] == (('Quote " here', None, "a", "b"),)


def test_non_ascii_header_values_become_literals():
    data = s.envelope_bytes("Subject: grüße\r\n\r\n".encode("utf-8"))
    assert b"{" in data and "grüße".encode() in data
    assert parse_values(data)[0][1] == "grüße".encode("utf-8").decode("latin-1")


# ---------------------------------------------------------------------------
# Content-Type and the MIME tree
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("text/plain; charset=utf-8", ("text", "plain", [("charset", "utf-8")])),
    ('Multipart/Mixed; boundary="a b"', ("multipart", "mixed", [("boundary", "a b")])),
    ("text/plain; name = \"x y\"", ("text", "plain", [("name", "x y")])),
    ("application/x; title*=utf-8''caf%C3%A9", ("application", "x", [("title", "café")])),
    ("application/x; n*0=\"ab\"; n*1=cd", ("application", "x", [("n", "abcd")])),
    ("text", ("", "", [])),
    ("", ("", "", [])),
    (None, ("", "", [])),
])
def test_parse_content_type(value, expected):
    assert s.parse_content_type(value) == expected


MULTI = crlf(
    "From: a@b\nMime-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n"
    "preamble\n--XX\nContent-Type: text/plain; charset=us-ascii\n\nhello\n\n--XX  \n"
    "Content-Type: application/pdf; name=x.pdf\nContent-Transfer-Encoding: base64\n"
    "Content-Disposition: attachment; filename=x.pdf\nContent-Language: en, de\nContent-Location: http://x/\n"
    "Content-ID: <id1>\nContent-Description: a file\nContent-MD5: abc\n\nAAAA\n--XX\n"
    "Content-Type: message/rfc822\n\nSubject: inner\nContent-Type: multipart/alternative; boundary=in\n\n"
    "--in\n\ninner text\n--in\nContent-Type: text/html\n\n<p>x</p>\n--in--\n"
    "--XX--\nepilogue\n")


def test_multipart_tree():
    root = s.parse(MULTI)
    assert root.is_multipart and [c.type for c in root.children] == ["text", "application", "message"]
    assert root.children[0].body == b"hello\r\n"
    assert root.children[1].body == b"AAAA"
    inner = root.children[2].message
    assert inner is not None and inner.is_multipart and len(inner.children) == 2
    assert inner.children[0].body == b"inner text" and inner.children[0].params == [("charset", "us-ascii")]


def test_bodystructure_with_extension_data():
    data = s.bodystructure_bytes(MULTI)
    value = parse_values(b"(" + data + b")")[0][0]
    text, pdf, msg = value[0], value[1], value[2]
    assert text[:8] == ("TEXT", "PLAIN", ("CHARSET", "us-ascii"), None, None, "7BIT", 7, 1)
    assert pdf[:7] == ("APPLICATION", "PDF", ("NAME", "x.pdf"), "<id1>", "a file", "BASE64", 4)
    assert pdf[7:] == ("abc", ("ATTACHMENT", ("FILENAME", "x.pdf")), ("en", "de"), "http://x/")
    assert msg[:6] == ("MESSAGE", "RFC822", None, None, None, "7BIT")
    assert msg[7][1] == "inner"  # its envelope
    assert msg[8][-5:] == ("ALTERNATIVE", ("BOUNDARY", "in"), None, None, None)
    assert value[3:] == ("MIXED", ("BOUNDARY", "XX"), None, None, None)
    # BODY: the same without extension data.
    plain = parse_values(b"(" + s.bodystructure_bytes(MULTI, extended=False) + b")")[0][0]
    assert plain[3] == "MIXED" and len(plain) == 4 and len(plain[0]) == 8


def test_multipart_bodies_are_concatenated_without_spaces():
    data = s.bodystructure_bytes(MULTI, extended=False)
    assert data.startswith(b'(("TEXT" "PLAIN"') and b')("APPLICATION"' in data


def test_digest_parts_default_to_message_rfc822():
    raw = crlf("Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody\n--d--\n")
    root = s.parse(raw)
    assert (root.children[0].type, root.children[0].subtype) == ("message", "rfc822")
    assert root.children[0].message is not None


def test_broken_multiparts_degrade():
    no_boundary = s.parse(crlf("Content-Type: multipart/mixed\n\nbody\n"))
    assert not no_boundary.is_multipart
    assert s.bodystructure(no_boundary, False)[:2] == ("TEXT", "PLAIN")
    unclosed = s.parse(crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\npart one\n--b\n\npart two\n"))
    assert [c.body for c in unclosed.children] == [b"part one", b"part two\r\n"]
    no_parts = s.parse(crlf("Content-Type: multipart/mixed; boundary=b\n\nnothing\n"))
    assert s.bodystructure(no_parts, False)[:2] == ("TEXT", "PLAIN")
    # "--bb" is not a delimiter for boundary "b".
    prefix = s.parse(crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--bb\ny\n--b--\n"))
    assert [c.body for c in prefix.children] == [b"x\r\n--bb\r\ny"]


def test_nesting_bombs_stop_at_the_depth_limit():
    depth = s.MAX_DEPTH + 20
    raw = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth)) + "\nleaf\n"
    root = s.parse(crlf(raw))
    assert s.bodystructure_bytes(crlf(raw))
    node, levels = root, 0
    while node.children:
        node, levels = node.children[0], levels + 1
    assert levels <= s.MAX_DEPTH


# ---------------------------------------------------------------------------
# BODY[section]
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("part,spec,expected", [
    ((), None, MULTI),
    ((), "HEADER", MULTI[:MULTI.index(b"\r\n\r\n") + 4]),
    ((), "TEXT", MULTI[MULTI.index(b"\r\n\r\n") + 4:]),
    ((1,), None, b"hello\r\n"),
    ((1,), "MIME", crlf("Content-Type: text/plain; charset=us-ascii\n\n")),
    ((2,), None, b"AAAA"),
    ((3,), "MIME", crlf("Content-Type: message/rfc822\n\n")),
    ((3,), "HEADER", crlf("Subject: inner\nContent-Type: multipart/alternative; boundary=in\n\n")),
    ((3,), "HEADER.FIELDS", crlf("Subject: inner\n\n")),
    ((3, 1), None, b"inner text"),
    ((3, 2), None, b"<p>x</p>"),
    ((3, 2), "MIME", crlf("Content-Type: text/html\n\n")),
    ((4,), None, None),
    ((1, 1), None, None),
    ((3, 3), None, None),
    ((), "MIME", None),
])
def test_sections(part, spec, expected):
    assert s.section(s.parse(MULTI), part, spec, ("subject",)) == expected


def test_sections_of_a_simple_message():
    raw = crlf("Subject: x\n\nonly body\n")
    root = s.parse(raw)
    assert s.section(root, (1,), None) == b"only body\r\n"
    assert s.section(root, (2,), None) is None
    assert s.section(root, (1,), "MIME") == crlf("Subject: x\n\n")


def test_message_rfc822_at_the_top():
    raw = crlf("Content-Type: message/rfc822\n\nSubject: sub\n\nHello\n")
    root = s.parse(raw)
    assert s.section(root, (1,), None) == crlf("Subject: sub\n\nHello\n")
    assert s.section(root, (1, 1), None) == b"Hello\r\n"
    assert s.section(root, (1,), "HEADER") == crlf("Subject: sub\n\n")
    assert s.section(root, (1,), "TEXT") == b"Hello\r\n"


# ---------------------------------------------------------------------------
# Search text
# ---------------------------------------------------------------------------


def test_search_text_decodes_transfer_encodings_and_charsets():
    raw = crlf(
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
        "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
        "caf=E9 au lait\n--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        + base64.b64encode("naïve text".encode()).decode() + "\n--b\nContent-Type: image/png\n\nPNGDATA\n--b--\n")
    headers, body = s.search_text(raw)
    assert "grüße".casefold() in headers.casefold()
    assert "café au lait" in body and "naïve text" in body and "PNGDATA" not in body


# ---------------------------------------------------------------------------
# Never raise on broken input
# ---------------------------------------------------------------------------

_header_line = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: multipart/digest; boundary=\"b\"",
    b"Content-Type: message/rfc822", b"Content-Type: text/plain; charset=\"", b"Content-Type: ;;==",
    b"Content-Transfer-Encoding: base64", b"Content-Disposition: attachment; filename*=x''%zz",
    b"From: <@a:b@c>, group:;, \"unterminated", b"To: (((", b"Subject: =?utf-8?b?!!!?=", b" folded",
    b"", b"--b", b"--b--", b"\xff\xfe", b"Date: Mon, 32 Foo 99999",
])
_message = st.lists(_header_line | st.binary(max_size=30), max_size=40).map(lambda ls: b"\r\n".join(ls))


def _check_everything(raw: bytes) -> None:
    root = s.parse(raw)
    for extended in (True, False):
        data = s.bodystructure_bytes(raw, extended)
        assert parse_values(b"(" + data + b")")  # always valid IMAP syntax
    header, _ = s.split_header(raw)
    assert parse_values(b"(" + s.envelope_bytes(header) + b")")
    for part in ((), (1,), (2,), (1, 1), (2, 1, 3)):
        for spec in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            value = s.section(root, part, spec, ("from", "to"))
            assert value is None or isinstance(value, bytes)
            if value is not None and spec in (None, "TEXT", "MIME", "HEADER") and part != ():
                assert value in raw
    s.search_text(raw)


@FAST
@given(raw=_message)
def test_structured_garbage_never_raises(raw):
    _check_everything(raw)


@FAST
@given(raw=st.binary(max_size=400))
def test_random_bytes_never_raise(raw):
    _check_everything(raw)
