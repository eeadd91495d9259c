"""`POST /v1/mail/send`: compose and submit through `core.submit()`, idempotently."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from typing import Any, Callable

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..address import parse_address
from ..core import recipients
from ..core.accounts import Principal
from ..core.replies import reply_subject
from ..core.submit import sender_denied, submit
from ..errors import ErrorCode, MailError, not_found
from ..mime.compose import compose
from ..store import accounts, idempotency, messages
from ..store.leases import holder_name
from .base import json_body, ok, principal, runtime

MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$", re.I)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 §3.6.8 ftext
_RESERVED_HEADERS = {"from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to", "mime-version",
                     "content-type", "content-transfer-encoding", "dkim-signature", "received", "return-path"}


def invalid(field: str, message: str) -> MailError:
    return MailError(ErrorCode.INVALID_REQUEST, f"{field}: {message}")


def public_outbound(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "sender": row["sender"], "recipients": row["recipients"], "subject": row["subject"],
            "state": row["state"], "message_id": row["message_id"], "queue_id": row["queue_id"],
            "thread_id": row["thread_id"], "error": row["error"], "created_at": row["created_at"],
            "sent_at": row["sent_at"]}


def addresses_field(body: dict, field: str, required: bool = False) -> list[str]:
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


def text_field(body: dict, field: str, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if len(value) > limit:
        raise invalid(field, f"is longer than {limit} characters")
    return value


def attachments_field(items: Any) -> list[dict]:
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
            raise MailError(ErrorCode.PAYLOAD_TOO_LARGE, "attachments exceed 25 MiB in total")
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
        return body, attachments_field(body.get("attachments"))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise MailError(ErrorCode.PAYLOAD_TOO_LARGE, f"the body is larger than {limit} bytes")
    try:
        form = await request.form(max_files=100, max_fields=1000)
    except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors
        raise MailError(ErrorCode.INVALID_FORM, f"cannot read the form: {exc}") from None
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
    return body, attachments_field(files)


async def _sending_mailbox(request: Request, who: Principal, sender: str) -> dict:
    """The mailbox that sends: the key's own, or for the admin the one `sender` delivers to."""
    rt = runtime(request)
    if who.mailbox_id:
        return await rt.adb.read(accounts.get_mailbox_by_id, who.mailbox_id)
    resolution = await rt.adb.read(recipients.resolve, parse_address(sender))
    if len(resolution.mailboxes) != 1:
        raise sender_denied(sender)
    return resolution.mailboxes[0]


def request_hash_of(body: dict, attachments: list[dict]) -> str:
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
        raise MailError(ErrorCode.INVALID_IDEMPOTENCY_KEY, "Idempotency-Key must be 1 to 255 characters")
    return key


class Idempotency:
    """`Idempotency-Key` for a sending request: replay, conflict, in-flight guard, crash-safe record.

    `previous()` reserves the key in the index before anything else happens
    (`store.idempotency.reserve`), so concurrent requests with one key, whichever
    worker or node they reach, send once: the others get 409 `idempotency_in_progress`
    while the first runs, and its stored answer after it committed. The answer is
    written in the transaction that commits the send (`record`), so after a crash
    either both exist or neither does. Use it as

        async with guard:
            replay = await guard.previous()   # reserves the key, or replays / 409s
            ...                               # validate, compose, submit(record=guard.record)

    Leaving the block gives up a reservation that did not lead to a send.
    """

    def __init__(self, request: Request, who: Principal, request_hash: str,
                 render: Callable[[dict], dict[str, Any]] = public_outbound) -> None:
        self.rt = runtime(request)
        self.key = idempotency_key(request)
        self.owner = who.mailbox_id or f"admin:{who.key_id}"  # keys are scoped to the key's owner
        self.request_hash = request_hash
        self.render = render  # the response body for the outbound row (each API dialect has its own)
        self.response: dict[str, Any] = {}
        self.holder = holder_name(os.getpid())
        self._held = False

    async def previous(self) -> JSONResponse | None:
        if self.key is None:
            return None
        state, stored = await self.rt.adb.write(idempotency.reserve, self.owner, self.key, self.request_hash,
                                                self.holder)
        if stored is not None and stored["request_hash"] != self.request_hash:
            raise MailError(ErrorCode.IDEMPOTENCY_CONFLICT, "this Idempotency-Key was used with a different request")
        if state == "pending":
            raise MailError(ErrorCode.IDEMPOTENCY_IN_PROGRESS, "a request with this Idempotency-Key is in progress",
                            retry_after=1)
        if state == "done":
            assert stored is not None
            return JSONResponse(stored["response"], status_code=stored["status"],
                                headers={"Idempotent-Replayed": "true"})
        self._held = True
        return None

    def record(self, conn, outbound: dict) -> None:
        self.response.update(self.render(outbound))
        if self.key is not None:
            idempotency.store(conn, self.owner, self.key, self.request_hash, 200, self.response)
            self._held = False

    async def __aenter__(self) -> "Idempotency":
        return self

    async def __aexit__(self, *exc) -> None:
        if self._held:
            self._held = False
            await self.rt.adb.write(idempotency.release, self.owner, self.key, self.holder)


