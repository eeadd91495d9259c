"""Pieces shared by the compatibility dialects (`/v1/inboxes`, `/api/v0`).

An inbox is a mailbox: its id is the mailbox id (`mbx_…`). The admin key sees
every inbox (the whole organisation), a mailbox key only its own; any other
inbox is "not found", never "forbidden", so ids cannot be probed.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from starlette.requests import HTTPConnection, Request

from .. import mime
from ..core import accounts as core_accounts
from ..core.accounts import Principal
from ..core.views import read_raw
from ..errors import ErrorCode, MailError, not_found
from ..store import accounts, messages, queue
from ..webhooks import dispatcher as webhooks
from .base import principal, runtime

MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
URL_FETCH_TIMEOUT = 15.0
_HTML = re.compile(r"<(!doctype\s+html|html|head|body|p|div|br|hr|a|table|tr|td|h[1-6]|span|strong|em|b|i|u|"
                   r"ul|ol|li|img|blockquote|pre|code|font|center)(\s[^<>]*)?/?>", re.I)


async def own_inbox(request: HTTPConnection, scope: str, inbox_id: str | None = None) -> tuple[Principal, dict]:
    """The caller and the inbox named in the path (`inbox_id` or `id`), or 404."""
    who = await principal(request, scope)
    ident = inbox_id or request.path_params.get("inbox_id") or request.path_params.get("id")
    mailbox = await runtime(request).adb.read(accounts.get_mailbox_by_id, ident) if ident else None
    if mailbox is None or (not who.is_admin and mailbox["id"] != who.mailbox_id):
        raise not_found("inbox")
    return who, mailbox


async def inbox_message(request: Request, mailbox: dict, message_id: str) -> dict:
    row = await runtime(request).adb.read(messages.get_message, message_id)
    if row is None or row["mailbox_id"] != mailbox["id"]:
        raise not_found("message")
    return row


async def raw_of(request: Request, row: dict, mailbox: dict) -> bytes | None:
    try:
        return await read_raw(runtime(request), row, mailbox)
    except FileNotFoundError:  # removed by another client a moment ago
        return None


def optional_text(body: dict, field: str, limit: int) -> str | None:
    """An optional string field of a JSON body, at most `limit` characters."""
    value = body.get(field)
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise MailError(ErrorCode.INVALID_REQUEST, f"{field} must be a string of at most {limit} characters")
    return value


async def create_inbox(rt, username: Any, domain: Any, **details: Any) -> dict:
    """A new mailbox for the inbox-creating endpoints of both dialects: `username` (random when
    absent) at `domain` (the primary mail domain when absent); `core.create_mailbox`'s result."""
    if username is not None and (not isinstance(username, str) or not username.strip()):
        raise MailError(ErrorCode.INVALID_REQUEST, "username must be a non-empty string")
    local = username.strip() if username else core_accounts.random_local_part()
    domain = domain if domain is not None else rt.settings.mail_domain
    return await rt.run(lambda: core_accounts.create_mailbox(rt.settings, rt.db, local, domain, add_domain=False,
                                                             **details))


def looks_like_html(text: str) -> bool:
    return bool(_HTML.search(text))


def preview(text: str | None, limit: int = 200) -> str:
    words = " ".join(mime.extract_new_text(text or "").split())
    return words if len(words) <= limit else words[: limit - 1].rstrip() + "…"


async def outbound_states(request: Request, rows: list[dict]) -> dict[str, str]:
    ids = [r["id"] for r in rows if r["direction"] == "outbound"]
    return await runtime(request).adb.read(queue.states_of_sent_copies, ids) if ids else {}


def send_status(state: str | None) -> str:
    """An outbound state as the hosted APIs name it: pending, sent or failed."""
    if state in (None, "sent"):
        return "sent"
    if state in ("bounced", "failed"):
        return "failed"
    return "pending"


def paging(request: Request, default_size: int = 20) -> tuple[int, int]:
    """`page` (from 1) and `page_size` (1-100) query parameters."""
    params = request.query_params
    page, size = params.get("page", "1"), params.get("page_size", str(default_size))
    if not page.isdigit() or int(page) < 1 or int(page) > 1_000_000:
        raise MailError(ErrorCode.INVALID_REQUEST, "page must be a positive integer")
    if not size.isdigit() or not 1 <= int(size) <= 100:
        raise MailError(ErrorCode.INVALID_REQUEST, "page_size must be an integer from 1 to 100")
    return int(page), int(size)


def bounded_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name, str(default))
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise MailError(ErrorCode.INVALID_REQUEST, f"{name} must be an integer from {low} to {high}")
    return int(raw)


async def fetch_attachment(request: Request, url: Any, field: str) -> tuple[bytes, str | None]:
    """Download an attachment given by URL, through the SSRF guard of webhooks (no private or
    loopback addresses unless listed in `webhook_allowed_hosts`), without redirects, capped."""
    rt = runtime(request)
    if not isinstance(url, str) or len(url) > 2048:
        raise MailError(ErrorCode.INVALID_REQUEST, f"{field}.url must be a URL of at most 2048 characters")
    problem = await rt.run(webhooks.url_problem, url, tuple(h.lower() for h in rt.settings.webhook_allowed_hosts))
    if problem:
        raise MailError(ErrorCode.INVALID_ATTACHMENT_URL, f"{field}.url refused: {problem}")
    try:
        async with httpx.AsyncClient(timeout=URL_FETCH_TIMEOUT, follow_redirects=False) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise MailError(ErrorCode.ATTACHMENT_FETCH_FAILED, f"{field}.url answered HTTP {response.status_code}")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_ATTACHMENT_BYTES:
                        raise MailError(ErrorCode.PAYLOAD_TOO_LARGE, f"{field}.url is larger than 25 MiB")
                    chunks.append(chunk)
                ctype = response.headers.get("content-type", "").split(";")[0].strip().lower() or None
                return b"".join(chunks), ctype
    except httpx.HTTPError as exc:
        raise MailError(ErrorCode.ATTACHMENT_FETCH_FAILED, f"{field}.url could not be fetched: {type(exc).__name__}") from None


async def resolve_attachment_urls(request: Request, items: Any) -> Any:
    """Attachments given as `{"url": ...}` (no `content`) fetched into `content` bytes."""
    if not isinstance(items, list):
        return items
    out = []
    for n, item in enumerate(items):
        if isinstance(item, dict) and item.get("content") is None and item.get("url") is not None:
            data, ctype = await fetch_attachment(request, item["url"], f"attachments[{n}]")
            item = {**item, "content": data}
            if not item.get("content_type") and ctype:
                item["content_type"] = ctype
            item.pop("url")
        out.append(item)
    return out
