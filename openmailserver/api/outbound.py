"""Outbound records and the queue: `/v1/outbound`, `/v1/queue`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..core import queue as core_queue
from ..errors import not_found
from ..store import queue
from .base import ok, principal, runtime
from .send import public_outbound


async def list_outbound(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    rows = await runtime(request).adb.read(queue.list_outbound, None if who.is_admin else who.mailbox_id)
    return ok([public_outbound(r) for r in rows])


async def get_outbound(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    row = await runtime(request).adb.read(queue.get_outbound, request.path_params["outbound_id"])
    if row is None or (not who.is_admin and row["mailbox_id"] != who.mailbox_id):
        raise not_found("outbound message")
    return ok(public_outbound(row))


def _queue_entry(row: dict) -> dict:
    return {"id": row["id"], "state": row["state"], "queue_id": row["queue_id"], "message_id": row["message_id"],
            "error": row["last_error"], "created_at": row["submitted_at"], "outbound_id": row["outbound_id"],
            "recipient": row["recipient"], "attempts": row["attempts"], "next_attempt_at": row["next_attempt_at"]}


async def list_queue(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    rows = await runtime(request).adb.read(queue.list_queue, None if who.is_admin else who.mailbox_id)
    return ok([_queue_entry(r) for r in rows])


async def queue_action(request: Request) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    action = request.path_params.get("action", "delete")
    ident = request.path_params["queue_id"]
    if request.method == "DELETE":
        data = await rt.run(core_queue.delete, rt.settings, rt.db, ident)
    elif action in ("retry", "hold", "release"):
        data = await rt.run(getattr(core_queue, action), rt.db, ident)
    else:
        raise not_found(f"queue action {action}")
    rt.wake_queue()
    return ok({**public_outbound(data), "recipients_state": [
        {"id": r["id"], "recipient": r["recipient"], "state": r["state"], "attempts": r["attempts"],
         "error": r["last_error"]} for r in data["recipients_state"]]})