async def thread_parent(request: Request, mailbox: dict, thread_id: Any) -> tuple[dict, dict | None]:
    """The mailbox's thread and its newest message with a Message-ID (None when it has none); 404 else."""
    rt = runtime(request)
    thread = await rt.adb.read(messages.get_thread, thread_id) if isinstance(thread_id, str) else None
    if thread is None or thread["mailbox_id"] != mailbox["id"]:
        raise not_found("thread")
    rows = [r for r in await rt.adb.read(messages.thread_messages, thread["id"]) if r["message_id"]]
    return thread, (rows[-1] if rows else None)


def threading_headers(thread: dict, last: dict | None) -> dict[str, Any]:
    """Reply to the newest message of the thread (RFC 5322 §3.6.4 threading headers)."""
    if last is None:
        return {"subject": thread["subject"]}
    return {"subject": last["subject"], "in_reply_to": last["message_id"],
            "references": (last["refs"].split() if last["refs"] else []) + [last["message_id"]]}


async def _thread_headers(request: Request, mailbox: dict, thread_id: Any) -> dict[str, Any]:
    return threading_headers(*await thread_parent(request, mailbox, thread_id))


def client_of(request: Request) -> str:
    return f"api {request.client.host if request.client else 'unknown'}"


async def send(request: Request) -> JSONResponse:
    who = await principal(request, "mail:send")
    rt = runtime(request)
    body, attachments = await _read_body(request, limit=rt.settings.message_size_limit * 2)
    guard = Idempotency(request, who, request_hash_of(body, attachments))
    async with guard:
        replay = await guard.previous()
        return replay if replay is not None else await _send(request, who, body, attachments, guard)


async def _send(request: Request, who: Principal, body: dict, attachments: list[dict],
                guard: Idempotency) -> JSONResponse:
    rt = runtime(request)
    sender = body.get("sender")
    if not isinstance(sender, str) or not sender:
        raise invalid("sender", "is required")
    to = addresses_field(body, "recipients", required=True)
    cc, bcc, reply_to = addresses_field(body, "cc"), addresses_field(body, "bcc"), addresses_field(body, "reply_to")
    subject = text_field(body, "subject", 998) or ""
    text, html = text_field(body, "text_body", 1_000_000), text_field(body, "html_body", 2_000_000)
    if text is None and html is None:
        raise invalid("text_body", "give text_body, html_body or both")
    sender_address = parse_address(sender)
    mailbox = await _sending_mailbox(request, who, sender)
    threading: dict[str, Any] = {}
    if body.get("thread_id") is not None:
        threading = await _thread_headers(request, mailbox, body["thread_id"])
        thread_subject = threading.pop("subject")
        subject = subject or reply_subject(thread_subject)
    raw = compose(sender=f"{sender_address.local}@{sender_address.domain}", to=to, cc=cc, subject=subject,
                  text=text, html=html, reply_to=reply_to, headers=_headers(body.get("headers")),
                  attachments=attachments, sender_name=mailbox["display_name"], **threading)
    await submit(rt, mailbox=mailbox, envelope_from=f"{sender_address.local}@{sender_address.domain}",
                 to=to + cc + bcc, raw=raw, client=client_of(request), record=guard.record)
    return ok(guard.response)
