"""`POST /v1/mail/send`: compose and submit through `core.submit()`, idempotently."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..address import parse_address
from ..core import recipients
from ..core.accounts import Principal
from ..core.submit import sender_denied, submit
from ..errors import MailError
from ..mime.compose import compose
from ..store import accounts, idempotency
from .base import json_body, ok, principal, runtime

MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$", re.I)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 §3.6.8 ftext
_RESERVED_HEADERS = {"from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to", "mime-version",
                     "content-type", "content-transfer-encoding", "dkim-signature", "received", "return-path"}


def invalid(field: str, message: str) -> MailError:
    return MailError("invalid_request", f"{field}: {message}", http_status=422)


def public_outbound(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "sender": row["sender"], "recipients": row["recipients"], "subject": row["subject"],
            "state": row["state"], "message_id": row["message_id"], "queue_id": row["queue_id"],
            "thread_id": row["thread_id"], "error": row["error"], "created_at": row["created_at"],
            "sent_at": row["sent_at"]}


def _addresses(body: dict, field: str, required: bool = False) -> list[str]:
    value = body.get(field)
    if value is None or value == "" or value == []:
        if required:
            raise invalid(field, "at least one address is required")
        return []
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise invalid(field, "must be an address or a list of addresses")
    out = []
    for item in items:
        parsed = parse_address(item)
        out.append(f"{parsed.local}@{parsed.domain}")
    return out


def _text(body: dict, field: str, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if len(value) > limit:
        raise invalid(field, f"is longer than {limit} characters")
    return value


def _attachments(items: Any) -> list[dict]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise invalid("attachments", "must be a list")
    out, total = [], 0
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise invalid(f"attachments[{n}]", "must be an object")
        filename, ctype, content = item.get("filename"), item.get("content_type", "application/octet-stream"), \
            item.get("content")
        if not isinstance(filename, str) or not filename.strip() or any(c in filename for c in "\r\n\0/\\"):
            raise invalid(f"attachments[{n}].filename", "must be a plain file name")
        if not isinstance(ctype, str) or not _CONTENT_TYPE.match(ctype):
            raise invalid(f"attachments[{n}].content_type", "must be a MIME type like application/pdf")
        if isinstance(content, (bytes, bytearray)):
            data = bytes(content)
        elif isinstance(content, str):
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise invalid(f"attachments[{n}].content", "must be base64") from None
        else:
            raise invalid(f"attachments[{n}].content", "must be base64 text")
        total += len(data)
        if total > MAX_ATTACHMENT_BYTES:
            raise MailError("payload_too_large", "attachments exceed 25 MiB in total", http_status=413)
        out.append({"filename": filename.strip(), "content_type": ctype.lower(), "content": data})
    return out


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("headers", "must be an object of header names to values")
    out = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            raise invalid("headers", f"{name!r} cannot be set")
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            raise invalid("headers", f"the value of {name} must be one line of text")
        out[name] = text
    return out


async def _read_body(request: Request, limit: int) -> tuple[dict, list[dict]]:
    """JSON, or multipart/form-data whose files become attachments."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        body = await json_body(request, limit=limit)
        return body, _attachments(body.get("attachments"))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise MailError("payload_too_large", f"the body is larger than {limit} bytes", http_status=413)
    try:
        form = await request.form(max_files=100, max_fields=1000)
    except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors
        raise MailError("invalid_form", f"cannot read the form: {exc}", http_status=400) from None
    body: dict[str, Any] = {}
    files = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append({"filename": value.filename or "attachment",
                          "content_type": value.content_type or "application/octet-stream",
                          "content": await value.read()})
        elif name in ("recipients", "to", "cc", "bcc", "reply_to"):
            body.setdefault(name, []).extend(v.strip() for v in value.split(",") if v.strip())
        else:
            body[name] = value
    return body, _attachments(files)


async def _sending_mailbox(request: Request, who: Principal, sender: str) -> dict:
    """The mailbox that sends: the key's own, or for the admin the one `sender` delivers to."""
    rt = runtime(request)
    if who.mailbox_id:
        return await rt.adb.read(accounts.get_mailbox_by_id, who.mailbox_id)
    resolution = await rt.adb.read(recipients.resolve, parse_address(sender))
    if len(resolution.mailboxes) != 1:
        raise sender_denied(sender)
    return resolution.mailboxes[0]


def _request_hash(body: dict, attachments: list[dict]) -> str:
    digest = hashlib.sha256(json.dumps({k: v for k, v in body.items() if k != "attachments"},
                                       sort_keys=True, default=str).encode())
    for item in attachments:
        digest.update(item["filename"].encode() + b"\0" + hashlib.sha256(item["content"]).digest())
    return digest.hexdigest()


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255:
        raise MailError("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters", http_status=400)
    return key


async def send(request: Request) -> JSONResponse:
    who = await principal(request, "mail:send")
    rt = runtime(request)
    body, attachments = await _read_body(request, limit=rt.settings.message_size_limit * 2)
    key = idempotency_key(request)
    owner = who.mailbox_id or f"admin:{who.key_id}"
    request_hash = _request_hash(body, attachments)
    if key is not None:
        previous = await rt.adb.read(idempotency.lookup, owner, key)
        if previous is not None:
            if previous["request_hash"] != request_hash:
                raise MailError("idempotency_conflict", "this Idempotency-Key was used with a different request",
                                http_status=409)
            return JSONResponse(previous["response"], status_code=previous["status"],
                                headers={"Idempotent-Replayed": "true"})
        if (owner, key) in rt.idempotency_in_flight:
            raise MailError("idempotency_in_progress", "a request with this Idempotency-Key is in progress",
                            http_status=409, retry_after=1)
    sender = body.get("sender")
    if not isinstance(sender, str) or not sender:
        raise invalid("sender", "is required")
    to = _addresses(body, "recipients", required=True)
    cc, bcc, reply_to = _addresses(body, "cc"), _addresses(body, "bcc"), _addresses(body, "reply_to")
    subject = _text(body, "subject", 998) or ""
    text, html = _text(body, "text_body", 1_000_000), _text(body, "html_body", 2_000_000)
    if text is None and html is None:
        raise invalid("text_body", "give text_body, html_body or both")
    sender_address = parse_address(sender)
    mailbox = await _sending_mailbox(request, who, sender)
    raw = compose(sender=f"{sender_address.local}@{sender_address.domain}", to=to, cc=cc, subject=subject,
                  text=text, html=html, reply_to=reply_to, headers=_headers(body.get("headers")),
                  attachments=attachments, sender_name=mailbox["display_name"])
    response: dict[str, Any] = {}

    def record(conn, outbound: dict) -> None:
        response.update(public_outbound(outbound))
        if key is not None:
            idempotency.store(conn, owner, key, request_hash, 200, response)

    if key is not None:
        rt.idempotency_in_flight.add((owner, key))
    try:
        client = f"api {request.client.host if request.client else 'unknown'}"
        await submit(rt, mailbox=mailbox, envelope_from=f"{sender_address.local}@{sender_address.domain}",
                     to=to + cc + bcc, raw=raw, client=client, record=record)
    finally:
        if key is not None:
            rt.idempotency_in_flight.discard((owner, key))
    return ok(response)
