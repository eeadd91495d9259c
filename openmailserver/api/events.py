"""The event log for agents: `GET /v1/events`, SSE `/v1/events/stream`, WebSocket `/v1/ws`.

Every stream replays the log after the client's last `seq` and then follows
it live, so a client that reconnects with the last `seq` it saw misses
nothing. Live events arrive through the in-process hub at once; a poll of the
log every second also picks up changes other processes (the CLI) committed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..core.accounts import Principal
from ..core.views import render_event
from ..errors import ErrorCode, MailError
from ..store import messages
from .base import ok, principal, runtime

PAGE = 200
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0


def _seq(value: Any, field: str = "after") -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not str(value).isdigit():
        raise MailError(ErrorCode.INVALID_REQUEST, f"{field} must be a non-negative integer (an event seq)")
    return int(value)


def _list(value: Any, field: str) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise MailError(ErrorCode.INVALID_REQUEST, f"{field} must be a list of strings")
    return [i.strip() for i in items if i.strip()]


class Filter:
    """Which events a caller may and wants to see."""

    def __init__(self, who: Principal, mailboxes: list[str] | None, types: list[str] | None) -> None:
        if not who.is_admin:
            if mailboxes and any(m != who.mailbox_id for m in mailboxes):
                raise MailError(ErrorCode.NOT_FOUND, "inbox not found")
            mailboxes = [who.mailbox_id]  # type: ignore[list-item]
        self.mailboxes = mailboxes
        self.types = types

    async def page(self, rt, after: int, limit: int = PAGE) -> list[dict]:
        return await rt.adb.read(messages.list_events, after, limit, self.mailboxes, self.types)


async def follow(rt, selection: Filter, after: int) -> AsyncIterator[dict[str, Any]]:
    """Rendered events after `after`: the backlog first, then live, forever, in `seq` order."""
    with rt.hub.subscribe(None) as live:
        last = after
        while True:
            rows = await selection.page(rt, last)
            for row in rows:
                last = row["seq"]
                yield await render_event(rt, row)
            if len(rows) == PAGE:
                continue
            try:
                await asyncio.wait_for(live.get(), timeout=POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
            while not live.empty():  # anything queued is in the log too; read it from there, in order
                live.get_nowait()


async def list_events(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    rt = runtime(request)
    params = request.query_params
    limit = _seq(params.get("limit") or PAGE, "limit")
    if not 1 <= limit <= 1000:
        raise MailError(ErrorCode.INVALID_LIMIT, "limit must be from 1 to 1000")
    selection = Filter(who, _list(params.get("mailbox") or params.get("inbox_id"), "mailbox"),
                       _list(params.get("types"), "types"))
    after = _seq(params.get("after"))
    rows = await selection.page(rt, after, limit)
    events = [await render_event(rt, row) for row in rows]
    return ok({"events": events, "next_after": events[-1]["seq"] if events else after})


async def _stop(pending: asyncio.Future, events) -> None:
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
    await events.aclose()


async def sse(request: Request) -> StreamingResponse:
    who = await principal(request, "mail:read", allow_query=True)
    rt = runtime(request)
    params = request.query_params
    selection = Filter(who, _list(params.get("mailbox") or params.get("inbox_id"), "mailbox"),
                       _list(params.get("types"), "types"))
    after = _seq(request.headers.get("last-event-id") or params.get("after"), "Last-Event-ID")

    async def stream() -> AsyncIterator[bytes]:
        events = follow(rt, selection, after).__aiter__()
        pending = asyncio.ensure_future(events.__anext__())
        try:
            yield b": openmailserver event stream\n\n"
            while True:
                done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_SECONDS)
                if not done:
                    yield b": keep-alive\n\n"  # comments keep proxies from closing an idle stream
                    continue
                event = pending.result()
                pending = asyncio.ensure_future(events.__anext__())
                yield (f"id: {event['seq']}\nevent: {event['event']}\n"
                       f"data: {json.dumps(event, separators=(',', ':'))}\n\n").encode()
        finally:
            await _stop(pending, events)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def websocket(ws: WebSocket) -> None:
    """`{"type":"subscribe","inbox_ids":[...],"event_types":[...],"after":seq?}`, then events."""
    try:
        who = await principal(ws, "mail:read", allow_query=True)
    except MailError as exc:
        await ws.close(code=4401 if exc.code is ErrorCode.UNAUTHORIZED else 4403, reason=exc.message)
        return
    await ws.accept()
    rt = ws.app.state.runtime
    try:
        request = await ws.receive_json()
        if not isinstance(request, dict) or request.get("type") != "subscribe":
            raise MailError(ErrorCode.INVALID_REQUEST, 'send {"type": "subscribe"} first')
        selection = Filter(who, _list(request.get("inbox_ids"), "inbox_ids"),
                           _list(request.get("event_types"), "event_types"))
        # Without `after` the stream starts now (live only), as the hosted APIs do; with it,
        # everything after that seq is replayed first.
        after = _seq(request["after"]) if request.get("after") is not None else \
            await rt.adb.read(messages.last_seq)
    except MailError as exc:
        await ws.send_json({"type": "error", **exc.as_json()})
        await ws.close(code=4400)
        return
    except (WebSocketDisconnect, ValueError):
        return
    await ws.send_json({"type": "subscribed", "inbox_ids": selection.mailboxes, "event_types": selection.types,
                        "after": after})
    events = follow(rt, selection, after).__aiter__()
    incoming = asyncio.ensure_future(ws.receive())
    pending = asyncio.ensure_future(events.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({incoming, pending}, return_when=asyncio.FIRST_COMPLETED)
            if incoming in done:
                message = incoming.result()
                if message["type"] == "websocket.disconnect":
                    return
                incoming = asyncio.ensure_future(ws.receive())  # pings and other chatter are ignored
            if pending in done:
                await ws.send_json(pending.result())
                pending = asyncio.ensure_future(events.__anext__())
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        incoming.cancel()
        await _stop(pending, events)
