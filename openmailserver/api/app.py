"""The Starlette application: routes and the JSON error handling of every endpoint."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from ..errors import ErrorCode, MailError, storage_exhausted, storage_full
from ..runtime import Runtime
from . import (
    agentmail,
    aliases,
    backups,
    debug,
    domains,
    events,
    health,
    mailboxes,
    messages,
    openapi,
    openmail,
    ops,
    outbound,
    replies,
    send,
    threads,
    webhooks,
)
from .base import error_response

log = logging.getLogger(__name__)


async def _mail_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MailError)
    return error_response(exc)


_HTTP_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 400: ErrorCode.BAD_REQUEST,
               413: ErrorCode.PAYLOAD_TOO_LARGE}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.HTTP_ERROR)
    message = exc.detail if isinstance(exc.detail, str) else code.wire
    if exc.status_code == 404:
        message = f"no endpoint at {request.url.path}"
    error = MailError(code, message).answered_with(exc.status_code)
    return JSONResponse(error.as_json(), status_code=error.http_status, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if storage_exhausted(exc):
        return error_response(storage_full())
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(MailError(ErrorCode.INTERNAL_ERROR, "the server failed to handle this request"))


def compat_routes() -> list[Route]:
    """Domains, and the drop-in dialects: OpenMail-style `/v1/inboxes…`, agentmail-style `/api/v0`."""
    am = agentmail
    return [
        Route("/v1/domains", domains.create, methods=["POST"]),
        Route("/v1/domains", domains.list_domains, methods=["GET"]),
        Route("/v1/domains/{domain}", domains.get_domain, methods=["GET"]),
        Route("/v1/domains/{domain}", domains.delete, methods=["DELETE"]),
        Route("/v1/domains/{domain}/verify", domains.verify, methods=["POST"]),
        Route("/v1/domains/{domain}/zone", domains.zone, methods=["GET"]),
        Route("/v1/inboxes", openmail.create_inbox, methods=["POST"]),
        Route("/v1/inboxes", openmail.list_inboxes, methods=["GET"]),
        Route("/v1/inboxes/{inbox_id}", openmail.get_inbox, methods=["GET"]),
        Route("/v1/inboxes/{inbox_id}", openmail.delete_inbox, methods=["DELETE"]),
        Route("/v1/inboxes/{inbox_id}/send", openmail.send, methods=["POST"]),
        Route("/v1/inboxes/{inbox_id}/messages", openmail.list_messages, methods=["GET"]),
        Route("/v1/inboxes/{inbox_id}/threads", openmail.list_threads, methods=["GET"]),
        Route("/v1/threads/{thread_id}/messages", openmail.thread_messages, methods=["GET"]),
        Route("/v1/attachments/{message_id}/{filename}", openmail.attachment, methods=["GET"]),
        Route("/api/v0/organizations", am.organization, methods=["GET"]),
        Route("/api/v0/inboxes", am.create_inbox, methods=["POST"]),
        Route("/api/v0/inboxes", am.list_inboxes, methods=["GET"]),
        Route("/api/v0/inboxes/{inbox_id}", am.get_inbox, methods=["GET"]),
        Route("/api/v0/inboxes/{inbox_id}", am.update_inbox, methods=["PATCH"]),
        Route("/api/v0/inboxes/{inbox_id}", am.delete_inbox, methods=["DELETE"]),
        Route("/api/v0/inboxes/{inbox_id}/messages/send", am.send, methods=["POST"]),
        Route("/api/v0/inboxes/{inbox_id}/messages", am.list_messages, methods=["GET"]),
        Route("/api/v0/inboxes/{inbox_id}/messages/{message_id}", am.get_message, methods=["GET"]),
        Route("/api/v0/inboxes/{inbox_id}/messages/{message_id}", am.update_message, methods=["PATCH"]),
        Route("/api/v0/inboxes/{inbox_id}/messages/{message_id}/reply", am.reply, methods=["POST"]),
        Route("/api/v0/inboxes/{inbox_id}/messages/{message_id}/reply-all", am.reply_all, methods=["POST"]),
        Route("/api/v0/inboxes/{inbox_id}/messages/{message_id}/forward", am.forward, methods=["POST"]),
        Route("/api/v0/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment_id}", am.attachment,
              methods=["GET"]),
        Route("/api/v0/downloads/{message_id}/{attachment_id}", am.download, methods=["GET"]),
        Route("/api/v0/inboxes/{inbox_id}/threads", am.list_threads, methods=["GET"]),
        Route("/api/v0/inboxes/{inbox_id}/threads/{thread_id}", am.get_thread, methods=["GET"]),
        Route("/api/v0/inboxes/{inbox_id}/threads/{thread_id}", am.delete_thread, methods=["DELETE"]),
        Route("/api/v0/domains", domains.v0_create, methods=["POST"]),
        Route("/api/v0/domains", domains.v0_list, methods=["GET"]),
        Route("/api/v0/domains/{domain}", domains.v0_get, methods=["GET"]),
        Route("/api/v0/domains/{domain}", domains.delete, methods=["DELETE"]),
        Route("/api/v0/domains/{domain}/verify", domains.v0_verify, methods=["POST"]),
        Route("/api/v0/domains/{domain}/zone", domains.zone, methods=["GET"]),
        Route("/api/v0/webhooks", am.create_webhook, methods=["POST"]),
        Route("/api/v0/webhooks", am.list_webhooks, methods=["GET"]),
        Route("/api/v0/webhooks/{webhook_id}", am.get_webhook, methods=["GET"]),
        Route("/api/v0/webhooks/{webhook_id}", am.update_webhook, methods=["PATCH"]),
        Route("/api/v0/webhooks/{webhook_id}", am.delete_webhook, methods=["DELETE"]),
        Route("/api/v0/api-keys", am.create_key, methods=["POST"]),
        Route("/api/v0/api-keys", am.list_keys, methods=["GET"]),
        Route("/api/v0/api-keys/{key_id}", am.delete_key, methods=["DELETE"]),
    ]


def create_app(rt: Runtime) -> Starlette:
    routes = [
        Route("/health", health.health, methods=["GET"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/.well-known/autoconfig/mail/config-v1.1.xml", ops.thunderbird, methods=["GET"]),
        Route("/mail/config-v1.1.xml", ops.thunderbird, methods=["GET"]),
        Route("/autodiscover/autodiscover.xml", ops.autodiscover, methods=["GET", "POST"]),
        Route("/Autodiscover/Autodiscover.xml", ops.autodiscover, methods=["GET", "POST"]),
        Route("/v1/mailboxes", mailboxes.create_mailbox, methods=["POST"]),
        Route("/v1/mailboxes", mailboxes.list_mailboxes, methods=["GET"]),
        Route("/v1/mailboxes/{address}", mailboxes.get_mailbox, methods=["GET"]),
        Route("/v1/mailboxes/{address}", mailboxes.update_mailbox, methods=["PATCH"]),
        Route("/v1/mailboxes/{address}", mailboxes.delete_mailbox, methods=["DELETE"]),
        Route("/v1/mailboxes/{address}/password", mailboxes.set_password, methods=["POST"]),
        Route("/v1/mailboxes/{address}/keys", mailboxes.create_key, methods=["POST"]),
        Route("/v1/mailboxes/{address}/messages", messages.list_messages, methods=["GET"]),
        Route("/v1/messages/{message_id}", messages.get_message, methods=["GET"]),
        Route("/v1/messages/{message_id}/raw", messages.get_raw, methods=["GET"]),
        Route("/v1/messages/{message_id}/attachments/{index}", messages.get_attachment, methods=["GET"]),
        Route("/v1/messages/{message_id}/reply", replies.reply, methods=["POST"]),
        Route("/v1/messages/{message_id}/reply-all", replies.reply_all, methods=["POST"]),
        Route("/v1/messages/{message_id}/forward", replies.forward, methods=["POST"]),
        Route("/v1/mailboxes/{address}/threads", threads.list_threads, methods=["GET"]),
        Route("/v1/threads/{thread_id}", threads.get_thread, methods=["GET"]),
        Route("/v1/keys", mailboxes.list_keys, methods=["GET"]),
        Route("/v1/keys/{key_id}", mailboxes.revoke_key, methods=["DELETE"]),
        Route("/v1/mail/send", send.send, methods=["POST"]),
        Route("/v1/outbound", outbound.list_outbound, methods=["GET"]),
        Route("/v1/outbound/{outbound_id}", outbound.get_outbound, methods=["GET"]),
        Route("/v1/queue", outbound.list_queue, methods=["GET"]),
        Route("/v1/queue/{queue_id}/{action}", outbound.queue_action, methods=["POST"]),
        Route("/v1/queue/{queue_id}", outbound.queue_action, methods=["DELETE"]),
        Route("/v1/debug/health", debug.debug_health, methods=["GET"]),
        Route("/v1/debug/config", debug.debug_config, methods=["GET"]),
        Route("/v1/debug/messages/{message_id}/trace", debug.trace, methods=["GET"]),
        Route("/v1/debug/deliverability/report", debug.deliverability, methods=["GET"]),
        Route("/v1/debug/logs", debug.logs, methods=["GET"]),
        Route("/v1/backup", backups.create_backup, methods=["POST"]),
        Route("/v1/backups", backups.list_backups, methods=["GET"]),
        Route("/v1/restore/validate", backups.validate, methods=["POST"]),
        Route("/v1/events", events.list_events, methods=["GET"]),
        Route("/v1/events/stream", events.sse, methods=["GET"]),
        WebSocketRoute("/v1/ws", events.websocket),
        Route("/v1/webhooks", webhooks.create, methods=["POST"]),
        Route("/v1/webhooks", webhooks.list_hooks, methods=["GET"]),
        Route("/v1/webhooks/{webhook_id}", webhooks.get_hook, methods=["GET"]),
        Route("/v1/webhooks/{webhook_id}", webhooks.update, methods=["PATCH"]),
        Route("/v1/webhooks/{webhook_id}", webhooks.delete, methods=["DELETE"]),
        Route("/v1/webhooks/{webhook_id}/deliveries", webhooks.deliveries, methods=["GET"]),
        Route("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", webhooks.replay, methods=["POST"]),
        Route("/v1/aliases", aliases.create_alias, methods=["POST"]),
        Route("/v1/aliases", aliases.list_aliases, methods=["GET"]),
        Route("/v1/aliases/{source}", aliases.delete_alias, methods=["DELETE"]),
        Route("/v1/messages/{message_id}", messages.update_message, methods=["PATCH"]),
        Route("/v1/messages/{message_id}", messages.delete_message, methods=["DELETE"]),
        Route("/v1/threads/{thread_id}", threads.delete_thread, methods=["DELETE"]),
        *compat_routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ops.Timing, metrics=rt.metrics, worker=rt.worker)],
        exception_handlers={MailError: _mail_error, HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.runtime = rt
    return app
