"""Property tests: parsers of untrusted input return a value or a clean error, never anything else."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmailserver import mime
from openmailserver.address import mailbox_address, parse_address, parse_mailbox_address
from openmailserver.core import replies
from openmailserver.errors import MailError
from openmailserver.mime.compose import missing_id_and_date
from openmailserver.smtp.inbound import strip_our_auth_results

# OMS_FUZZ_EXAMPLES raises the count for longer runs (`make bench` does).
FAST = settings(max_examples=int(os.environ.get("OMS_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

header_names = st.sampled_from(["From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To", "References",
                                "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Date",
                                "Reply-To", "Auto-Submitted", "Authentication-Results"])
header_values = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["multipart/mixed; boundary=x", "multipart/alternative; boundary=\"b\"", "text/plain; charset=bogus",
                     "text/html; charset=utf-8", "application/pdf; name=a.pdf", "base64", "quoted-printable",
                     "attachment; filename=\"r.pdf\"", "=?utf-8?b?w6k=?=", "=?bad?q?x?=", "<a@b> <c@d>", "<<>>"]))


@st.composite
def messages(draw) -> bytes:
    """Message-shaped bytes: headers (some hostile), a blank line, MIME-ish bodies."""
    lines = [f"{draw(header_names)}: {draw(header_values)}" for _ in range(draw(st.integers(0, 8)))]
    body_parts = draw(st.lists(st.one_of(
        st.just("--x"), st.just("--b"), st.just("--x--"), st.just("Content-Type: text/plain"),
        st.just("Content-Transfer-Encoding: base64"), st.just("Content-Disposition: attachment; filename=a.pdf"),
        st.just("%PDF-1.4 garbage"), st.text(max_size=60)), max_size=12))
    text = "\r\n".join(lines) + "\r\n\r\n" + "\r\n".join(body_parts)
    return text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else draw(st.binary(max_size=400)) + text.encode(
        "utf-8", "surrogatepass")


@FAST
@given(st.text(max_size=300))
def test_address_parsing(text):
    for parse in (parse_address, parse_mailbox_address):
        try:
            address = parse(text)
        except MailError as exc:
            assert exc.http_status == 422
        else:
            assert "@" not in address.domain and address.domain == address.domain.lower()


@FAST
@given(st.text(max_size=80), st.text(max_size=80))
def test_mailbox_addresses(local, domain):
    try:
        address = mailbox_address(local, domain)
    except MailError:
        return
    assert "/" not in address.local and address.local not in (".", "..") and not address.local.startswith(".")


@FAST
@given(messages())
def test_mime_parsing_never_raises(raw):
    mime.index_meta(raw)
    text, html = mime.bodies(raw)
    if html is not None:
        mime.html_to_text(html)
    mime.extract_new_text(text or "")
    for attachment in mime.attachments_with_text(raw):
        assert attachment["size"] >= 0
    replies.quoted(raw)
    replies.forwarded(raw)
    strip_our_auth_results(raw, "mx.example.test")
    added, values = missing_id_and_date(mime.parse_headers(raw), "mx.example.test")
    assert mime.index_meta(added + b"\r\n").items() >= values.items()  # what the index would read back


@FAST
@given(st.binary(max_size=2000))
def test_mime_parsing_of_arbitrary_bytes(raw):
    mime.index_meta(raw)
    mime.bodies(raw)
    mime.attachment_list(raw)


@FAST
@given(st.text(max_size=500))
def test_html_to_text(html):
    assert isinstance(mime.html_to_text(html), str)
