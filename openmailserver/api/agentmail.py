"""The agentmail-style dialect under `/api/v0` (Bearer auth, page/page_size paging).

A translation onto the core every other front door uses: an inbox is a
mailbox (its id is the mailbox id), sending is `core.submit` with the shared
idempotency guard, replies and forwards are the native ones (`respond_as`),
labels are IMAP keywords (`core.labels`), threads, webhooks and API keys are
the native rows. Organisation = this server.

Inboxes are created on the primary domain or on `domain` when the server hosts
it; an unknown domain is refused (add it with `POST /api/v0/domains`).
Attachments are served through signed, expiring download URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime, timezone
from email.utils import getaddresses
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import mime
from ..core import accounts as core
from ..core import labels as core_labels
from ..core.submit import submit
from ..errors import ErrorCode, MailError, not_found
from ..mime.compose import compose
from ..store import accounts, messages
from ..store import webhooks as hook_store
from ..util import iso, now_iso
from ..webhooks import dispatcher as webhooks
from . import compat
from .base import json_body, ok, principal, runtime
from .messages import attachment_response
from .replies import respond_as
from .send import Idempotency, _headers, addresses_field, attachments_field, client_of, request_hash_of, text_field
from .webhooks import inbox_filter, own_webhook

DOWNLOAD_TTL = 3600
EVENT_TYPES = tuple(webhooks.EVENT_TYPES) + ("message.complained", "message.rejected")


def _page(data: list, total: int, page: int, size: int) -> dict[str, Any]:
    return {"data": data, "total": total, "page": page, "page_size": size}


# ---- organisation ------------------------------------------------------------

async def organization(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    rt = runtime(request)
    stats = await rt.adb.read(accounts.organization_stats)
    name = rt.settings.mail_domain
    return ok({"org_id": "org_" + hashlib.sha256(name.encode()).hexdigest()[:12], "name": name,
               "inbox_count": stats["mailboxes"] if who.is_admin else 1, "inbox_limit": None,
               "domain_count": stats["domains"], "domain_limit": None,
               "created_at": stats["created_at"] or now_iso(), "updated_at": stats["updated_at"] or now_iso()})


# ---- inboxes -----------------------------------------------------------------

def inbox_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"inbox_id": row["id"], "email_address": row["address"], "username": row["local_part"],
            "domain": row["domain"], "display_name": row["display_name"] or None, "client_id": row["client_id"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


async def create_inbox(request: Request) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    body = await json_body(request)
    result = await compat.create_inbox(rt, body.get("username"), body.get("domain"),
                                       display_name=compat.optional_text(body, "display_name", 200) or "",
                                       client_id=compat.optional_text(body, "client_id", 255))
    return ok(inbox_json(result["mailbox"]), status=201)


async def list_inboxes(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    page, size = compat.paging(request)
    rows, total = await runtime(request).adb.read(accounts.page_mailboxes, size, (page - 1) * size,
                                                  None if who.is_admin else who.mailbox_id)
    return ok(_page([inbox_json(r) for r in rows], total, page, size))


async def get_inbox(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    return ok(inbox_json(mailbox))


async def update_inbox(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    rt = runtime(request)
    body = await json_body(request)
    display_name = compat.optional_text(body, "display_name", 200)
    if display_name is not None:
        mailbox = await rt.run(lambda: core.update_mailbox(rt.db, mailbox["address"], display_name=display_name))
    return ok(inbox_json(mailbox))


async def delete_inbox(request: Request) -> Response:
    _, mailbox = await compat.own_inbox(request, "admin")
    rt = runtime(request)
    await rt.run(core.delete_mailbox, rt.settings, rt.db, mailbox["address"])
    return Response(status_code=204)


# ---- messages ----------------------------------------------------------------

def _names(values: list[str]) -> list[str]:
    pairs = getaddresses([mime.decode_text(v) for v in values])
    return [f"{name} <{addr}>" if name else addr for name, addr in pairs if addr]


def _bracketed(ids: list[str]) -> list[str]:
    return [f"<{i}>" for i in ids]


async def message_json(request: Request, row: dict, mailbox: dict, state: str | None,
                       full: bool = False) -> dict[str, Any]:
    rt = runtime(request)
    raw = await compat.raw_of(request, row, mailbox) or b""
    headers = mime.parse_headers(raw)
    text, html = await rt.run(mime.bodies, raw)
    if text is None and html is not None:
        text = await rt.run(mime.html_to_text, html)
    cc = _names(headers.get_all("Cc") or [])
    out: dict[str, Any] = {
        "inbox_id": mailbox["id"], "thread_id": row["thread_id"], "message_id": row["id"],
        "direction": row["direction"], "labels": core_labels.custom_labels(row),
        "timestamp": row["created_at"], "from": row["from_addr"],
        "to": _names(headers.get_all("To") or []), "cc": cc or None, "subject": row["subject"],
        "preview": compat.preview(text), "size": row["size"],
    }
    if not full:
        return out
    found = await rt.run(mime.attachment_list, raw)
    reply_to = _names(headers.get_all("Reply-To") or [])
    out.update({
        "reply_to": reply_to or None, "bcc": None, "text": text, "html": html,
        "in_reply_to": f"<{row['in_reply_to']}>" if row["in_reply_to"] else None,
        "references": _bracketed(row["refs"].split()) if row["refs"] else None,
        "rfc_message_id": f"<{row['message_id']}>" if row["message_id"] else None,
        "headers": {name: mime.decode_text(value) for name, value in reversed(headers.items())},
        "system_labels": core_labels.system_labels(row, state),
        "status": "received" if row["direction"] == "inbound" else compat.send_status(state),
        "attachments": [_attachment_meta(a) for a in found],
        "created_at": row["created_at"], "updated_at": row["created_at"],
    })
    return out


def _attachment_meta(a: dict[str, Any]) -> dict[str, Any]:
    return {"attachment_id": f"att_{a['index']}", "filename": a["filename"], "size": a["sizeBytes"],
            "content_type": a["contentType"], "content_disposition": "attachment", "content_id": None}


async def _attachments(request: Request, body: dict) -> list[dict]:
    return attachments_field(await compat.resolve_attachment_urls(request, body.get("attachments")))


def _sent(outbound: dict) -> dict[str, Any]:
    return {"message_id": outbound["sent_copy_id"], "thread_id": outbound["thread_id"]}


def _label_sent_copy(rt, mailbox: dict, labels: list[str]):
    def also(conn, outbound: dict) -> None:
        if labels and outbound.get("sent_copy_id"):
            core_labels.apply_labels(conn, rt, mailbox, outbound["sent_copy_id"], add=labels)
    return also


async def send(request: Request) -> JSONResponse:
    who, mailbox = await compat.own_inbox(request, "mail:send")
    rt = runtime(request)
    body = await json_body(request, limit=rt.settings.message_size_limit * 2)
    attachments = await _attachments(request, body)
    guard = Idempotency(request, who, request_hash_of({**body, "_dialect": "agentmail", "_inbox": mailbox["id"]},
                                                      attachments), render=_sent)
    async with guard:
        replay = await guard.previous()
        if replay is not None:
            return replay
        to = addresses_field(body, "to", required=True)
        cc, bcc = addresses_field(body, "cc"), addresses_field(body, "bcc")
        reply_to = addresses_field(body, "reply_to")
        subject = text_field(body, "subject", 998) or ""
        text, html = text_field(body, "text", 1_000_000), text_field(body, "html", 2_000_000)
        if text is None and html is not None:
            text = await rt.run(mime.html_to_text, html)
        labels = core_labels.check_labels(body.get("labels"))
        message = compose(sender=mailbox["address"], to=to, cc=cc, subject=subject, text=text or "", html=html,
                          reply_to=reply_to, headers=_headers(body.get("headers")), attachments=attachments,
                          sender_name=mailbox["display_name"])
        also = _label_sent_copy(rt, mailbox, labels)

        def record(conn, outbound: dict) -> None:
            guard.record(conn, outbound)
            also(conn, outbound)

        await submit(rt, mailbox=mailbox, envelope_from=mailbox["address"], to=to + cc + bcc, raw=message,
                     client=client_of(request), record=record)
    return ok(guard.response)


async def list_messages(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    page, size = compat.paging(request)
    rows, total = await runtime(request).adb.read(messages.page_messages, mailbox["id"], size, (page - 1) * size)
    states = await compat.outbound_states(request, rows)
    return ok(_page([await message_json(request, r, mailbox, states.get(r["id"])) for r in rows], total, page,
                    size))


async def _full(request: Request, mailbox: dict, row: dict) -> dict[str, Any]:
    states = await compat.outbound_states(request, [row])
    return await message_json(request, row, mailbox, states.get(row["id"]), full=True)


async def get_message(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    row = await compat.inbox_message(request, mailbox, request.path_params["message_id"])
    return ok(await _full(request, mailbox, row))


async def update_message(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    rt = runtime(request)
    row = await compat.inbox_message(request, mailbox, request.path_params["message_id"])
    body = await json_body(request)
    if "labels" not in body:
        raise MailError(ErrorCode.INVALID_REQUEST, "labels is required (the message's complete list of labels)")
    await core_labels.set_labels(rt, mailbox, row["id"], replace=core_labels.check_labels(body["labels"]))
    return ok(await _full(request, mailbox, await compat.inbox_message(request, mailbox, row["id"])))


async def _respond(request: Request, kind: str) -> JSONResponse:
    who, mailbox = await compat.own_inbox(request, "mail:send")
    rt = runtime(request)
    body = await json_body(request, limit=rt.settings.message_size_limit * 2)
    attachments = await _attachments(request, body)
    labels = core_labels.check_labels(body.get("labels"))

    async def locate() -> tuple[dict, dict]:
        return await compat.inbox_message(request, mailbox, request.path_params["message_id"]), mailbox

    return await respond_as(request, who, kind, {**body, "_dialect": "agentmail"}, attachments, locate,
                            render=_sent, text_required=False, also=_label_sent_copy(rt, mailbox, labels))


async def reply(request: Request) -> JSONResponse:
    return await _respond(request, "reply")


async def reply_all(request: Request) -> JSONResponse:
    return await _respond(request, "reply-all")


async def forward(request: Request) -> JSONResponse:
    return await _respond(request, "forward")


# ---- attachments: metadata and signed, expiring download URLs ----------------

async def _signing_key(request: Request) -> bytes:
    rt = runtime(request)
    secret = await rt.adb.write(accounts.server_secret, "download_url", secrets.token_hex(32))
    return secret.encode()


def _signature(key: bytes, message_id: str, index: int, expires: int) -> str:
    return hmac.new(key, f"{message_id}:{index}:{expires}".encode(), hashlib.sha256).hexdigest()


def _index(attachment_id: str) -> int:
    number = attachment_id[4:] if attachment_id.startswith("att_") else ""
    if not number.isdigit() or len(number) > 6:
        raise not_found("attachment")
    return int(number)


async def attachment(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    rt = runtime(request)
    row = await compat.inbox_message(request, mailbox, request.path_params["message_id"])
    index = _index(request.path_params["attachment_id"])
    raw = await compat.raw_of(request, row, mailbox) or b""
    match = [a for a in await rt.run(mime.attachment_list, raw) if a["index"] == index]
    if not match:
        raise not_found("attachment")
    expires = int(time.time()) + DOWNLOAD_TTL
    signature = _signature(await _signing_key(request), row["id"], index, expires)
    url = (f"{rt.settings.api_base_url}/api/v0/downloads/{row['id']}/att_{index}"
           f"?expires={expires}&signature={signature}")
    return ok({**_attachment_meta(match[0]), "download_url": url,
               "expires_at": iso(datetime.fromtimestamp(expires, timezone.utc))})


async def download(request: Request) -> Response:
    """The pre-signed URL of `attachment`: no API key, valid until `expires`."""
    rt = runtime(request)
    message_id = request.path_params["message_id"]
    index = _index(request.path_params["attachment_id"])
    expires, signature = request.query_params.get("expires", ""), request.query_params.get("signature", "")
    if not expires.isdigit() or len(expires) > 12 or not signature:
        raise MailError(ErrorCode.INVALID_REQUEST, "expires and signature are required (use the download_url as given)")
    expected = _signature(await _signing_key(request), message_id, index, int(expires))
    if not hmac.compare_digest(expected, signature):
        raise MailError(ErrorCode.FORBIDDEN, "the download URL's signature is not valid")
    if int(expires) < time.time():
        raise MailError(ErrorCode.URL_EXPIRED, "the download URL has expired",
                        fix="ask for the attachment again to get a fresh download_url")
    row = await rt.adb.read(messages.get_message, message_id)
    mailbox = await rt.adb.read(accounts.get_mailbox_by_id, row["mailbox_id"]) if row else None
    raw = await compat.raw_of(request, row, mailbox) if mailbox else None
    found = await rt.run(mime.attachment_data, raw, index) if raw else None
    if found is None:
        raise not_found("attachment")
    return attachment_response(*found)


# ---- threads -----------------------------------------------------------------

async def _thread_summary(request: Request, mailbox: dict, thread: dict) -> dict[str, Any]:
    rt = runtime(request)
    rows = await rt.adb.read(messages.thread_messages, thread["id"])
    inbound = [r["created_at"] for r in rows if r["direction"] == "inbound"]
    outbound = [r["created_at"] for r in rows if r["direction"] == "outbound"]
    senders = list(dict.fromkeys(a for r in rows for _, a in getaddresses([r["from_addr"]]) if a))
    recipients = list(dict.fromkeys(a for r in rows for _, a in getaddresses([r["to_addrs"]]) if a))
    labels = list(dict.fromkeys(label for r in rows for label in core_labels.custom_labels(r)))
    last = rows[-1] if rows else None
    text = None
    if last is not None:
        raw = await compat.raw_of(request, last, mailbox)
        if raw is not None:
            plain, html = await rt.run(mime.bodies, raw)
            text = plain if plain is not None else (await rt.run(mime.html_to_text, html) if html else None)
    return {"inbox_id": mailbox["id"], "thread_id": thread["id"], "labels": labels,
            "timestamp": thread["last_message_at"], "received_timestamp": max(inbound) if inbound else None,
            "sent_timestamp": max(outbound) if outbound else None, "senders": senders, "recipients": recipients,
            "subject": thread["subject"], "preview": compat.preview(text),
            "last_message_id": last["id"] if last else None, "message_count": len(rows),
            "size": sum(r["size"] for r in rows), "created_at": thread["created_at"]}


async def _own_thread(request: Request, scope: str) -> tuple[dict, dict]:
    _, mailbox = await compat.own_inbox(request, scope)
    thread = await runtime(request).adb.read(messages.get_thread, request.path_params["thread_id"])
    if thread is None or thread["mailbox_id"] != mailbox["id"]:
        raise not_found("thread")
    return mailbox, thread


async def list_threads(request: Request) -> JSONResponse:
    _, mailbox = await compat.own_inbox(request, "mail:read")
    page, size = compat.paging(request)
    rows, total = await runtime(request).adb.read(messages.page_threads, mailbox["id"], size, (page - 1) * size)
    return ok(_page([await _thread_summary(request, mailbox, t) for t in rows], total, page, size))


async def get_thread(request: Request) -> JSONResponse:
    mailbox, thread = await _own_thread(request, "mail:read")
    rt = runtime(request)
    summary = await _thread_summary(request, mailbox, thread)
    items = []
    for row in await rt.adb.read(messages.thread_messages, thread["id"]):
        raw = await compat.raw_of(request, row, mailbox)
        if raw is None:
            continue
        text, html = await rt.run(mime.bodies, raw)
        if text is None and html is not None:
            text = await rt.run(mime.html_to_text, html)
        items.append({"message_id": row["id"], "direction": row["direction"], "from": row["from_addr"],
                      "to": _names(mime.parse_headers(raw).get_all("To") or []), "subject": row["subject"],
                      "text": text or "", "html": html, "labels": core_labels.custom_labels(row),
                      "timestamp": row["created_at"]})
    return ok({**summary, "message_count": len(items), "messages": items})


async def delete_thread(request: Request) -> Response:
    mailbox, thread = await _own_thread(request, "mail:read")
    await core_labels.delete_thread(runtime(request), mailbox, thread["id"])
    return Response(status_code=204)


# ---- webhooks ----------------------------------------------------------------

def webhook_json(hook: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    out = {"webhook_id": hook["id"], "url": hook["url"], "event_types": hook["event_types"],
           "inbox_ids": hook["inbox_ids"], "enabled": hook["enabled"], "client_id": hook.get("client_id"),
           "created_at": hook["created_at"], "updated_at": hook.get("updated_at") or hook["created_at"]}
    if secret is not None:
        out["secret"] = secret  # shown once
    return out


def _event_types(value: Any, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise MailError(ErrorCode.INVALID_REQUEST, "event_types must be a non-empty list of event names",
                        fix=f"use any of {', '.join(EVENT_TYPES)}")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise MailError(ErrorCode.INVALID_REQUEST, f"unknown event types: {', '.join(unknown)}",
                        fix=f"use any of {', '.join(EVENT_TYPES)}")
    return list(dict.fromkeys(value))


async def create_webhook(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    rt = runtime(request)
    body = await json_body(request)
    url = await rt.run(webhooks.check_url, rt, body.get("url"))
    types = _event_types(body.get("event_types"), required=True)
    client_id = compat.optional_text(body, "client_id", 255)
    secret = webhooks.new_secret()
    hook = await rt.adb.write(hook_store.insert, mailbox_id=who.mailbox_id, url=url, event_types=types,
                              inbox_ids=inbox_filter(who, body.get("inbox_ids")), enabled=True, secret=secret,
                              client_id=client_id)
    return ok(webhook_json(hook, secret), status=201)


async def list_webhooks(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    page, size = compat.paging(request)
    hooks = await runtime(request).adb.read(hook_store.list_hooks, None if who.is_admin else who.mailbox_id)
    return ok(_page([webhook_json(h) for h in hooks[(page - 1) * size: page * size]], len(hooks), page, size))


async def get_webhook(request: Request) -> JSONResponse:
    _, hook = await own_webhook(request)
    return ok(webhook_json(hook))


async def update_webhook(request: Request) -> JSONResponse:
    who, hook = await own_webhook(request)
    rt = runtime(request)
    body = await json_body(request)
    changes: dict[str, Any] = {"updated_at": now_iso()}
    if "url" in body:
        changes["url"] = await rt.run(webhooks.check_url, rt, body["url"])
    if "event_types" in body:
        changes["event_types"] = _event_types(body["event_types"], required=True)
    if "inbox_ids" in body:
        changes["inbox_ids"] = inbox_filter(who, body["inbox_ids"])
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise MailError(ErrorCode.INVALID_REQUEST, "enabled must be true or false")
        changes["enabled"] = body["enabled"]
        if body["enabled"]:
            changes.update(disabled_reason=None, failing_since=None)
    return ok(webhook_json(await rt.adb.write(hook_store.update, hook["id"], **changes)))


async def delete_webhook(request: Request) -> Response:
    _, hook = await own_webhook(request)
    await runtime(request).adb.write(hook_store.delete, hook["id"])
    return Response(status_code=204)


# ---- API keys ----------------------------------------------------------------

def key_json(row: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    out = {"key_id": row["id"], "name": row["name"], "prefix": row["prefix"] + "…", "inbox_id": row["mailbox_id"],
           "scopes": row["scopes"].split(), "used_at": row["last_used_at"], "created_at": row["created_at"]}
    if key is not None:
        out["key"] = key  # shown once; only its hash is stored
    return out


async def create_key(request: Request) -> JSONResponse:
    """An organisation-wide (admin) key, or with `inbox_id` (always, for a mailbox key) one for an inbox."""
    who = await principal(request, "mail:read")
    rt = runtime(request)
    body = await json_body(request)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise MailError(ErrorCode.INVALID_REQUEST, "name is required (a string of at most 200 characters)")
    inbox_id = body.get("inbox_id")
    if inbox_id is not None and not isinstance(inbox_id, str):
        raise MailError(ErrorCode.INVALID_REQUEST, "inbox_id must be a string")
    mailbox_id = None
    if inbox_id is not None or not who.is_admin:
        _, mailbox = await compat.own_inbox(request, "mail:read", inbox_id or who.mailbox_id)
        mailbox_id = mailbox["id"]
    key, row = await rt.run(lambda: core.create_key(rt.db, mailbox_id=mailbox_id, name=name.strip()))
    return ok(key_json(row, key), status=201)


async def list_keys(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    page, size = compat.paging(request)
    rows = [r for r in await runtime(request).adb.read(accounts.list_keys, None if who.is_admin else who.mailbox_id)
            if not r["revoked_at"]]
    return ok(_page([key_json(r) for r in rows[(page - 1) * size: page * size]], len(rows), page, size))


async def delete_key(request: Request) -> Response:
    who = await principal(request, "mail:read")
    rt = runtime(request)
    await rt.run(core.revoke_key, rt.settings, rt.db, request.path_params["key_id"],
                 None if who.is_admin else who.mailbox_id)
    return Response(status_code=204)
