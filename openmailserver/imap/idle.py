"""IDLE (RFC 2177): report changes to the selected folder as they happen, until the client says DONE.

While idling the session waits for two things at once: client input (the DONE
line) and events of its mailbox on `rt.hub`; every `IDLE_KEEPALIVE` seconds
without output it syncs the view and, if that reported nothing, says it is
still there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

from . import protocol as p
from .session import Session

IDLE_KEEPALIVE = 120.0


async def cmd_idle(session: Session, cmd: p.Command) -> str:
    """RFC 2177: report changes as they happen until the client says DONE."""
    session.send(b"+ idling\r\n")
    if session.selected is not None:
        await session.selected.sync(session, allow_expunge=True)
    await session.flush()
    session.commands.expect_done()
    read_task: Optional[asyncio.Task] = None
    hub_task: Optional[asyncio.Task] = None
    last_output = time.monotonic()
    try:
        while True:
            for event in session.commands.events():
                if isinstance(event, p.IdleDone):
                    return "OK Idle completed" if event.valid else "BAD Expected DONE"
                if isinstance(event, p.FramingError):
                    return "BAD Expected DONE"
            if read_task is None:
                read_task = asyncio.ensure_future(session.reader.read(65536))
            if hub_task is None and session.hub_queue is not None:
                hub_task = asyncio.ensure_future(session.hub_queue.get())
            waiting = {t for t in (read_task, hub_task) if t is not None}
            session.waiting_input = True
            done, _ = await asyncio.wait(waiting, timeout=IDLE_KEEPALIVE,
                                         return_when=asyncio.FIRST_COMPLETED)
            session.waiting_input = False
            if read_task in done:
                data = read_task.result()
                read_task = None
                if not data:
                    session.closing = True
                    return "BAD Connection closed"
                session.commands.feed(data)
            if hub_task is not None and hub_task in done:
                event = hub_task.result()
                hub_task = None
                if session.selected is not None and (session.selected.concerns(event, session) or session.drain_hub()):
                    await session.selected.sync(session, allow_expunge=True)
            if not done and time.monotonic() - last_output >= IDLE_KEEPALIVE:
                if session.selected is not None:
                    await session.selected.sync(session, allow_expunge=True)
                if not session.out:
                    session.untagged("OK Still here")
            if session.out:
                last_output = time.monotonic()
                await session.flush()
    finally:
        for task in (read_task, hub_task):
            if task is not None and not task.done():
                task.cancel()
        if read_task is not None and read_task.done() and not read_task.cancelled():
            # Bytes read after DONE belong to the next commands.
            if read_task.exception() is None and read_task.result():
                session.commands.feed(read_task.result())
