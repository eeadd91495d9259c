"""Reading mail: `/v1/mailboxes/{address}/messages`, `/v1/messages/{id}`, `/v1/messages/{id}/raw`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import mime
from ..address import parse_mailbox_address
from ..core import accounts as core
from ..core import labels
from ..core.views import read_raw
from ..errors import ErrorCode, MailError, not_found
from ..store import accounts, messages
from .base import json_body, ok, principal, runtime

MAX_LIMIT = 500


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "subject": row["subject"], "from": row["from_addr"], "to": row["to_addrs"],
        "date": row["date_header"], "message_id": row["message_id"], "thread_id": row["thread_id"],
        "folder": row["folder"], "flags": row["flags"].split(), "size": row["size"],
        "direction": row["direction"], "created_at": row["created_at"],
    }


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise MailError(ErrorCode.INVALID_LIMIT, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


async def list_messages(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    rt = runtime(request)
    mailbox = await rt.run(core.get_mailbox, rt.db, request.path_params["address"])
    if not who.is_admin and mailbox["id"] != who.mailbox_id:
        raise not_found(f"mailbox {mailbox['address']}")
    params = request.query_params
    label = params.get("label")
    # Every folder when asked (`all`) or when filtering by label; else INBOX.
    folder = params.get("folder", "all" if label else "INBOX")
    rows = await rt.adb.read(messages.list_messages, mailbox["id"], None if folder == "all" else folder,
                             _limit(request), params.get("before"), label)
    items = [_summary(r) for r in rows]
    if params.get("unread", "").lower() in ("1", "true", "yes"):
        items = [m for m in items if "\\Seen" not in m["flags"]]
    return ok(items)


async def visible_message(request: Request, scope: str = "mail:read") -> tuple[dict[str, Any], dict[str, Any]]:
    """The message and its mailbox, or 404 when the caller may not see it."""
    who = await principal(request, scope)
    rt = runtime(request)
    row = await rt.adb.read(messages.get_message, request.path_params["message_id"])
    address = request.query_params.get("address")
    if address is not None:
        address = str(parse_mailbox_address(address))  # 422 for `../../x@y` and friends
    if row is None:
        raise not_found("message")
    mailbox = await rt.adb.read(accounts.get_mailbox_by_id, row["mailbox_id"])
    if (not who.is_admin and row["mailbox_id"] != who.mailbox_id) or (
            address is not None and mailbox["address"] != address):
        raise not_found("message")
    return row, mailbox


async def message_bytes(request: Request, row: dict, mailbox: dict) -> bytes:
    try:
        return await read_raw(runtime(request), row, mailbox)
    except FileNotFoundError:
        raise not_found("message file") from None


async def get_message(request: Request) -> JSONResponse:
    row, mailbox = await visible_message(request)
    raw = await message_bytes(request, row, mailbox)
    rt = runtime(request)
    text, html = await rt.run(mime.bodies, raw)
    plain = text if text is not None else (await rt.run(mime.html_to_text, html) if html is not None else "")
    attachments = [{**a, "url": f"/v1/messages/{row['id']}/attachments/{a['index']}"}
                   for a in await rt.run(mime.attachments_with_text, raw)]
    return ok({**_summary(row), "address": mailbox["address"], "body": plain, "text": plain, "html": html,
               "extracted_text": mime.extract_new_text(plain), "attachments": attachments,
               "attachment_limits": {"parse_max_bytes": mime.PARSE_MAX_BYTES,
                                     "parsed_text_max_chars": mime.PARSED_TEXT_MAX_CHARS},
               "authentication_results": row["auth_results"], "spf": row["spf"], "dkim": row["dkim"],
               "dmarc": row["dmarc"]})


async def get_attachment(request: Request) -> Response:
    row, mailbox = await visible_message(request)
    index = request.path_params["index"]
    if not index.isdigit():
        raise MailError(ErrorCode.INVALID_REQUEST, "the attachment index must be a number")
    found = await runtime(request).run(mime.attachment_data, await message_bytes(request, row, mailbox), int(index))
    if found is None:
        raise not_found("attachment")
    return attachment_response(*found)


def attachment_response(meta: dict[str, Any], data: bytes) -> Response:
    """An attachment's bytes as a download (never rendered inline by a browser)."""
    name = "".join(c for c in meta["filename"] if c.isprintable() and c not in '"\\/') or "attachment"
    ascii_name = "".join(c for c in name if " " <= c <= "~") or "attachment"  # header values are Latin-1
    return Response(data, media_type=meta["contentType"], headers={
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff"})


async def get_raw(request: Request) -> Response:
    row, mailbox = await visible_message(request)
    return Response(await message_bytes(request, row, mailbox), media_type="message/rfc822")


async def update_message(request: Request) -> JSONResponse:
    """`PATCH /v1/messages/{id}`: flags (`add_flags`/`remove_flags`, or `seen`/`flagged` booleans),
    a move (`folder`) and custom labels (`add_labels`/`remove_labels`, IMAP keywords)."""
    row, mailbox = await visible_message(request)
    body = await json_body(request)
    add, remove = labels.check_labels(body.get("add_labels"), "add_labels"), \
        labels.check_labels(body.get("remove_labels"), "remove_labels")
    add_flags = labels.check_flags(body.get("add_flags"), "add_flags")
    remove_flags = labels.check_flags(body.get("remove_flags"), "remove_flags")
    for field, flag in (("seen", "\\Seen"), ("flagged", "\\Flagged")):
        if field in body:
            if not isinstance(body[field], bool):
                raise MailError(ErrorCode.INVALID_REQUEST, f"{field} must be true or false")
            (add_flags if body[field] else remove_flags).append(flag)
    folder = body.get("folder")
    if folder is not None and (not isinstance(folder, str) or not folder):
        raise MailError(ErrorCode.INVALID_REQUEST, "folder must be a folder name")
    rt = runtime(request)
    if add_flags or remove_flags or folder is not None:
        await labels.update_message(rt, mailbox, row["id"], add_flags=add_flags, remove_flags=remove_flags,
                                    folder=folder)
    if add or remove:
        await labels.set_labels(rt, mailbox, row["id"], add=add, remove=remove)
    row = await rt.adb.read(messages.get_message, row["id"])
    if row is None:
        raise not_found("message")
    return ok({**_summary(row), "labels": labels.custom_labels(row), "system_labels": labels.system_labels(row)})


async def delete_message(request: Request) -> JSONResponse:
    """`DELETE /v1/messages/{id}`: to Trash; `?permanent=true` (or a message already in Trash) removes it."""
    row, mailbox = await visible_message(request)
    permanent = request.query_params.get("permanent", "false").lower() in ("1", "true", "yes")
    outcome = await labels.delete_message(runtime(request), mailbox, row["id"], permanent)
    return ok({"id": row["id"], "result": outcome})
