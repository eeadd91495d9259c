"""An SMTP `Session` driven without sockets: a stand-in transport and a feeder."""

from __future__ import annotations

import asyncio

from openmailserver.interprocess.board import Board
from openmailserver.smtp.session import Handler, Limits, Session


class Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.paused: list[bool] = []  # every pause_reading (True) and resume_reading (False)

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 12345) if name == "peername" else default

    def pause_reading(self) -> None:
        self.paused.append(True)

    def resume_reading(self) -> None:
        self.paused.append(False)


def drive(handler: Handler, pieces: list[bytes], transport: Transport | None = None, **options) -> bytes:
    """Feed `pieces` to a session over a stand-in transport; everything it wrote."""
    transport = transport or Transport()

    async def go() -> bytes:
        session = Session(handler, limits=Limits(Board(1), "smtp", 10, 10), hostname="mx.test", size_limit=10_000,
                          timeout=60,
                          **options)
        session.connection_made(transport)
        for piece in pieces:
            session.data_received(piece)
            for _ in range(5):
                await asyncio.sleep(0)
        for _ in range(50):
            await asyncio.sleep(0)
        session.connection_lost(None)
        return bytes(transport.written)

    return asyncio.run(go())
