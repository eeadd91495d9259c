"""The SMTP session's parsing, driven without sockets: envelope paths, and a whole dialogue
fed in arbitrary pieces (pipelined commands, DATA ends split anywhere, dot-stuffing)."""

from __future__ import annotations

import asyncio
import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from support.smtp_session import Transport, drive

from openmailserver.interprocess.board import Board
from openmailserver.smtp.session import Handler, Limits, Session, _path


def test_paths() -> None:
    assert _path("FROM:<a@b.test>", "FROM:") == ("a@b.test", [])
    assert _path("from: <a@b.test> SIZE=10 BODY=8BITMIME", "FROM:") == ("a@b.test", ["SIZE=10", "BODY=8BITMIME"])
    assert _path("FROM:<>", "FROM:") == ("", [])
    assert _path('TO:<"odd > local"@b.test>', "TO:") == ('"odd > local"@b.test', [])
    assert _path("TO:<@relay.test,@other.test:user@b.test>", "TO:") == ("user@b.test", [])
    assert _path("TO:user@b.test", "TO:") == ("user@b.test", [])
    for bad in ("FROM:<<<>>>", "FROM:<a@b.test", "FROM:<a@b.test>SIZE=1", "TO:<@relay.test>", "FROM:", "TO:<a>",
                "FROMX:<a@b.test>"):
        assert _path(bad, "FROM:" if bad.startswith("FROM") else "TO:") in (None, ("a", [])), bad


@given(st.text(max_size=60))
def test_paths_never_raise(arg: str) -> None:
    _path(arg, "FROM:")
    _path(arg, "TO:")


class _Recorder(Handler):
    def __init__(self, wait: bool) -> None:
        self.wait = wait
        self.messages: list[tuple[str, list[str], bytes]] = []

    def rcpt(self, session: Session, address: str):
        return self._later("250 2.1.5 OK") if self.wait else "250 2.1.5 OK"

    def data(self, session: Session, raw: bytes):
        self.messages.append((session.mail_from or "", list(session.rcpts), raw))
        return self._later("250 2.0.0 OK") if self.wait else "250 2.0.0 OK"

    async def _later(self, text: str) -> str:
        await asyncio.sleep(0)
        return text


BODIES = [b"Subject: one\r\n\r\nplain\r\n", b".leading dot\r\n..two dots\r\n.\r\nnot the end\r\n", b"",
          b"x" * 3000 + b"\r\n"]


def _stuffed(body: bytes) -> bytes:
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


def _dialogue() -> bytes:
    out = [b"EHLO client.test\r\n"]
    for n, body in enumerate(BODIES):
        out += [b"MAIL FROM:<s%d@x.test>\r\n" % n, b"RCPT TO:<a@y.test>\r\n", b"RCPT TO:<b@y.test>\r\n",
                b"DATA\r\n", _stuffed(body) + b".\r\n"]
    out.append(b"QUIT\r\n")
    return b"".join(out)


def _run(pieces: list[bytes], wait: bool) -> tuple[bytes, list]:
    handler = _Recorder(wait)
    return drive(handler, pieces), handler.messages


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=40), st.booleans())
def test_any_split_gives_the_same_replies_and_messages(cuts: list[int], wait: bool) -> None:
    data = _dialogue()
    pieces, at = [], 0
    for cut in cuts:
        if at >= len(data):
            break
        pieces.append(data[at:at + cut])
        at += cut
    pieces.append(data[at:])
    replies, messages = _run(pieces, wait)
    whole_replies, _ = _run([data], False)
    assert replies == whole_replies
    assert [m[2] for m in messages] == BODIES
    assert all(m[1] == ["a@y.test", "b@y.test"] for m in messages)
    codes = [line[:3] for line in replies.split(b"\r\n") if line[:3].isdigit() and line[3:4] == b" "]
    assert codes == [b"220", b"250"] + [b"250", b"250", b"250", b"354", b"250"] * len(BODIES) + [b"221"]


def test_oversized_data_is_refused_after_its_end_and_the_session_goes_on() -> None:
    big = b"MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nDATA\r\n" + (b"y" * 998 + b"\r\n") * 20 + b".\r\n"
    replies, messages = _run([b"EHLO c\r\n", big, b"NOOP\r\n"], False)
    assert b"552 5.3.4" in replies and replies.endswith(b"250 2.0.0 OK\r\n") and messages == []


def test_envelope_parameters_known_ones_accepted_others_refused() -> None:
    replies = _replies(drive(_Recorder(wait=False), [
        b"EHLO c\r\n",
        b"MAIL FROM:<s@x.test> SIZE=100 BODY=8BITMIME AUTH=<> SMTPUTF8\r\n",
        b"RCPT TO:<a@y.test> NOTIFY=NEVER\r\n",   # DSN is not offered
        b"RSET\r\n",
        b"MAIL FROM:<s@x.test> SIZE=20000\r\n",    # over the 10,000-byte limit
        b"MAIL FROM:<s@x.test> BODY=BINARYMIME\r\n",
        b"MAIL FROM:<s@x.test> SIZE=abc\r\n",
        b"MAIL FROM:<s@x.test> RET=HDRS\r\n",
        b"MAIL FROM:<s\xc3\xa9@x.test>\r\n",          # non-ASCII without SMTPUTF8
        b"MAIL FROM:<s\xc3\xa9@x.test> SMTPUTF8\r\n",
        b"RCPT TO:<\xc3\xa9@y.test>\r\n",
    ]))
    assert replies[2:] == [
        b"250 2.1.0 OK",
        b"555 5.5.4 Unsupported RCPT TO parameter: NOTIFY=NEVER",
        b"250 2.0.0 OK",
        b"552 5.3.4 Message size exceeds fixed maximum message size",
        b"555 5.5.4 Unsupported MAIL FROM parameter: BODY=BINARYMIME",
        b"555 5.5.4 Unsupported MAIL FROM parameter: SIZE=abc",
        b"555 5.5.4 Unsupported MAIL FROM parameter: RET=HDRS",
        b"553 5.6.7 Non-ASCII address needs SMTPUTF8 (RFC 6531 section 3.4)",
        b"250 2.1.0 OK",
        b"250 2.1.5 OK",
    ]


