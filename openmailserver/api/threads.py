"""Threads: `/v1/mailboxes/{address}/threads`, `/v1/threads/{id}`."""

from __future__ import annotations

import base64
import binascii
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import mime
from ..core import accounts as core
from ..core.labels import delete_thread as remove
from ..core.views import read_raw
from ..errors import ErrorCode, MailError, not_found
from ..store import accounts, messages
from .base import ok, principal, runtime


def _cursor(raw: str | None) -> tuple[str, str] | None:
    if not raw:
        return None
    try:
        when, thread_id = json.loads(base64.urlsafe_b64decode(raw.encode()))
        return str(when), str(thread_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise MailError(ErrorCode.INVALID_CURSOR, "cursor is not one this server handed out") from None


def _encode_cursor(row: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps([row["last_message_at"], row["id"]]).encode()).decode()


def _summary(row: dict) -> dict:
    return {"id": row["id"], "subject": row["subject"], "message_count": row["message_count"],
            "created_at": row["created_at"], "last_message_at": row["last_message_at"]}


async def list_threads(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    rt = runtime(request)
    mailbox = await rt.run(core.get_mailbox, rt.db, request.path_params["address"])
    if not who.is_admin and mailbox["id"] != who.mailbox_id:
        raise not_found(f"mailbox {mailbox['address']}")
    limit = request.query_params.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= 200:
        raise MailError(ErrorCode.INVALID_LIMIT, "limit must be an integer from 1 to 200")
    rows = await rt.adb.read(messages.list_threads, mailbox["id"], int(limit) + 1,
                             _cursor(request.query_params.get("cursor")))
    page = rows[: int(limit)]
    return ok({"threads": [_summary(r) for r in page],
               "next_cursor": _encode_cursor(page[-1]) if len(rows) > int(limit) else None})


async def visible_thread(request: Request) -> dict:
    who = await principal(request, "mail:read")
    thread = await runtime(request).adb.read(messages.get_thread, request.path_params["thread_id"])
    if thread is None or (not who.is_admin and thread["mailbox_id"] != who.mailbox_id):
        raise not_found("thread")
    return thread


async def get_thread(request: Request) -> JSONResponse:
    thread = await visible_thread(request)
    rt = runtime(request)
    mailbox = await rt.adb.read(accounts.get_mailbox_by_id, thread["mailbox_id"])
    items = []
    for row in await rt.adb.read(messages.thread_messages, thread["id"]):
        try:
            raw = await read_raw(rt, row, mailbox)
        except FileNotFoundError:
            continue
        text, html = await rt.run(mime.bodies, raw)
        if text is None and html is not None:
            text = await rt.run(mime.html_to_text, html)
        items.append({"id": row["id"], "direction": row["direction"], "from": row["from_addr"],
                      "to": row["to_addrs"], "subject": row["subject"], "message_id": row["message_id"],
                      "folder": row["folder"], "text": text or "", "extracted_text": mime.extract_new_text(text or ""),
                      "created_at": row["created_at"]})
    return ok({**_summary(thread), "mailbox": mailbox["address"], "messages": items})


async def delete_thread(request: Request) -> Response:
    """`DELETE /v1/threads/{id}`: the thread and every message in it (as IMAP \\Deleted + EXPUNGE)."""
    thread = await visible_thread(request)
    rt = runtime(request)
    mailbox = await rt.adb.read(accounts.get_mailbox_by_id, thread["mailbox_id"])
    await remove(rt, mailbox, thread["id"])
    return Response(status_code=204)
