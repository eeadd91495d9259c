"""`GET /openapi.json`: the OpenAPI 3.1 description of every endpoint.

`OPERATIONS` is the single table of what each route accepts and returns; a
test checks that it names exactly the routes the application serves.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .. import __version__
from .oas import (ADDRESS, ADDRESS_LIST, BOOLEAN, IDEMPOTENCY, INTEGER, NUMBER, OBJECT, STRING, XML, S, array,
                  nullable, obj, path_param, query, ref)
from .openapi_compat import COMPAT_OPERATIONS, COMPAT_SCHEMAS

SCHEMAS: dict[str, S] = {
    "Error": obj(["error", "message"], error=STRING, message=STRING, fix=STRING),
    "Mailbox": obj(["id", "email", "quota", "active"], id=STRING, email=STRING, display_name=STRING,
                    quota=INTEGER, used_bytes=INTEGER, active=BOOLEAN, created_at=STRING),
    "NewKey": obj(["id", "key", "scopes"], id=STRING, key=STRING, prefix=STRING, scopes=array(STRING),
                   mailbox=STRING),
    "MailboxCreated": obj(["mailbox", "password", "api_key"], mailbox=ref("Mailbox"), password=STRING,
                           api_key=ref("NewKey")),
    "Key": obj(["id", "prefix", "scopes"], id=STRING, prefix=STRING, name=STRING, mailbox=nullable("string"),
                scopes=array(STRING), created_at=STRING, revoked_at=nullable("string"),
                last_used_at=nullable("string")),
    "Alias": obj(["id", "source", "destination"], id=STRING, source=STRING, destination=STRING,
                  created_at=STRING),
    "MessageSummary": obj(["id", "subject", "from", "to", "date"], id=STRING, subject=STRING,
                           **{"from": STRING}, to=STRING, date=nullable("string"),
                           message_id=nullable("string"), thread_id=nullable("string"), folder=STRING,
                           flags=array(STRING), size=INTEGER, direction=STRING, created_at=STRING),
    "Message": {"allOf": [ref("MessageSummary"), obj(
        ["body"], address=STRING, body=STRING, text=nullable("string"), html=nullable("string"),
        extracted_text=STRING, attachments=array(OBJECT), attachment_limits=OBJECT,
        authentication_results=nullable("string"), spf=nullable("string"), dkim=nullable("string"),
        dmarc=nullable("string"))]},
    "Outbound": obj(["id", "sender", "recipients", "subject", "state", "message_id", "queue_id", "error",
                      "created_at", "sent_at"],
                     id=STRING, sender=STRING, recipients=array(STRING), subject=STRING,
                     state={"enum": ["queued", "sent", "deferred", "bounced", "failed", "held"]},
                     message_id=nullable("string"), queue_id=STRING, thread_id=nullable("string"),
                     error=nullable("string"), created_at=STRING, sent_at=nullable("string")),
    "QueueEntry": obj(["id", "state", "queue_id", "message_id", "error", "created_at"], id=STRING, state=STRING,
                       queue_id=STRING, message_id=nullable("string"), error=nullable("string"),
                       created_at=STRING, outbound_id=STRING, recipient=STRING, attempts=INTEGER,
                       next_attempt_at=NUMBER),
    "SendRequest": obj(["sender", "recipients"], sender=STRING, recipients=ADDRESS_LIST, subject=STRING,
                        thread_id=STRING,
                        text_body=STRING, html_body=STRING, cc=ADDRESS_LIST, bcc=ADDRESS_LIST,
                        reply_to=ADDRESS_LIST, headers={"type": "object", "additionalProperties": STRING},
                        attachments=array(obj(["filename", "content"], filename=STRING, content_type=STRING,
                                                content={"type": "string", "contentEncoding": "base64"}))),
    "Event": obj(["event", "event_id", "seq", "occurred_at"], event=STRING, event_id=STRING, seq=INTEGER,
                  occurred_at=STRING, inbox_id=nullable("string"), thread_id=nullable("string"), data=OBJECT,
                  message=OBJECT),
    "Webhook": obj(["id", "url", "event_types", "inbox_ids", "enabled"], id=STRING, url=STRING,
                    event_types=array(STRING), inbox_ids=array(STRING), enabled=BOOLEAN,
                    disabled_reason=nullable("string"), created_at=STRING, secret=STRING),
    "ReplyRequest": obj([], text=STRING, html=STRING, cc=ADDRESS_LIST, bcc=ADDRESS_LIST, include_quote=BOOLEAN,
                         attachments=array(OBJECT)),
    "Health": obj(["status"], status={"enum": ["ok", "fail"]}, database=OBJECT, disk=OBJECT, listeners=OBJECT,
                   certificate=OBJECT),
    "Backup": obj(["path", "encrypted"], path=STRING, encrypted=BOOLEAN, size=INTEGER, files=INTEGER,
                   created_at=STRING),
    "BackupListing": obj(["path", "name", "size"], path=STRING, name=STRING, size=INTEGER, created_at=STRING),
    "Validation": obj(["status", "details"], status={"enum": ["ok", "invalid"]}, details=OBJECT),
    "Trace": obj(["status", "message_id", "queue_id", "error", "events"], status=STRING, direction=STRING,
                  id=STRING, message_id=nullable("string"), queue_id=nullable("string"),
                  error=nullable("string"), events=array(OBJECT)),
}

# (method, path, summary, scope or None, parameters, request body schema, (status, response schema), errors)
OPERATIONS: list[tuple[str, str, str, str | None, list[S], S | None, tuple[int, S | str | None], list[int]]] = [
    ("get", "/health", "Checks of the database, disk, every listener and the TLS certificate "
     "(warn 14 days before expiry)", None, [], None, (200, ref("Health")), [503]),
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
     obj(["local_part", "domain"], local_part=STRING, domain=STRING, password=STRING, quota=INTEGER,
          display_name=STRING), (201, ref("MailboxCreated")), [400, 409, 413, 422]),
    ("get", "/v1/mailboxes", "List mailboxes", "admin", [], None, (200, array(ref("Mailbox"))), []),
    ("get", "/v1/mailboxes/{address}", "One mailbox", "mail:read", [ADDRESS], None, (200, ref("Mailbox")),
     [404, 422]),
    ("patch", "/v1/mailboxes/{address}", "Change quota, display name or active", "admin", [ADDRESS],
     obj([], quota=INTEGER, display_name=STRING, active=BOOLEAN), (200, ref("Mailbox")), [400, 404, 422]),
    ("delete", "/v1/mailboxes/{address}", "Delete a mailbox", "admin", [ADDRESS], None, (204, None), [404, 422]),
    ("post", "/v1/mailboxes/{address}/password", "Set (or generate) the mailbox password", "mail:read",
     [ADDRESS], obj([], password=STRING), (200, obj(["email", "password"], email=STRING, password=STRING)),
     [400, 404, 422]),
    ("post", "/v1/mailboxes/{address}/keys", "Create a mailbox API key", "mail:read", [ADDRESS],
     obj([], name=STRING), (201, ref("NewKey")), [400, 404, 422]),
    ("get", "/v1/mailboxes/{address}/messages", "Messages of a folder, newest first", "mail:read",
     [ADDRESS, query("folder"), query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
      query("before"), query("unread", BOOLEAN), query("label")], None, (200, array(ref("MessageSummary"))),
     [404, 422]),
    ("get", "/v1/keys", "API keys (the admin sees all, a mailbox key its own)", "mail:read", [], None,
     (200, array(ref("Key"))), []),
    ("delete", "/v1/keys/{key_id}", "Revoke an API key", "mail:read", [path_param("key_id")], None,
     (204, None), [404, 409]),
    ("get", "/v1/messages/{message_id}", "One message with its body", "mail:read",
     [path_param("message_id"), query("address")], None, (200, ref("Message")), [404, 422]),
    ("patch", "/v1/messages/{message_id}", "Flags, a move to another folder, custom labels (IMAP keywords)",
     "mail:read", [path_param("message_id"), query("address")],
     obj([], add_flags=array(STRING), remove_flags=array(STRING), seen=BOOLEAN, flagged=BOOLEAN, folder=STRING,
         add_labels=array(STRING), remove_labels=array(STRING)),
     (200, {"allOf": [ref("MessageSummary"), obj(["labels", "system_labels"], labels=array(STRING),
                                                 system_labels=array(STRING))]}), [400, 404, 413, 422]),
    ("delete", "/v1/messages/{message_id}", "Move to Trash (?permanent=true, or already in Trash: remove)",
     "mail:read", [path_param("message_id"), query("address"), query("permanent", BOOLEAN)], None,
     (200, obj(["id", "result"], id=STRING, result={"enum": ["moved_to_trash", "deleted"]})), [404, 422]),
    ("get", "/v1/messages/{message_id}/raw", "The message as RFC 5322 text", "mail:read",
     [path_param("message_id"), query("address")], None, (200, "message/rfc822"), [404, 422]),
    ("get", "/v1/messages/{message_id}/attachments/{index}", "An attachment's content", "mail:read",
     [path_param("message_id"), path_param("index"), query("address")], None, (200, "*/*"), [404, 422]),
    ("post", "/v1/messages/{message_id}/reply", "Reply to the sender (threaded, quoted)", "mail:send",
     [path_param("message_id"), IDEMPOTENCY], ref("ReplyRequest"), (200, ref("Outbound")),
     [400, 404, 409, 413, 422, 429]),
    ("post", "/v1/messages/{message_id}/reply-all", "Reply to the sender and every recipient", "mail:send",
     [path_param("message_id"), IDEMPOTENCY], ref("ReplyRequest"), (200, ref("Outbound")),
     [400, 404, 409, 413, 422, 429]),
    ("post", "/v1/messages/{message_id}/forward", "Forward with the original attachments (new thread)",
     "mail:send", [path_param("message_id"), IDEMPOTENCY],
     {"allOf": [ref("ReplyRequest"), obj(["to"], to=ADDRESS_LIST)]}, (200, ref("Outbound")),
     [400, 404, 409, 413, 422, 429]),
    ("get", "/v1/mailboxes/{address}/threads", "Threads by newest activity (cursor paging)", "mail:read",
     [ADDRESS, query("limit", {"type": "integer", "minimum": 1, "maximum": 200}), query("cursor")], None,
     (200, obj(["threads", "next_cursor"], threads=array(OBJECT), next_cursor=nullable("string"))),
     [404, 422]),
    ("get", "/v1/threads/{thread_id}", "A thread's messages in order, both directions", "mail:read",
     [path_param("thread_id")], None, (200, obj(["id", "messages"], id=STRING, messages=array(OBJECT))),
     [404]),
    ("post", "/v1/mail/send", "Send a message (optional Idempotency-Key header)", "mail:send",
     [IDEMPOTENCY], ref("SendRequest"), (200, ref("Outbound")), [400, 403, 409, 413, 422, 429]),
    ("get", "/v1/outbound", "Sent messages and their delivery state", "mail:read", [], None,
     (200, array(ref("Outbound"))), []),
    ("get", "/v1/outbound/{outbound_id}", "One sent message", "mail:read", [path_param("outbound_id")], None,
     (200, ref("Outbound")), [404]),
    ("get", "/v1/queue", "Queue entries, one per remote recipient", "mail:read", [], None,
     (200, array(ref("QueueEntry"))), []),
    ("post", "/v1/queue/{queue_id}/{action}", "retry, hold or release a queued message", "admin",
     [path_param("queue_id"), {"name": "action", "in": "path", "required": True,
                                "schema": {"enum": ["retry", "hold", "release"]}}], None,
     (200, ref("Outbound")), [404, 409]),
    ("delete", "/v1/queue/{queue_id}", "Remove a message's undelivered recipients", "admin",
     [path_param("queue_id")], None, (200, ref("Outbound")), [404]),
    ("get", "/v1/debug/health", "Health in depth: queue, DNS, certificate", "debug:read", [], None,
     (200, ref("Health")), [404, 503]),
    ("get", "/v1/debug/config", "Effective settings, secrets redacted", "debug:read", [], None, (200, OBJECT),
     [404]),
    ("get", "/v1/debug/messages/{message_id}/trace", "Every delivery attempt, or the inbound checks",
     "debug:read", [path_param("message_id")], None, (200, ref("Trace")), [404]),
    ("get", "/v1/debug/deliverability/report", "Live DNS checks for every domain", "debug:read", [], None,
     (200, obj(["domains"], hostname=STRING, generated_at=STRING, domains=array(OBJECT))), [404]),
    ("get", "/v1/debug/logs", "The newest log entries", "debug:read",
     [query("level", {"enum": ["debug", "info", "warning", "error", "critical"]}),
      query("limit", {"type": "integer", "minimum": 1, "maximum": 5000})], None,
     (200, obj(["entries", "count"], entries=array(OBJECT), count=INTEGER)), [404, 422]),
    ("post", "/v1/backup", "Write an encrypted backup", "admin", [], None, (201, ref("Backup")), [409]),
    ("get", "/v1/backups", "Backups on the server", "admin", [], None, (200, array(ref("BackupListing"))), []),
    ("post", "/v1/restore/validate", "Decrypt a backup and check its manifest", "admin", [query("path")],
     None, (200, ref("Validation")), [409, 422]),
    ("get", "/v1/events", "The event log after a seq (WebSocket: /v1/ws)", "mail:read",
     [query("after", {"type": "integer", "minimum": 0}), query("types"), query("mailbox"),
      query("limit", {"type": "integer", "minimum": 1, "maximum": 1000})], None,
     (200, obj(["events", "next_after"], events=array(ref("Event")), next_after=INTEGER)), [422]),
    ("get", "/v1/events/stream", "Server-sent events: the log after Last-Event-ID, then live", "mail:read",
     [query("types"), query("mailbox"), {"name": "Last-Event-ID", "in": "header", "required": False,
                                           "schema": STRING}], None, (200, "text/event-stream"), [422]),
    ("post", "/v1/webhooks", "Register a webhook (the secret is shown once)", "mail:read", [],
     obj(["url"], url=STRING, event_types=array(STRING), inbox_ids=array(STRING), enabled=BOOLEAN),
     (201, ref("Webhook")), [400, 422]),
    ("get", "/v1/webhooks", "Webhooks", "mail:read", [], None, (200, array(ref("Webhook"))), []),
    ("get", "/v1/webhooks/{webhook_id}", "One webhook", "mail:read", [path_param("webhook_id")], None,
     (200, ref("Webhook")), [404]),
    ("patch", "/v1/webhooks/{webhook_id}", "Change a webhook; rotate_secret keeps the old one for 24 h",
     "mail:read", [path_param("webhook_id")],
     obj([], url=STRING, event_types=array(STRING), inbox_ids=array(STRING), enabled=BOOLEAN,
          rotate_secret=BOOLEAN), (200, ref("Webhook")), [400, 404, 422]),
    ("delete", "/v1/webhooks/{webhook_id}", "Delete a webhook", "mail:read", [path_param("webhook_id")], None,
     (204, None), [404]),
    ("get", "/v1/webhooks/{webhook_id}/deliveries", "Deliveries and every attempt", "mail:read",
     [path_param("webhook_id")], None, (200, array(OBJECT)), [404]),
    ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", "Deliver an event again", "mail:read",
     [path_param("webhook_id"), path_param("delivery_id")], None, (202, OBJECT), [404]),
    ("post", "/v1/aliases", "Create an alias", "admin", [],
     obj(["source", "destination"], source=STRING, destination=ADDRESS_LIST), (201, ref("Alias")),
     [400, 409, 422]),
    ("get", "/v1/aliases", "List aliases", "admin", [], None, (200, array(ref("Alias"))), []),
    ("delete", "/v1/aliases/{source}", "Delete an alias", "admin", [path_param("source")], None, (204, None),
     [404, 422]),
]

# Domains and the drop-in dialects (`/v1/inboxes…`, `/api/v0`) are described in their own module.

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
            content = {"application/json": {"schema": ref("Error")}} if code != 503 else \
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


def render_markdown() -> str:
    """docs/api.md: every endpoint with its scope, parameters, body and answers, from `document()`."""
    doc = document()
    lines = [
        "# HTTP API reference",
        "",
        "<!-- Generated from openmailserver/api/openapi.py by `openmailserver docs api`; "
        "a test fails when this file is stale. -->",
        "",
        "The daemon serves this description as OpenAPI 3.1 at `GET /openapi.json`. Authenticate with",
        "`X-OpenMailserver-Key: <key>` or `Authorization: Bearer <key>`. Errors are JSON",
        '`{"error": "<code>", "message": "...", "fix": "..."}`.',
        "",
        "| method | path | scope | summary |",
        "|---|---|---|---|",
    ]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            scope = op.get("description", "").removeprefix("Needs the `").removesuffix("` scope.") or "none"
            lines.append(f"| {method.upper()} | `{path}` | {scope} | {op['summary']} |")
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            lines += ["", f"## {method.upper()} `{path}`", "", op["summary"] + ".", ""]
            if op.get("description"):
                lines += [op["description"], ""]
            for param in op["parameters"]:
                lines.append(f"- {param['in']} parameter `{param['name']}`"
                             f"{' (required)' if param.get('required') else ''}")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                lines.append(f"- body: {_describe(body)}")
            for code, response in op["responses"].items():
                content = response.get("content", {})
                media = next(iter(content), None)
                schema = content.get(media, {}).get("schema") if media else None
                shape = f": {_describe(schema)}" if schema else (f" ({media})" if media else "")
                lines.append(f"- {code} {response['description']}{shape}")
    return "\n".join(lines) + "\n"


def _describe(schema: S) -> str:
    """A short human description of a schema: `Mailbox`, `array of Outbound`, `{local_part*, domain*}`."""
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    if schema.get("type") == "array":
        return f"array of {_describe(schema.get('items', {}))}"
    if "allOf" in schema:
        return " + ".join(_describe(part) for part in schema["allOf"])
    if schema.get("type") == "object" and schema.get("properties"):
        required = set(schema.get("required", []))
        return "{" + ", ".join(f"{name}{'*' if name in required else ''}" for name in schema["properties"]) + "}"
    if "enum" in schema:
        return " | ".join(str(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    return "/".join(kind) if isinstance(kind, list) else str(kind)
