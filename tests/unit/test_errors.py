"""The error registry: every code, through every protocol that can report it."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
from support.smtp_session import drive

import openmailserver
from openmailserver.api.base import error_response
from openmailserver.errors import IMAP_CODES, ErrorCode, MailError
from openmailserver.smtp.session import Handler, Session

# Statuses our API answers with (RFC 9110 §15, RFC 6585 §4 for 429, RFC 4918 §11.5 for 507).
HTTP_STATUSES = {400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 503, 507}
ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")  # RFC 3463 §2


def test_codes_are_distinct_snake_case_names() -> None:
    wires = [code.wire for code in ErrorCode]
    assert len(set(wires)) == len(wires) == len(ErrorCode.__members__)
    assert all(re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", wire) for wire in wires)


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.wire)
def test_each_code_is_consistent_across_protocols(code: ErrorCode) -> None:
    assert code.http_status in HTTP_STATUSES
    match = ENHANCED.fullmatch(code.enhanced)
    assert match and match.group(1) == str(code.smtp_code)[0]  # the class agrees with the reply code
    assert code.smtp_code // 100 in (4, 5) and code.temporary == (code.smtp_code // 100 == 4)
    assert code.imap_code in IMAP_CODES
    if code.http_status >= 500:  # what the server could not do can succeed later
        assert code.temporary


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.wire)
def test_each_code_over_http(code: ErrorCode) -> None:
    response = error_response(MailError(code, "what went wrong", fix="the fix", retry_after=7))
    assert response.status_code == code.http_status
    assert json.loads(response.body) == {"error": code.wire, "message": "what went wrong", "fix": "the fix"}
    assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.wire)
def test_each_code_over_imap(code: ErrorCode) -> None:
    assert MailError(code, "what went wrong").imap_status() == f"NO [{code.imap_code}] what went wrong"


class _Failing(Handler):
    """Every RCPT fails with the next code of the registry."""

    def __init__(self) -> None:
        self.codes = iter(ErrorCode)

    def rcpt(self, session: Session, address: str):
        return self._fail(next(self.codes))

    async def _fail(self, code: ErrorCode) -> str:
        raise MailError(code, f"{code.wire} happened")

    def data(self, session: Session, raw: bytes) -> str:
        return "250 2.0.0 OK"


def test_every_code_over_smtp() -> None:
    """Raised by a handler, each code is the session's reply: code, enhanced code, message."""
    commands = [b"EHLO client.test\r\n", b"MAIL FROM:<s@x.test>\r\n"] + \
        [b"RCPT TO:<r%d@y.test>\r\n" % n for n in range(len(ErrorCode))] + [b"QUIT\r\n"]
    replies = drive(_Failing(), commands).decode().split("\r\n")
    rcpt_replies = [line for line in replies if "happened" in line]
    assert rcpt_replies == [f"{code.smtp_code} {code.enhanced} {code.wire} happened" for code in ErrorCode]


def test_a_dialect_may_answer_with_its_own_status() -> None:
    error = MailError(ErrorCode.INVALID_REQUEST, "to: is not an address").answered_with(400)
    assert error_response(error).status_code == 400 and error.error == "invalid_request"


def test_every_code_is_used() -> None:
    """No code in the registry that nothing raises."""
    root = pathlib.Path(openmailserver.__file__).parent
    source = "".join(p.read_text() for p in root.rglob("*.py"))
    unused = [code.name for code in ErrorCode if f"ErrorCode.{code.name}" not in source]
    assert unused == []
