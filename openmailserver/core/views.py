"""What agents see: messages with their body text and attachments, and events around them."""

from __future__ import annotations

from email.utils import getaddresses
from typing import Any
from urllib.parse import quote

from .. import mime
from ..store import accounts, maildir, messages, queue


async def read_raw(rt: Any, row: dict[str, Any], mailbox: dict[str, Any]) -> bytes:
    root = maildir.mailbox_root(rt.settings.mail_root, mailbox["domain"], mailbox["local_part"])
    return await rt.run(maildir.read_message, maildir.folder_dir(root, row["folder"]), row["filename"])


def attachment_url(base: str, message_id: str, attachment: dict[str, Any], names: list[str]) -> str:
    """`/v1/attachments/{message}/{filename}` (by index when two attachments share a name)."""
    if names.count(attachment["filename"]) == 1:
        return f"{base}/v1/attachments/{message_id}/{quote(attachment['filename'], safe='')}"
    return f"{base}/v1/messages/{message_id}/attachments/{attachment['index']}"


def header_addresses(raw: bytes, name: str) -> list[str]:
    """The bare addresses of one header field (e.g. Cc) of a message."""
    values = mime.parse_headers(raw).get_all(name) or []
    return [addr for _, addr in getaddresses([mime.decode_text(v) for v in values]) if addr]


async def agent_view(rt: Any, row: dict[str, Any]) -> dict[str, Any] | None:
    """The `message` object of events (OpenMail's quickstart and integration guide): id, rfc_message_id, from, to, cc, subject,
    body_text, attachments, received_at, and more."""
    mailbox = await rt.adb.read(accounts.get_mailbox_by_id, row["mailbox_id"])
    if mailbox is None:
        return None
    try:
        raw = await read_raw(rt, row, mailbox)
    except FileNotFoundError:
        return None
    text, html = await rt.run(mime.bodies, raw)
    if text is None and html is not None:
        text = await rt.run(mime.html_to_text, html)
    found = await rt.run(mime.attachments_with_text, raw)
    names = [a["filename"] for a in found]
    base = rt.settings.api_base_url
    attachments = [{"filename": a["filename"], "contentType": a["content_type"], "sizeBytes": a["size"],
                    "url": attachment_url(base, row["id"], a, names), "parsedText": a["parsed_text"],
                    "extractionMethod": a["extraction_method"]} for a in found]
    to = mime.format_addresses(mime.parse_headers(raw).get_all("To") or [])
    return {"id": row["id"], "rfc_message_id": f"<{row['message_id']}>" if row["message_id"] else None,
            "from": row["from_addr"], "to": to, "cc": header_addresses(raw, "Cc"), "subject": row["subject"],
            "message_id": row["message_id"], "thread_id": row["thread_id"], "direction": row["direction"],
            "body_text": text or "", "body_html": html, "extracted_text": mime.extract_new_text(text or ""),
            "attachments": attachments, "received_at": row["created_at"]}


async def message_for_event(rt: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    message_id = payload.get("message_id")
    if message_id is None and payload.get("outbound_id"):
        outbound = await rt.adb.read(queue.get_outbound, payload["outbound_id"])
        message_id = outbound["sent_copy_id"] if outbound else None
    if message_id is None:
        return None
    row = await rt.adb.read(messages.get_message, message_id)
    return await agent_view(rt, row) if row else None


async def render_event(rt: Any, event: dict[str, Any]) -> dict[str, Any]:
    """An event as agents receive it (WebSocket, SSE, webhooks, `GET /v1/events`): OpenMail's
    shape — `event`, `event_id`, `inbox_id`, `thread_id`, `message{...}` — plus `seq`,
    `occurred_at` and the event's own `data`."""
    payload = event.get("payload") or {}
    body: dict[str, Any] = {
        "event": event["type"], "event_id": event["event_id"], "seq": event["seq"],
        "occurred_at": event["occurred_at"], "inbox_id": event.get("mailbox_id"),
        "thread_id": payload.get("thread_id"), "data": payload,
    }
    if event.get("mailbox_id"):
        mailbox = await rt.adb.read(accounts.get_mailbox_by_id, event["mailbox_id"])
        body["external_id"] = mailbox.get("external_id") if mailbox else None
    if event["type"].startswith("message."):
        message = await message_for_event(rt, payload)
        if message is not None:
            body["message"] = message
            body["thread_id"] = body["thread_id"] or message.get("thread_id")
    return body
