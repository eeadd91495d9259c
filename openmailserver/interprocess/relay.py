"""Live events between the workers of one daemon, through the supervisor.

Each worker holds one end of a SOCK_SEQPACKET socket pair whose other end the supervisor
holds; one packet is one pickled message (the peers are our own processes, forked from one
parent). A worker sends every change it commits; the supervisor (`Switch`) passes each
packet on, unchanged, to every other worker, whose hub delivers it to its sessions and
streams. Nothing here is durable: the event log in the database is. A packet that cannot
be passed on at once waits in a bounded queue for that worker; past the bound, that worker
loses live events (its sessions resynchronise at their next command), never the sender.

A packet's first byte says what it is: `EVENT` is passed on, `CONTROL` is for the
supervisor itself (a worker saying it serves).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import pickle
import socket
from typing import Any, Callable

log = logging.getLogger(__name__)

EVENT, CONTROL = b"E", b"C"
PACKET_LIMIT = 256 * 1024  # the largest message; events are a few hundred bytes
BACKLOG = 10_000  # packets waiting for one slow peer


def pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, the worker's end)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    return ours, theirs


class Outbox:
    """Packets for one peer that its socket did not take yet, sent as it drains."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.waiting: collections.deque[bytes] = collections.deque()
        self.dropped = 0

    def send(self, packet: bytes) -> bool:
        """Send or queue `packet`; True when something is left waiting."""
        if not self.waiting:
            try:
                self.sock.send(packet)
                return False
            except BlockingIOError:
                pass
        if len(self.waiting) >= BACKLOG:
            self.dropped += 1
            return True
        self.waiting.append(packet)
        return True

    def flush(self) -> bool:
        """Send what waits; True when something is still left."""
        while self.waiting:
            try:
                self.sock.send(self.waiting[0])
            except BlockingIOError:
                return True
            self.waiting.popleft()
        return False


class Link:
    """A worker's end: `send` a message to every other worker; `on_message` gets theirs."""

    def __init__(self, sock: socket.socket, on_message: Callable[[Any], None]) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.on_message = on_message
        self.outbox = Outbox(sock)
        self.closed: asyncio.Future | None = None  # settles when the supervisor goes away
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        self._loop.add_reader(self.sock, self._readable)

    def send(self, message: Any) -> None:
        """A live event for every other worker."""
        self._send(EVENT + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def control(self, message: Any) -> None:
        """A message for the supervisor."""
        self._send(CONTROL + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def _send(self, packet: bytes) -> None:
        if len(packet) > PACKET_LIMIT:
            log.warning("live event of %d bytes not relayed to the other workers", len(packet))
            return
        if self.outbox.send(packet) and self._loop is not None:
            self._loop.add_writer(self.sock, self._writable)

    def _writable(self) -> None:
        if not self.outbox.flush() and self._loop is not None:
            self._loop.remove_writer(self.sock)

    def _readable(self) -> None:
        while True:
            try:
                packet = self.sock.recv(PACKET_LIMIT)
            except BlockingIOError:
                return
            except OSError:
                packet = b""
            if not packet:  # the supervisor is gone
                self.stop()
                if self.closed is not None and not self.closed.done():
                    self.closed.set_result(None)
                return
            try:
                message = pickle.loads(memoryview(packet)[1:])
            except Exception:  # noqa: BLE001 - a broken packet is dropped, the link goes on
                log.exception("undecodable live event from another worker")
                continue
            self.on_message(message)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock)
            self._loop.remove_writer(self.sock)
            self._loop = None
