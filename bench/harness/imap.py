"""A lean IMAP client for the benchmarks: the same bytes on the wire for every server.

It frames responses (lines and `{n}` literals), keeps the untagged responses'
text without their literal data (counting the literal bytes instead), and
never parses more than a benchmark checks, so the client's own cost stays
small and equal for every server. `ImapClient` is blocking (one connection,
timed operations); `open_idle()` is the asyncio variant that parks many
sessions in IDLE.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS")


class ImapError(Exception):
    pass


@dataclass
class Response:
    status: bytes                      # OK, NO or BAD
    text: bytes                        # the tagged line
    untagged: list[bytes] = field(default_factory=list)  # text of each untagged response, literals elided
    literal_bytes: int = 0

    def count(self, prefix: bytes) -> int:
        """Untagged responses that start with `prefix` after "* ", e.g. count(b"FETCH") for "* 5 FETCH"."""
        return sum(1 for line in self.untagged if _kind(line) == prefix)

    def search_hits(self) -> list[int]:
        hits: list[int] = []
        for line in self.untagged:
            if line.startswith(b"* SEARCH"):
                hits.extend(int(n) for n in line[8:].split())
        return hits


def _kind(line: bytes) -> bytes:
    words = line.split(b" ", 3)
    if len(words) > 2 and words[1].isdigit():
        return words[2].rstrip(b"\r\n")
    return words[1].rstrip(b"\r\n") if len(words) > 1 else b""


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapClient:
    def __init__(self, host: str, port: int, timeout: float = 600.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb", buffering=1 << 16)
        self.greeting = self._line()
        if not self.greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {self.greeting!r}")
        self._tag = 0
        self.capabilities: set[str] = set()

    def _line(self) -> bytes:
        line = self.reader.readline()
        if not line:
            raise ImapError("connection closed by the server")
        return line

    def _next_tag(self) -> bytes:
        self._tag += 1
        return b"b%d" % self._tag

    def _read_response(self, tag: bytes, on_continuation: Callable[[bytes], None] | None = None) -> Response:
        response = Response(b"", b"")
        prefix = tag + b" "
        while True:
            line = self._line()
            if line.startswith(b"+"):
                if on_continuation is None:
                    raise ImapError(f"unexpected continuation: {line!r}")
                on_continuation(line)
                continue
            text = [line]
            while match := _LITERAL.search(line):
                size = int(match.group(1))
                data = self.reader.read(size)
                if len(data) != size:
                    raise ImapError("connection closed inside a literal")
                response.literal_bytes += size
                line = self._line()
                text.append(line)
            joined = b"".join(text)
            if joined.startswith(prefix):
                response.text = joined
                response.status = joined[len(prefix):].split(b" ", 1)[0].rstrip(b"\r\n")
                return response
            response.untagged.append(joined)

    def command(self, text: str, check: bool = True) -> Response:
        tag = self._next_tag()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        response = self._read_response(tag)
        if check and response.status != b"OK":
            raise ImapError(f"{text.split()[0]} failed: {response.text!r}")
        return response

    def login(self, user: str, password: str) -> Response:
        response = self.command(f"LOGIN {quote(user)} {quote(password)}")
        self.capability()
        return response

    def capability(self) -> set[str]:
        response = self.command("CAPABILITY")
        for line in response.untagged:
            if line.startswith(b"* CAPABILITY"):
                self.capabilities = {word.upper() for word in line.decode().split()[2:]}
        return self.capabilities

    def append(self, mailbox: str, data: bytes, flags: str = "") -> Response:
        """APPEND with a non-synchronizing literal when LITERAL+ is offered, else a synchronizing one."""
        tag = self._next_tag()
        flag_part = f" ({flags})" if flags else ""
        head = tag + f" APPEND {quote(mailbox)}{flag_part} ".encode()
        if "LITERAL+" in self.capabilities:
            self.sock.sendall(head + b"{%d+}\r\n" % len(data) + data + b"\r\n")
            response = self._read_response(tag)
        else:
            self.sock.sendall(head + b"{%d}\r\n" % len(data))
            response = self._read_response(tag, lambda _: self.sock.sendall(data + b"\r\n"))
        if response.status != b"OK":
            raise ImapError(f"APPEND failed: {response.text!r}")
        return response

    def logout(self) -> None:
        try:
            self.command("LOGOUT", check=False)
        except (ImapError, OSError):
            pass
        self.close()

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    # -- IDLE with a reader thread ---------------------------------------------

    def idle(self, on_exists: Callable[[int, float], None]) -> "IdleSession":
        """Enter IDLE; a thread calls on_exists(count, time.monotonic()) for each "* n EXISTS"."""
        return IdleSession(self, on_exists)


class IdleSession:
    def __init__(self, client: ImapClient, on_exists: Callable[[int, float], None]) -> None:
        self.client = client
        self.tag = client._next_tag()
        client.sock.sendall(self.tag + b" IDLE\r\n")
        line = client._line()
        while not line.startswith(b"+"):
            if line.startswith(self.tag + b" "):
                raise ImapError(f"IDLE refused: {line!r}")
            line = client._line()
        self.on_exists = on_exists
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, name="imap-idle-reader", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        prefix = self.tag + b" "
        try:
            while True:
                line = self.client._line()
                now = time.monotonic()
                if match := _EXISTS.match(line):
                    self.on_exists(int(match.group(1)), now)
                elif line.startswith(prefix):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by done()
            self.error = exc

    def done(self) -> None:
        """Leave IDLE (DONE) and wait for the tagged reply."""
        self.client.sock.sendall(b"DONE\r\n")
        self.thread.join(timeout=30)
        if self.error is not None:
            raise ImapError(f"IDLE reader failed: {self.error}")


# -- many idle sessions on one asyncio loop ------------------------------------

async def _read_tagged(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ImapError("connection closed by the server")
        if match := _LITERAL.search(line):
            await reader.readexactly(int(match.group(1)))
            continue
        if line.startswith(tag + b" "):
            return line


async def open_idle(host: str, port: int, user: str, password: str,
                    mailbox: str = "INBOX") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, LOGIN, SELECT and enter IDLE; returns the open streams (close the writer to end)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting!r}")
        for tag, command in ((b"a1", f"LOGIN {quote(user)} {quote(password)}"), (b"a2", f"SELECT {quote(mailbox)}")):
            writer.write(tag + b" " + command.encode() + b"\r\n")
            line = await _read_tagged(reader, tag)
            if not line.startswith(tag + b" OK"):
                raise ImapError(f"{command.split()[0]} failed: {line!r}")
        writer.write(b"a3 IDLE\r\n")
        while True:
            line = await reader.readline()
            if not line:
                raise ImapError("connection closed before IDLE began")
            if line.startswith(b"+"):
                return reader, writer
            if line.startswith(b"a3 "):
                raise ImapError(f"IDLE refused: {line!r}")
    except BaseException:
        writer.close()
        raise
