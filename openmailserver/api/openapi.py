"""`GET /openapi.json`: the OpenAPI 3.1 description of every endpoint.

`OPERATIONS` is the single table of what each route accepts and returns; a
test checks that it names exactly the routes the application serves.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .. import __version__

S = dict[str, Any]


def _nullable(kind: str) -> S:
    return {"type": [kind, "null"]}


def _obj(required: list[str], **properties: S) -> S:
    return {"type": "object", "required": required, "properties": properties}


def _ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(item: S) -> S:
    return {"type": "array", "items": item}


STRING, INTEGER, BOOLEAN, NUMBER = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
ADDRESS_LIST: S = {"oneOf": [{"type": "string"}, _array(STRING)]}
OBJECT: S = {"type": "object"}

SCHEMAS: dict[str, S] = {
    "Error": _obj(["error", "message"], error=STRING, message=STRING, fix=STRING),
    "Mailbox": _obj(["id", "email", "quota", "active"], id=STRING, email=STRING, display_name=STRING,
                    quota=INTEGER, used_bytes=INTEGER, active=BOOLEAN, created_at=STRING),
    "NewKey": _obj(["id", "key", "scopes"], id=STRING, key=STRING, prefix=STRING, scopes=_array(STRING),
                   mailbox=STRING),
    "MailboxCreated": _obj(["mailbox", "password", "api_key"], mailbox=_ref("Mailbox"), password=STRING,
                           api_key=_ref("NewKey")),
    "Key": _obj(["id", "prefix", "scopes"], id=STRING, prefix=STRING, name=STRING, mailbox=_nullable("string"),
                scopes=_array(STRING), created_at=STRING, revoked_at=_nullable("string"),
                last_used_at=_nullable("string")),
    "Alias": _obj(["id", "source", "destination"], id=STRING, source=STRING, destination=STRING,
                  created_at=STRING),
    "MessageSummary": _obj(["id", "subject", "from", "to", "date"], id=STRING, subject=STRING,
                           **{"from": STRING}, to=STRING, date=_nullable("string"),
                           message_id=_nullable("string"), thread_id=_nullable("string"), folder=STRING,
                           flags=_array(STRING), size=INTEGER, direction=STRING, created_at=STRING),
    "Message": {"allOf": [_ref("MessageSummary"), _obj(
        ["body"], address=STRING, body=STRING, text=_nullable("string"), html=_nullable("string"),
        extracted_text=STRING, attachments=_array(OBJECT), attachment_limits=OBJECT,
        authentication_results=_nullable("string"), spf=_nullable("string"), dkim=_nullable("string"),
        dmarc=_nullable("string"))]},
    "Outbound": _obj(["id", "sender", "recipients", "subject", "state", "message_id", "queue_id", "error",
                      "created_at", "sent_at"],
                     id=STRING, sender=STRING, recipients=_array(STRING), subject=STRING,
                     state={"enum": ["queued", "sent", "deferred", "bounced", "failed", "held"]},
                     message_id=_nullable("string"), queue_id=STRING, thread_id=_nullable("string"),
                     error=_nullable("string"), created_at=STRING, sent_at=_nullable("string")),
    "QueueEntry": _obj(["id", "state", "queue_id", "message_id", "error", "created_at"], id=STRING, state=STRING,
                       queue_id=STRING, message_id=_nullable("string"), error=_nullable("string"),
                       created_at=STRING, outbound_id=STRING, recipient=STRING, attempts=INTEGER,
                       next_attempt_at=NUMBER),
    "SendRequest": _obj(["sender", "recipients"], sender=STRING, recipients=ADDRESS_LIST, subject=STRING,
                        thread_id=STRING,
                        text_body=STRING, html_body=STRING, cc=ADDRESS_LIST, bcc=ADDRESS_LIST,
                        reply_to=ADDRESS_LIST, headers={"type": "object", "additionalProperties": STRING},
                        attachments=_array(_obj(["filename", "content"], filename=STRING, content_type=STRING,
                                                content={"type": "string", "contentEncoding": "base64"}))),
    "Event": _obj(["event", "event_id", "seq", "occurred_at"], event=STRING, event_id=STRING, seq=INTEGER,
                  occurred_at=STRING, inbox_id=_nullable("string"), thread_id=_nullable("string"), data=OBJECT,
                  message=OBJECT),
    "Webhook": _obj(["id", "url", "event_types", "inbox_ids", "enabled"], id=STRING, url=STRING,
                    event_types=_array(STRING), inbox_ids=_array(STRING), enabled=BOOLEAN,
                    disabled_reason=_nullable("string"), created_at=STRING, secret=STRING),
    "ReplyRequest": _obj([], text=STRING, html=STRING, cc=ADDRESS_LIST, bcc=ADDRESS_LIST, include_quote=BOOLEAN,
                         attachments=_array(OBJECT)),
    "Health": _obj(["status"], status={"enum": ["ok", "fail"]}, database=OBJECT, disk=OBJECT, listeners=OBJECT,
                   certificate=OBJECT),
    "Backup": _obj(["path", "encrypted"], path=STRING, encrypted=BOOLEAN, size=INTEGER, files=INTEGER,
                   created_at=STRING),
    "BackupListing": _obj(["path", "name", "size"], path=STRING, name=STRING, size=INTEGER, created_at=STRING),
    "Validation": _obj(["status", "details"], status={"enum": ["ok", "invalid"]}, details=OBJECT),
    "Trace": _obj(["status", "message_id", "queue_id", "error", "events"], status=STRING, direction=STRING,
                  id=STRING, message_id=_nullable("string"), queue_id=_nullable("string"),
                  error=_nullable("string"), events=_array(OBJECT)),
}

XML = "application/xml"
ADDRESS = {"name": "address", "in": "path", "required": True, "schema": STRING}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "minLength": 1, "maxLength": 255}}


def _path_param(name: str) -> S:
    return {"name": name, "in": "path", "required": True, "schema": STRING}


def _query(name: str, schema: S = STRING) -> S:
    return {"name": name, "in": "query", "required": False, "schema": schema}


# (method, path, summary, scope or None, parameters, request body schema, (status, response schema), errors)
OPERATIONS: list[tuple[str, str, str, str | None, list[S], S | None, tuple[int, S | str | None], list[int]]] = [
    ("get", "/health", "Checks of the database, disk, every listener and the TLS certificate "
     "(warn 14 days before expiry)", None, [], None, (200, _ref("Health")), [503]),
    ("get", "/openapi.json", "This document", None, [], None, (200, OBJECT), []),
    ("get", "/metrics", "Prometheus metrics", None, [], None, (200, "text/plain"), []),
    ("get", "/.well-known/autoconfig/mail/config-v1.1.xml", "Thunderbird autoconfig", None, [], None,
     (200, XML), []),
    ("get", "/mail/config-v1.1.xml", "Thunderbird autoconfig (legacy path)", None, [], None, (200, XML), []),
    ("get", "/autodiscover/autodiscover.xml", "Microsoft autodiscover", None, [], None, (200, XML), []),
    ("post", "/autodiscover/autodiscover.xml", "Microsoft autodiscover", None, [], None, (200, XML), []),
    ("get", "/Autodiscover/Autodiscover.xml", "Microsoft autodiscover (Outlook's spelling)", None, [], None,
     (200, XML), []),
    ("post", "/Autodiscover/Autodiscover.xml", "Microsoft autodiscover (Outlook's spelling)", None, [], None,
     (200, XML), []),
    ("post", "/v1/mailboxes", "Create a mailbox (and its domain when new)", "admin", [],
     _obj(["local_part", "domain"], local_part=STRING, domain=STRING, password=STRING, quota=INTEGER,
          display_name=STRING), (201, _ref("MailboxCreated")), [400, 409, 413, 422]),
    ("get", "/v1/mailboxes", "List mailboxes", "admin", [], None, (200, _array(_ref("Mailbox"))), []),
    ("get", "/v1/mailboxes/{address}", "One mailbox", "mail:read", [ADDRESS], None, (200, _ref("Mailbox")),
     [404, 422]),
    ("patch", "/v1/mailboxes/{address}", "Change quota, display name or active", "admin", [ADDRESS],
     _obj([], quota=INTEGER, display_name=STRING, active=BOOLEAN), (200, _ref("Mailbox")), [400, 404, 422]),
    ("delete", "/v1/mailboxes/{address}", "Delete a mailbox", "admin", [ADDRESS], None, (204, None), [404, 422]),
    ("post", "/v1/mailboxes/{address}/password", "Set (or generate) the mailbox password", "mail:read",
     [ADDRESS], _obj([], password=STRING), (200, _obj(["email", "password"], email=STRING, password=STRING)),
     [400, 404, 422]),
    ("post", "/v1/mailboxes/{address}/keys", "Create a mailbox API key", "mail:read", [ADDRESS],
     _obj([], name=STRING), (201, _ref("NewKey")), [400, 404, 422]),
    ("get", "/v1/mailboxes/{address}/messages", "Messages of a folder, newest first", "mail:read",
     [ADDRESS, _query("folder"), _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
      _query("before"), _query("unread", BOOLEAN)], None, (200, _array(_ref("MessageSummary"))), [404, 422]),
    ("get", "/v1/keys", "API keys (the admin sees all, a mailbox key its own)", "mail:read", [], None,
     (200, _array(_ref("Key"))), []),
    ("delete", "/v1/keys/{key_id}", "Revoke an API key", "mail:read", [_path_param("key_id")], None,
     (204, None), [404, 409]),
    ("get", "/v1/messages/{message_id}", "One message with its body", "mail:read",
     [_path_param("message_id"), _query("address")], None, (200, _ref("Message")), [404, 422]),
    ("get", "/v1/messages/{message_id}/raw", "The message as RFC 5322 text", "mail:read",
     [_path_param("message_id"), _query("address")], None, (200, "message/rfc822"), [404, 422]),
    ("get", "/v1/messages/{message_id}/attachments/{index}", "An attachment's content", "mail:read",
     [_path_param("message_id"), _path_param("index"), _query("address")], None, (200, "*/*"), [404, 422]),
    ("post", "/v1/messages/{message_id}/reply", "Reply to the sender (threaded, quoted)", "mail:send",
     [_path_param("message_id"), IDEMPOTENCY], _ref("ReplyRequest"), (200, _ref("Outbound")),
     [400, 404, 409, 413, 422, 429]),
    ("post", "/v1/messages/{message_id}/reply-all", "Reply to the sender and every recipient", "mail:send",
     [_path_param("message_id"), IDEMPOTENCY], _ref("ReplyRequest"), (200, _ref("Outbound")),
     [400, 404, 409, 413, 422, 429]),
    ("post", "/v1/messages/{message_id}/forward", "Forward with the original attachments (new thread)",
     "mail:send", [_path_param("message_id"), IDEMPOTENCY],
     {"allOf": [_ref("ReplyRequest"), _obj(["to"], to=ADDRESS_LIST)]}, (200, _ref("Outbound")),
     [400, 404, 409, 413, 422, 429]),
    ("get", "/v1/mailboxes/{address}/threads", "Threads by newest activity (cursor paging)", "mail:read",
     [ADDRESS, _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}), _query("cursor")], None,
     (200, _obj(["threads", "next_cursor"], threads=_array(OBJECT), next_cursor=_nullable("string"))),
     [404, 422]),
    ("get", "/v1/threads/{thread_id}", "A thread's messages in order, both directions", "mail:read",
     [_path_param("thread_id")], None, (200, _obj(["id", "messages"], id=STRING, messages=_array(OBJECT))),
     [404]),
    ("post", "/v1/mail/send", "Send a message (optional Idempotency-Key header)", "mail:send",
     [IDEMPOTENCY], _ref("SendRequest"), (200, _ref("Outbound")), [400, 403, 409, 413, 422, 429]),
    ("get", "/v1/outbound", "Sent messages and their delivery state", "mail:read", [], None,
     (200, _array(_ref("Outbound"))), []),
    ("get", "/v1/outbound/{outbound_id}", "One sent message", "mail:read", [_path_param("outbound_id")], None,
     (200, _ref("Outbound")), [404]),
    ("get", "/v1/queue", "Queue entries, one per remote recipient", "mail:read", [], None,
     (200, _array(_ref("QueueEntry"))), []),
    ("post", "/v1/queue/{queue_id}/{action}", "retry, hold or release a queued message", "admin",
     [_path_param("queue_id"), {"name": "action", "in": "path", "required": True,
                                "schema": {"enum": ["retry", "hold", "release"]}}], None,
     (200, _ref("Outbound")), [404, 409]),
    ("delete", "/v1/queue/{queue_id}", "Remove a message's undelivered recipients", "admin",
     [_path_param("queue_id")], None, (200, _ref("Outbound")), [404]),
    ("get", "/v1/debug/health", "Health in depth: queue, DNS, certificate", "debug:read", [], None,
     (200, _ref("Health")), [404, 503]),
    ("get", "/v1/debug/config", "Effective settings, secrets redacted", "debug:read", [], None, (200, OBJECT),
     [404]),
    ("get", "/v1/debug/messages/{message_id}/trace", "Every delivery attempt, or the inbound checks",
     "debug:read", [_path_param("message_id")], None, (200, _ref("Trace")), [404]),
    ("get", "/v1/debug/deliverability/report", "Live DNS checks for every domain", "debug:read", [], None,
     (200, _obj(["domains"], hostname=STRING, generated_at=STRING, domains=_array(OBJECT))), [404]),
    ("get", "/v1/debug/logs", "The newest log entries", "debug:read",
     [_query("level", {"enum": ["debug", "info", "warning", "error", "critical"]}),
      _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000})], None,
     (200, _obj(["entries", "count"], entries=_array(OBJECT), count=INTEGER)), [404, 422]),
    ("post", "/v1/backup", "Write an encrypted backup", "admin", [], None, (201, _ref("Backup")), [409]),
    ("get", "/v1/backups", "Backups on the server", "admin", [], None, (200, _array(_ref("BackupListing"))), []),
    ("post", "/v1/restore/validate", "Decrypt a backup and check its manifest", "admin", [_query("path")],
     None, (200, _ref("Validation")), [409, 422]),
    ("get", "/v1/events", "The event log after a seq (WebSocket: /v1/ws)", "mail:read",
     [_query("after", {"type": "integer", "minimum": 0}), _query("types"), _query("mailbox"),
      _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000})], None,
     (200, _obj(["events", "next_after"], events=_array(_ref("Event")), next_after=INTEGER)), [422]),
    ("get", "/v1/events/stream", "Server-sent events: the log after Last-Event-ID, then live", "mail:read",
     [_query("types"), _query("mailbox"), {"name": "Last-Event-ID", "in": "header", "required": False,
                                           "schema": STRING}], None, (200, "text/event-stream"), [422]),
    ("post", "/v1/webhooks", "Register a webhook (the secret is shown once)", "mail:read", [],
     _obj(["url"], url=STRING, event_types=_array(STRING), inbox_ids=_array(STRING), enabled=BOOLEAN),
     (201, _ref("Webhook")), [400, 422]),
    ("get", "/v1/webhooks", "Webhooks", "mail:read", [], None, (200, _array(_ref("Webhook"))), []),
    ("get", "/v1/webhooks/{webhook_id}", "One webhook", "mail:read", [_path_param("webhook_id")], None,
     (200, _ref("Webhook")), [404]),
    ("patch", "/v1/webhooks/{webhook_id}", "Change a webhook; rotate_secret keeps the old one for 24 h",
     "mail:read", [_path_param("webhook_id")],
     _obj([], url=STRING, event_types=_array(STRING), inbox_ids=_array(STRING), enabled=BOOLEAN,
          rotate_secret=BOOLEAN), (200, _ref("Webhook")), [400, 404, 422]),
    ("delete", "/v1/webhooks/{webhook_id}", "Delete a webhook", "mail:read", [_path_param("webhook_id")], None,
     (204, None), [404]),
    ("get", "/v1/webhooks/{webhook_id}/deliveries", "Deliveries and every attempt", "mail:read",
     [_path_param("webhook_id")], None, (200, _array(OBJECT)), [404]),
    ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", "Deliver an event again", "mail:read",
     [_path_param("webhook_id"), _path_param("delivery_id")], None, (202, OBJECT), [404]),
    ("post", "/v1/aliases", "Create an alias", "admin", [],
     _obj(["source", "destination"], source=STRING, destination=ADDRESS_LIST), (201, _ref("Alias")),
     [400, 409, 422]),
    ("get", "/v1/aliases", "List aliases", "admin", [], None, (200, _array(_ref("Alias"))), []),
    ("delete", "/v1/aliases/{source}", "Delete an alias", "admin", [_path_param("source")], None, (204, None),
     [404, 422]),
]

# Domains and the drop-in dialects (`/v1/inboxes…`, `/api/v0`) are described in their own module.
from .openapi_compat import COMPAT_OPERATIONS, COMPAT_SCHEMAS  # noqa: E402 - needs the helpers above

SCHEMAS.update(COMPAT_SCHEMAS)
OPERATIONS.extend(COMPAT_OPERATIONS)

_ERROR_TEXT = {400: "Malformed request", 401: "No API key", 403: "Wrong key or missing scope", 404: "Not found",
               409: "Conflict", 413: "Body too large", 422: "Invalid input", 429: "Rate limited (see Retry-After)",
               503: "Unhealthy"}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, scope, params, body, (status, schema), errors in OPERATIONS:
        op: dict[str, Any] = {"summary": summary, "parameters": params, "responses": {}}
        response: dict[str, Any] = {"description": "Success"}
        if isinstance(schema, str):  # a media type whose body is not JSON
            response["content"] = {schema: {}}
        elif schema is not None:
            response["content"] = {"application/json": {"schema": schema}}
        op["responses"][str(status)] = response
        codes = set(errors) | ({401, 403} if scope else set())
        for code in sorted(codes):
            content = {"application/json": {"schema": _ref("Error")}} if code != 503 else \
                {"application/json": {"schema": OBJECT}}
            op["responses"][str(code)] = {"description": _ERROR_TEXT[code], "content": content}
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        if scope:
            op["security"] = [{"apiKey": []}, {"bearer": []}]
            op["description"] = f"Needs the `{scope}` scope."
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "openmailserver", "version": __version__,
                 "description": "Mailboxes, aliases, sending, reading, debugging and backups."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-OpenMailserver-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(document())
