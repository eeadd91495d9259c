"""The IMAP listeners (RFC 3501 plus the extensions in `session.CAPABILITIES`): start, stop, connection limit.

Port 143 offers STARTTLS (`imap.auth`); port 993 is TLS from the first byte.
Both share the runtime's IMAP state (`shared.Shared.of`): session counts, the
login cache, the \\Recent marks and the cache warmer. Each connection gets a
`session.Session` with the command table of `imap.handlers`.

Changes made by one session (flags, expunges, appends) are published on
`rt.hub` as non-durable `mailbox.changed` events; deliveries publish
`message.received`. Other sessions of the mailbox pick them up when RFC 3501
§7.4.1/§5.2 lets them speak: after any command, and at once while idling
(RFC 2177).

How the package is laid out: see `openmailserver/imap/__init__.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Awaitable, Callable

from ..runtime import Runtime
from .folders import check_folder_name
from .handlers import COMMANDS
from .session import Session
from .shared import Shared, warm_cache


async def _start(rt: Runtime, sock: socket.socket, implicit_tls: bool) -> Callable[[], Awaitable[None]]:
    shared = Shared.of(rt)
    context = shared.tls_context()
    mine: set[Session] = set()
    listener = "imaps" if implicit_tls else "imap"
    if shared.warmer is None:
        shared.warmer = asyncio.create_task(warm_cache(rt))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Both listeners of every worker count (the daemon's board).
        if rt.board.sessions("imap") + rt.board.sessions("imaps") >= rt.settings.imap_max_connections:
            writer.write(b"* BYE Too many connections, try again later\r\n")
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()
            return
        session = Session(shared, reader, writer, implicit_tls, COMMANDS)
        session.task = asyncio.current_task()
        shared.sessions.add(session)
        mine.add(session)
        rt.board.opened(listener)
        try:
            await session.run()
        finally:
            rt.board.opened(listener, -1)
            mine.discard(session)

    server = await asyncio.start_server(handle, sock=sock, ssl=context if implicit_tls else None,
                                        limit=256 * 1024)

    async def stop() -> None:
        server.close()
        if shared.warmer is not None:
            shared.warmer.cancel()
        for session in list(mine):
            session.closing = session.shutting_down = True
            if session.waiting_input and session.task is not None:
                session.task.cancel()
        pending = [s.task for s in mine if s.task is not None and not s.task.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=5)
            for task in still:
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
        if shared.background:
            await asyncio.wait(list(shared.background), timeout=3)

    return stop


async def start_imap(rt: Runtime, sock: socket.socket) -> Callable[[], Awaitable[None]]:
    """Port 143: plaintext with STARTTLS (RFC 3501 §6.2.1)."""
    return await _start(rt, sock, implicit_tls=False)


async def start_imaps(rt: Runtime, sock: socket.socket) -> Callable[[], Awaitable[None]]:
    """Port 993: TLS from the first byte (RFC 8314)."""
    return await _start(rt, sock, implicit_tls=True)


__all__ = ["start_imap", "start_imaps", "Session", "check_folder_name"]
