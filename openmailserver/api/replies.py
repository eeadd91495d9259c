"""`POST /v1/messages/{id}/reply`, `/reply-all` and `/forward`, idempotent like every send."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..core import replies
from ..core.accounts import Principal
from ..core.submit import allowed_senders, submit
from ..mime.compose import compose
from .. import mime
from .base import json_body, ok, principal, runtime
from .messages import message_bytes, visible_message
from .send import (Idempotency, addresses_field, attachments_field, client_of, invalid, public_outbound,
                   request_hash_of, text_field)


async def respond(request: Request, kind: str) -> JSONResponse:
    who = await principal(request, "mail:send")
    rt = runtime(request)
    body = await json_body(request, limit=rt.settings.message_size_limit * 2)
    return await respond_as(request, who, kind, body, attachments_field(body.get("attachments")),
                            lambda: visible_message(request, "mail:send"))


Locate = Callable[[], Awaitable[tuple[dict, dict]]]
Extra = Callable[[Any, dict], None]


async def respond_as(request: Request, who: Principal, kind: str, body: dict, attachments: list[dict],
                     locate: Locate, *, render: Callable[[dict], dict] = public_outbound, text_required: bool = True,
                     also: Extra | None = None) -> JSONResponse:
    """Reply, reply-all or forward `body` (text, html, cc, bcc, to, include_quote) to the message
    `locate()` finds. Each API dialect parses its own request and shapes its own response
    (`render`); `also(conn, outbound)` runs in the transaction that commits the send."""
    rt = runtime(request)
    guard = Idempotency(request, who, request_hash_of({**body, "_kind": kind,
                                                     "_message": request.path_params["message_id"]}, attachments),
                        render)
    async with guard:
        replay = await guard.previous()
        if replay is not None:
            return replay
        row, mailbox = await locate()
        raw = await message_bytes(request, row, mailbox)
        text, html = text_field(body, "text", 1_000_000), text_field(body, "html", 2_000_000)
        include_quote = body.get("include_quote", True)
        if not isinstance(include_quote, bool):
            raise invalid("include_quote", "must be true or false")
        extra_cc, bcc = addresses_field(body, "cc"), addresses_field(body, "bcc")
        fields: dict[str, Any] = {}
        if kind == "forward":
            to = addresses_field(body, "to", required=True)
            cc = extra_cc
            fields["subject"] = replies.forward_subject(row["subject"])
            appendix = await rt.run(replies.forwarded, raw)
            attachments = await rt.run(replies.original_attachments, raw) + attachments
        else:
            own = await rt.adb.read(allowed_senders, mailbox)
            draft = await rt.run(replies.reply, raw, own, kind == "reply-all", row["envelope_from"])
            to, cc = draft.to, draft.cc + [a for a in extra_cc if a not in draft.cc]
            fields.update(subject=draft.subject, in_reply_to=draft.in_reply_to, references=draft.references)
            appendix = await rt.run(replies.quoted, raw) if include_quote else ""
        if text is None and html is None:
            if text_required:
                raise invalid("text", "give text, html or both")
            text = ""
        plain = text if text is not None else await rt.run(mime.html_to_text, html)
        message = compose(sender=mailbox["address"], to=to, cc=cc, text=plain + appendix, html=html,
                          attachments=attachments, sender_name=mailbox["display_name"], **fields)

        def record(conn, outbound: dict) -> None:
            guard.record(conn, outbound)
            if also is not None:
                also(conn, outbound)

        await submit(rt, mailbox=mailbox, envelope_from=mailbox["address"], to=to + cc + bcc, raw=message,
                     client=client_of(request), record=record)
    return ok(guard.response)


async def reply(request: Request) -> JSONResponse:
    return await respond(request, "reply")


async def reply_all(request: Request) -> JSONResponse:
    return await respond(request, "reply-all")


async def forward(request: Request) -> JSONResponse:
    return await respond(request, "forward")
