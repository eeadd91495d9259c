"""The OpenMail-style dialect: `/v1/inboxes`, `/v1/threads/{id}/messages`, `/v1/attachments/…`.

Agents written for the hosted OpenMail API work against this server with only
the base URL and key changed. Every endpoint is a translation onto the same
core as the native API: inbox = mailbox, send = `core.submit` (idempotent,
in the send transaction), threads and events from the shared index. Events
reach agents through the shared WebSocket `/v1/ws` and webhooks, whose payload
already has the OpenMail shape (`core.views.render_event`).

Inboxes made here live on a domain this server hosts: the primary domain, or
`domain` when given — an unknown domain is refused (add it with `/v1/domains`);
the native `POST /v1/mailboxes` keeps adding new domains on the fly.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import mime
from ..core import accounts as core
from ..core import replies
from ..core.submit import submit
from ..core.views import attachment_url, header_addresses
from ..errors import ErrorCode, MailError, not_found
from ..mime.compose import compose
from ..store import accounts, messages
from . import compat
from .base import json_body, ok, principal, runtime
from .messages import attachment_response, message_bytes, visible_message
from .send import Idempotency, _read_body, addresses_field, client_of, request_hash_of, thread_parent, threading_headers
from .threads import visible_thread

MAX_SUBJECT, MAX_BODY, MAX_BODY_HTML = 998, 100_000, 500_000


def bad_request(field: str, message: str) -> MailError:
    # OpenMail's send contract answers 400 for a field it cannot use.
    return MailError(ErrorCode.INVALID_REQUEST, f"{field}: {message}").answered_with(400)


def inbox_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "address": row["address"], "externalId": row["external_id"],
            "displayName": row["display_name"] or None, "createdAt": row["created_at"]}


# ---- inboxes -----------------------------------------------------------------

async def create_inbox(request: Request) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    body = await json_body(request)
    username = body.get("username") if body.get("username") is not None else body.get("mailboxName")
    if body.get("username") is not None and body.get("mailboxName") is not None \
            and body["username"] != body["mailboxName"]:
        raise MailError(ErrorCode.INVALID_REQUEST, "give username or mailboxName, not two different names")
    result = await compat.create_inbox(rt, username, body.get("domain"),
                                       display_name=compat.optional_text(body, "displayName", 200) or "",
                                       external_id=compat.optional_text(body, "externalId", 255))
    # The mailbox password (IMAP/SMTP) and an API key limited to this inbox are shown this once.
    return ok({**inbox_json(result["mailbox"]), "apiKey": result["api_key"], "password": result["password"]},
              status=201)


async def list_inboxes(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    limit = compat.bounded_int(request, "limit", 50, 1, 100)
    offset = compat.bounded_int(request, "offset", 0, 0, 10_000_000)
    external_id = request.query_params.get("externalId")
    rows, total = await runtime(request).adb.read(accounts.page_mailboxes, limit, offset,
                                                  None if who.is_admin else who.mailbox_id, external_id)
    return ok({"data": [inbox_json(r) for r in rows], "total": total, "limit": limit, "offset": offset})


async def get_inbox(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    return ok(inbox_json(mailbox))


async def delete_inbox(request: Request) -> Response:
    _, mailbox = await compat.own_inbox(request, "admin")
    rt = runtime(request)
    await rt.run(core.delete_mailbox, rt.settings, rt.db, mailbox["address"])
    return Response(status_code=204)


# ---- send --------------------------------------------------------------------

def _send_response(outbound: dict) -> dict[str, Any]:
    return {"messageId": outbound["sent_copy_id"], "threadId": outbound["thread_id"],
            "providerMessageId": outbound["id"], "status": compat.send_status(outbound["state"])}


def _required_text(body: dict, field: str, limit: int) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise bad_request(field, "is required (a non-empty string)")
    if len(value) > limit:
        raise bad_request(field, f"is longer than {limit} characters")
    return value


def _addresses(body: dict, field: str, required: bool = False) -> list[str]:
    try:
        return addresses_field(body, field, required=required)
    except MailError as exc:  # the OpenMail API answers 400 for a bad address
        raise exc.answered_with(400) from None


def _flag(body: dict, field: str, default: bool) -> bool:
    value = body.get(field, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):  # multipart form fields
        value = value.lower() == "true"
    if not isinstance(value, bool):
        raise bad_request(field, "must be true or false")
    return value


async def send(request: Request) -> JSONResponse:
    who, mailbox = await compat.own_inbox(request, "mail:send")
    rt = runtime(request)
    if not request.headers.get("idempotency-key"):
        raise MailError(ErrorCode.MISSING_IDEMPOTENCY_KEY, "the Idempotency-Key header is required",
                        fix="send a fresh unique value (e.g. a UUID) per email, and the same one on retries")
    body, attachments = await _read_body(request, limit=rt.settings.message_size_limit * 2)
    guard = Idempotency(request, who, request_hash_of({**body, "_dialect": "openmail", "_inbox": mailbox["id"]},
                                                      attachments), render=_send_response)
    async with guard:
        replay = await guard.previous()
        if replay is not None:
            return replay
        to = _addresses(body, "to", required=True)
        cc, bcc, reply_to = _addresses(body, "cc"), _addresses(body, "bcc"), _addresses(body, "replyTo")
        subject = _required_text(body, "subject", MAX_SUBJECT)
        text = _required_text(body, "body", MAX_BODY)
        html = body.get("bodyHtml")
        if html is not None and (not isinstance(html, str) or len(html) > MAX_BODY_HTML):
            raise bad_request("bodyHtml", f"must be a string of at most {MAX_BODY_HTML} characters")
        if not html and compat.looks_like_html(text):
            html = text  # HTML in `body` is sent as HTML with a generated plain-text alternative
        if html and compat.looks_like_html(text):
            text = await rt.run(mime.html_to_text, text)
        threading: dict[str, Any] = {}
        if body.get("threadId") is not None:
            thread, last = await thread_parent(request, mailbox, body["threadId"])
            threading = threading_headers(thread, last)
            threading.pop("subject")
            if last is not None and _flag(body, "includeQuote", True):
                raw = await compat.raw_of(request, last, mailbox)
                text += await rt.run(replies.quoted, raw) if raw is not None else ""
        message = compose(sender=mailbox["address"], to=to, cc=cc, subject=subject, text=text, html=html or None,
                          reply_to=reply_to, attachments=attachments, sender_name=mailbox["display_name"],
                          **threading)
        await submit(rt, mailbox=mailbox, envelope_from=mailbox["address"], to=to + cc + bcc, raw=message,
                     client=client_of(request), record=guard.record)
    return ok(guard.response)


# ---- reading -----------------------------------------------------------------

async def message_json(request: Request, row: dict, mailbox: dict, state: str | None) -> dict[str, Any]:
    rt = runtime(request)
    raw = await compat.raw_of(request, row, mailbox)
    text, html = await rt.run(mime.bodies, raw) if raw is not None else (None, None)
    if text is None and html is not None:
        text = await rt.run(mime.html_to_text, html)
    found = await rt.run(mime.attachment_list, raw) if raw is not None else []
    names = [a["filename"] for a in found]
    base = rt.settings.api_base_url
    inbound = row["direction"] == "inbound"
    return {
        "id": row["id"], "inboxId": row["mailbox_id"], "threadId": row["thread_id"], "direction": row["direction"],
        "fromAddr": row["from_addr"],
        "toAddr": mime.format_addresses(mime.parse_headers(raw).get_all("To") or []) if raw else row["to_addrs"],
        "cc": header_addresses(raw, "Cc") if raw else [],
        "subject": row["subject"], "bodyText": text or "", "bodyHtml": html,
        "rfcMessageId": f"<{row['message_id']}>" if row["message_id"] else None,
        "attachments": [{"filename": a["filename"], "contentType": a["contentType"], "sizeBytes": a["sizeBytes"],
                         "url": attachment_url(base, row["id"], a, names)} for a in found],
        "status": "received" if inbound else compat.send_status(state),
        "createdAt": row["created_at"],
    }


async def list_messages(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    direction = request.query_params.get("direction") or None
    if direction not in (None, "inbound", "outbound"):
        raise MailError(ErrorCode.INVALID_REQUEST, "direction must be inbound or outbound")
    limit = compat.bounded_int(request, "limit", 20, 1, 100)
    offset = compat.bounded_int(request, "offset", 0, 0, 10_000_000)
    rows, total = await runtime(request).adb.read(messages.page_messages, mailbox["id"], limit, offset, direction)
    states = await compat.outbound_states(request, rows)
    data = [await message_json(request, r, mailbox, states.get(r["id"])) for r in rows]
    return ok({"data": data, "total": total, "limit": limit, "offset": offset})


def thread_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "inboxId": row["mailbox_id"], "subject": row["subject"],
            "messageCount": row["message_count"], "createdAt": row["created_at"],
            "lastMessageAt": row["last_message_at"]}


async def list_threads(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    limit = compat.bounded_int(request, "limit", 20, 1, 100)
    offset = compat.bounded_int(request, "offset", 0, 0, 10_000_000)
    rows, total = await runtime(request).adb.read(messages.page_threads, mailbox["id"], limit, offset)
    return ok({"data": [thread_json(r) for r in rows], "total": total, "limit": limit, "offset": offset})


async def thread_messages(request: Request) -> JSONResponse:
    thread = await visible_thread(request)
    rt = runtime(request)
    mailbox = await rt.adb.read(accounts.get_mailbox_by_id, thread["mailbox_id"])
    rows = await rt.adb.read(messages.thread_messages, thread["id"])
    states = await compat.outbound_states(request, rows)
    data = [await message_json(request, r, mailbox, states.get(r["id"])) for r in rows]
    return ok({"threadId": thread["id"], "subject": thread["subject"], "data": data})


async def attachment(request: Request) -> Response:
    row, mailbox = await visible_message(request)
    raw = await message_bytes(request, row, mailbox)
    rt = runtime(request)
    wanted = request.path_params["filename"]
    match = [a for a in await rt.run(mime.attachment_list, raw) if a["filename"] == wanted]
    found = await rt.run(mime.attachment_data, raw, match[0]["index"]) if match else None
    if found is None:
        raise not_found("attachment")
    return attachment_response(*found)
