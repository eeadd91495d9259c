"""The SMTP session's parsing, driven without sockets: envelope paths, and a whole dialogue
fed in arbitrary pieces (pipelined commands, DATA ends split anywhere, dot-stuffing)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

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


class _Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 12345) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


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
    async def go():
        handler = _Recorder(wait)
        session = Session(handler, limits=Limits(10, 10), hostname="mx.test", size_limit=10_000, timeout=60)
        transport = _Transport()
        session.connection_made(transport)
        for piece in pieces:
            session.data_received(piece)
            for _ in range(5):
                await asyncio.sleep(0)
        for _ in range(50):
            await asyncio.sleep(0)
        session.connection_lost(None)
        return bytes(transport.written), handler.messages

    return asyncio.run(go())


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