def test_a_message_exactly_at_the_size_limit_passes_however_its_end_arrives() -> None:
    start = b"EHLO c\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nDATA\r\n"
    for size, code in ((10_000, b"250 2.0.0"), (10_001, b"552 5.3.4")):
        body = (b"y" * 98 + b"\r\n") * 99 + b"z" * (size - 9_902) + b"\r\n"
        assert len(body) == size
        stream = start + body + b".\r\n"
        for cut in range(len(stream) - 8, len(stream)):
            replies, messages = _run([stream[:cut], stream[cut:]], False)
            assert _replies(replies)[-1].startswith(code), (size, cut)
            assert [m[2] for m in messages] == ([body] if code == b"250 2.0.0" else [])


class _Submission(_Recorder):
    """AUTH offered and required, as on the submission ports; the password is "right"."""

    auth = True
    auth_required = True

    def __init__(self) -> None:
        super().__init__(wait=True)
        self.logins: list[tuple[str, str]] = []

    async def authenticate(self, session: Session, username: str, password: str) -> str:
        self.logins.append((username, password))
        if password != "right":
            return "535 5.7.8 Authentication credentials invalid"
        session.authenticated = username
        return "235 2.7.0 Authentication successful"


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def _replies(written: bytes) -> list[bytes]:
    return [line for line in written.split(b"\r\n") if line and line[3:4] != b"-"]


def test_auth_plain_and_login_in_every_form() -> None:
    handler = _Submission()
    dialogue = [
        b"EHLO c\r\n",
        b"MAIL FROM:<u@x.test>\r\n",  # 530: not yet authenticated
        b"AUTH PLAIN " + _b64("\0u@x.test\0wrong") + b"\r\n",  # 535
        b"AUTH PLAIN\r\n", b"*\r\n",  # 334, then cancelled
        b"AUTH PLAIN\r\n", b"not base64!\r\n",  # 334, then undecodable
        b"AUTH CRAM-MD5\r\n",  # 504
        b"AUTH LOGIN\r\n", _b64("u@x.test") + b"\r\n", _b64("right") + b"\r\n",  # 334 334 235
        b"AUTH PLAIN " + _b64("\0u@x.test\0right") + b"\r\n",  # 503: already
        b"MAIL FROM:<u@x.test>\r\n",
    ]
    replies = _replies(drive(handler, dialogue, implicit_tls=True))
    codes = [r[:3] for r in replies]
    assert codes == [b"220", b"250", b"530", b"535", b"334", b"501", b"334", b"501", b"504", b"334", b"334",
                     b"235", b"503", b"250"], replies
    assert b"AUTH PLAIN LOGIN" in drive(_Submission(), [b"EHLO c\r\n"], implicit_tls=True)
    assert handler.logins == [("u@x.test", "wrong"), ("u@x.test", "right")]


def test_auth_login_with_initial_username_and_empty_plain_response() -> None:
    handler = _Submission()
    replies = _replies(drive(handler, [b"EHLO c\r\n", b"AUTH PLAIN =\r\n",
                                        b"AUTH LOGIN " + _b64("u@x.test") + b"\r\n", _b64("right") + b"\r\n"],
                              implicit_tls=True))
    assert [r[:3] for r in replies] == [b"220", b"250", b"501", b"334", b"235"], replies
    assert handler.logins == [("u@x.test", "right")]


def test_no_auth_before_tls_and_none_on_the_mx() -> None:
    before_tls = _replies(drive(_Submission(), [b"EHLO c\r\n", b"AUTH PLAIN " + _b64("\0u\0right") + b"\r\n"]))
    assert before_tls[-1].startswith(b"530 5.7.0")
    mx = _replies(drive(_Recorder(False), [b"EHLO c\r\n", b"AUTH PLAIN " + _b64("\0u\0right") + b"\r\n"],
                         implicit_tls=True))
    assert mx[-1].startswith(b"502 5.5.1")


class _Slow(_Recorder):
    """RCPT waits until released, so pipelined input piles up meanwhile."""

    def __init__(self) -> None:
        super().__init__(wait=True)
        self.release = asyncio.Event()

    def rcpt(self, session: Session, address: str):
        return self._held()

    async def _held(self) -> str:
        await self.release.wait()
        return "250 2.1.5 OK"


def test_reading_pauses_while_a_command_waits_on_a_flood_and_resumes_after() -> None:
    async def go() -> tuple[Transport, bytes]:
        handler, transport = _Slow(), Transport()
        session = Session(handler, limits=Limits(Board(1), "smtp", 10, 10), hostname="mx.test", size_limit=10_000,
                          timeout=60)
        session.connection_made(transport)
        session.data_received(b"EHLO c\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\n")
        flood = b"NOOP\r\n" * 50_000  # 300 KB pipelined behind the waiting RCPT
        for start in range(0, len(flood), 65536):
            session.data_received(flood[start:start + 65536])
        assert transport.paused == [True]
        handler.release.set()
        for _ in range(20):
            await asyncio.sleep(0)
        session.connection_lost(None)
        return transport, bytes(transport.written)

    transport, written = asyncio.run(go())
    assert transport.paused == [True, False]
    assert written.count(b"250 2.0.0 OK\r\n") == 50_000
