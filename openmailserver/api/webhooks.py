"""Webhook endpoints: `/v1/webhooks`, their deliveries and replays."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core.accounts import Principal
from ..errors import ErrorCode, MailError, not_found
from ..store import webhooks as store
from ..webhooks import dispatcher as webhooks
from .base import json_body, ok, principal, runtime


def public(hook: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    out = {"id": hook["id"], "url": hook["url"], "event_types": hook["event_types"],
           "inbox_ids": hook["inbox_ids"], "enabled": hook["enabled"], "disabled_reason": hook["disabled_reason"],
           "created_at": hook["created_at"]}
    if secret is not None:
        out["secret"] = secret  # shown once, at creation or rotation
    return out


def _types(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MailError(ErrorCode.INVALID_REQUEST, "event_types must be a list of strings")
    unknown = sorted(set(value) - set(webhooks.EVENT_TYPES))
    if unknown:
        raise MailError(ErrorCode.INVALID_REQUEST, f"unknown event types: {', '.join(unknown)}",
                        fix=f"use any of {', '.join(webhooks.EVENT_TYPES)}")
    return list(dict.fromkeys(value))


def inbox_filter(who: Principal, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MailError(ErrorCode.INVALID_REQUEST, "inbox_ids must be a list of strings")
    if not who.is_admin and any(v != who.mailbox_id for v in value):
        raise not_found("inbox")
    return list(dict.fromkeys(value))


async def own_webhook(request: Request) -> tuple[Principal, dict]:
    """The webhook in the path, visible to the admin or its own mailbox's key only (else 404)."""
    who = await principal(request, "mail:read")
    hook = await runtime(request).adb.read(store.get, request.path_params["webhook_id"])
    if hook is None or (not who.is_admin and hook["mailbox_id"] != who.mailbox_id):
        raise not_found("webhook")
    return who, hook


async def create(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    rt = runtime(request)
    body = await json_body(request)
    url = await rt.run(webhooks.check_url, rt, body.get("url"))
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise MailError(ErrorCode.INVALID_REQUEST, "enabled must be true or false")
    secret = webhooks.new_secret()
    hook = await rt.adb.write(store.insert, mailbox_id=who.mailbox_id, url=url,
                              event_types=_types(body.get("event_types")),
                              inbox_ids=inbox_filter(who, body.get("inbox_ids")), enabled=enabled, secret=secret)
    return ok(public(hook, secret), status=201)


async def list_hooks(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    hooks = await runtime(request).adb.read(store.list_hooks, None if who.is_admin else who.mailbox_id)
    return ok([public(h) for h in hooks])


async def get_hook(request: Request) -> JSONResponse:
    _, hook = await own_webhook(request)
    return ok(public(hook))


async def update(request: Request) -> JSONResponse:
    who, hook = await own_webhook(request)
    rt = runtime(request)
    body = await json_body(request)
    changes: dict[str, Any] = {}
    if "url" in body:
        changes["url"] = await rt.run(webhooks.check_url, rt, body["url"])
    if "event_types" in body:
        changes["event_types"] = _types(body["event_types"])
    if "inbox_ids" in body:
        changes["inbox_ids"] = inbox_filter(who, body["inbox_ids"])
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise MailError(ErrorCode.INVALID_REQUEST, "enabled must be true or false")
        changes["enabled"] = body["enabled"]
        if body["enabled"]:
            changes.update(disabled_reason=None, failing_since=None)
    secret = None
    if body.get("rotate_secret") is True:
        # The old secret keeps signing (X-Signature-Previous) for 24 hours.
        secret = webhooks.new_secret()
        changes.update(secret=secret, old_secret=hook["secret"],
                       old_secret_expires_at=time.time() + webhooks.ROTATION_GRACE)
    updated = await rt.adb.write(store.update, hook["id"], **changes)
    return ok(public(updated, secret))


async def delete(request: Request) -> Response:
    _, hook = await own_webhook(request)
    await runtime(request).adb.write(store.delete, hook["id"])
    return Response(status_code=204)


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "event_id": row["event_id"], "event": row["event_type"], "seq": row["event_seq"],
            "state": row["state"], "attempts": row["attempts"], "last_status": row["last_status"],
            "last_error": row["last_error"], "created_at": row["created_at"], "delivered_at": row["delivered_at"],
            "attempt_log": row.get("attempt_log", [])}


async def deliveries(request: Request) -> JSONResponse:
    _, hook = await own_webhook(request)
    rows = await runtime(request).adb.read(store.list_deliveries, hook["id"])
    return ok([_delivery(r) for r in rows])


async def replay(request: Request) -> JSONResponse:
    _, hook = await own_webhook(request)
    rt = runtime(request)
    row = await rt.adb.read(store.get_delivery, request.path_params["delivery_id"])
    if row is None or row["webhook_id"] != hook["id"]:
        raise not_found("delivery")
    await rt.adb.write(store.replay, row["id"], time.time())
    rt.hub.publish({"type": "webhook.replay", "mailbox_id": hook["mailbox_id"]})  # wake the dispatcher
    return ok(_delivery(await rt.adb.read(store.get_delivery, row["id"])), status=202)
