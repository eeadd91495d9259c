"""OpenAPI entries of domains and the drop-in dialects (`/v1/inboxes…`, `/api/v0`).

`openapi.py` appends them to its `OPERATIONS` and `SCHEMAS`; the same test
checks both against the router.
"""

from __future__ import annotations

from .oas import (ADDRESS_LIST, BOOLEAN, IDEMPOTENCY, INTEGER, OBJECT, STRING, S, array, nullable, obj, path_param,
                  query, ref)

NSTRING = nullable("string")
RECORD = obj(["type", "name", "value", "priority", "status"], type={"enum": ["MX", "TXT"]}, name=STRING,
              value=STRING, priority=nullable("integer"), status={"enum": ["MISSING", "INVALID", "VALID"]},
              detail=STRING)
DOMAIN_STATUS = {"enum": ["PENDING", "VERIFIED"]}
SEND_STATUS = {"enum": ["pending", "sent", "failed"]}
V0_ATTACHMENT = obj(["attachment_id", "filename", "size", "content_type"], attachment_id=STRING, filename=STRING,
                     size=INTEGER, content_type=STRING, content_disposition=STRING, content_id=NSTRING)


def _page(item: S) -> S:
    return obj(["data", "total", "page", "page_size"], data=array(item), total=INTEGER, page=INTEGER,
                page_size=INTEGER)


def _listing(item: S) -> S:
    return obj(["data", "total", "limit", "offset"], data=array(item), total=INTEGER, limit=INTEGER,
                offset=INTEGER)


COMPAT_SCHEMAS: dict[str, S] = {
    "DnsRecord": RECORD,
    "Domain": obj(["id", "domain", "status", "records", "created_at"], id=STRING, domain=STRING,
                   status=DOMAIN_STATUS, feedback_enabled=BOOLEAN, dkim_selector=STRING,
                   records=array(ref("DnsRecord")), verified_at=NSTRING, checked_at=NSTRING, created_at=STRING,
                   updated_at=STRING),
    "V0Domain": obj(["domain_id", "status", "feedback_enabled", "records", "created_at", "updated_at"],
                     domain_id=STRING, status=DOMAIN_STATUS, feedback_enabled=BOOLEAN,
                     records=array(ref("DnsRecord")), created_at=STRING, updated_at=STRING),
    "Inbox": obj(["id", "address", "externalId", "createdAt"], id=STRING, address=STRING, externalId=NSTRING,
                  displayName=NSTRING, createdAt=STRING),
    "InboxMessage": obj(["id", "threadId", "direction", "fromAddr", "toAddr", "subject", "bodyText", "status",
                          "createdAt"],
                         id=STRING, inboxId=STRING, threadId=NSTRING, direction={"enum": ["inbound", "outbound"]},
                         fromAddr=STRING, toAddr=STRING, cc=array(STRING), subject=STRING, bodyText=STRING,
                         bodyHtml=NSTRING, rfcMessageId=NSTRING,
                         attachments=array(obj(["filename", "contentType", "sizeBytes", "url"], filename=STRING,
                                                 contentType=STRING, sizeBytes=INTEGER, url=STRING)),
                         status={"enum": ["received", "pending", "sent", "failed"]}, createdAt=STRING),
    "InboxThread": obj(["id", "subject", "messageCount", "lastMessageAt"], id=STRING, inboxId=STRING,
                        subject=STRING, messageCount=INTEGER, createdAt=STRING, lastMessageAt=STRING),
    "V0Inbox": obj(["inbox_id", "email_address", "username", "domain", "display_name", "client_id", "created_at",
                     "updated_at"], inbox_id=STRING, email_address=STRING, username=STRING, domain=STRING,
                    display_name=NSTRING, client_id=NSTRING, created_at=STRING, updated_at=STRING),
    "V0Message": obj(["inbox_id", "thread_id", "message_id", "direction", "labels", "timestamp", "from", "to",
                       "cc", "subject", "preview", "size"],
                      inbox_id=STRING, thread_id=NSTRING, message_id=STRING,
                      direction={"enum": ["inbound", "outbound"]}, labels=array(STRING), timestamp=STRING,
                      **{"from": STRING}, to=array(STRING), cc={"type": ["array", "null"], "items": STRING},
                      subject=STRING, preview=STRING, size=INTEGER),
    "V0MessageFull": {"allOf": [ref("V0Message"), obj(
        ["reply_to", "bcc", "text", "html", "in_reply_to", "references", "headers", "created_at", "updated_at"],
        reply_to={"type": ["array", "null"], "items": STRING}, bcc={"type": ["array", "null"], "items": STRING},
        text=NSTRING, html=NSTRING, in_reply_to=NSTRING, references={"type": ["array", "null"], "items": STRING},
        rfc_message_id=NSTRING, headers={"type": "object", "additionalProperties": STRING},
        system_labels=array(STRING), status={"enum": ["received", "pending", "sent", "failed"]},
        attachments=array(V0_ATTACHMENT), created_at=STRING, updated_at=STRING)]},
    "V0Sent": obj(["message_id", "thread_id"], message_id=STRING, thread_id=NSTRING),
    "V0Thread": obj(["inbox_id", "thread_id", "labels", "timestamp", "senders", "recipients", "subject", "preview",
                      "last_message_id", "message_count", "size"],
                     inbox_id=STRING, thread_id=STRING, labels=array(STRING), timestamp=STRING,
                     received_timestamp=NSTRING, sent_timestamp=NSTRING, senders=array(STRING),
                     recipients=array(STRING), subject=STRING, preview=STRING, last_message_id=NSTRING,
                     message_count=INTEGER, size=INTEGER, created_at=STRING),
    "V0Webhook": obj(["webhook_id", "url", "event_types", "inbox_ids", "enabled", "client_id", "created_at",
                       "updated_at"], webhook_id=STRING, url=STRING, event_types=array(STRING),
                      inbox_ids=array(STRING), enabled=BOOLEAN, client_id=NSTRING, secret=STRING,
                      created_at=STRING, updated_at=STRING),
    "V0Key": obj(["key_id", "name", "prefix", "used_at", "created_at"], key_id=STRING, name=STRING, prefix=STRING,
                  key=STRING, inbox_id=NSTRING, scopes=array(STRING), used_at=NSTRING, created_at=STRING),
}

DOMAIN = path_param("domain")
INBOX = path_param("inbox_id")
MESSAGE = path_param("message_id")
THREAD = path_param("thread_id")
PAGE = [query("page", {"type": "integer", "minimum": 1}),
        query("page_size", {"type": "integer", "minimum": 1, "maximum": 100})]
LIMIT_OFFSET = [query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                query("offset", {"type": "integer", "minimum": 0})]
REQUIRED_IDEMPOTENCY = {**IDEMPOTENCY, "required": True}
SENDING_ERRORS = [400, 404, 409, 413, 422, 429]
V0_ATTACHMENTS = array(obj(["filename"], filename=STRING, content_type=STRING,
                             content={"type": "string", "contentEncoding": "base64"}, url=STRING))
V0_REPLY = obj([], text=STRING, html=STRING, cc=ADDRESS_LIST, bcc=ADDRESS_LIST, labels=array(STRING),
                include_quote=BOOLEAN, attachments=V0_ATTACHMENTS)
V0_WEBHOOK_BODY = dict(url=STRING, event_types=array(STRING), inbox_ids=array(STRING), enabled=BOOLEAN)

COMPAT_OPERATIONS: list = [
    # ---- domains (native) ----
    ("post", "/v1/domains", "Add a domain: generates its DKIM key; answers the DNS records to publish", "admin",
     [], obj(["domain"], domain=STRING, feedback_enabled=BOOLEAN), (201, ref("Domain")), [400, 409, 413, 422]),
    ("get", "/v1/domains", "Hosted domains with their records and verification state", "admin", [], None,
     (200, array(ref("Domain"))), []),
    ("get", "/v1/domains/{domain}", "One domain (by name or id)", "admin", [DOMAIN], None, (200, ref("Domain")),
     [404]),
    ("delete", "/v1/domains/{domain}", "Remove a domain without mailboxes or aliases", "admin", [DOMAIN], None,
     (204, None), [404, 409]),
    ("post", "/v1/domains/{domain}/verify", "Check the records live; VERIFIED when all are VALID", "admin",
     [DOMAIN], None, (200, ref("Domain")), [404]),
    ("get", "/v1/domains/{domain}/zone", "The records as a BIND zone snippet", "admin", [DOMAIN], None,
     (200, "text/plain"), [404]),
    # ---- native: thread deletion ----
    ("delete", "/v1/threads/{thread_id}", "Delete a thread and all its messages", "mail:read", [THREAD], None,
     (204, None), [404]),
    # ---- OpenMail-style dialect ----
    ("post", "/v1/inboxes", "Create an inbox (a mailbox on a hosted domain; random username when omitted)",
     "admin", [], obj([], username=STRING, mailboxName=STRING, externalId=STRING, displayName=STRING,
                       domain=STRING),
     (201, {"allOf": [ref("Inbox"), obj(["apiKey", "password"], apiKey=STRING, password=STRING)]}),
     [400, 409, 413, 422]),
    ("get", "/v1/inboxes", "Inboxes (a mailbox key sees its own)", "mail:read",
     [*LIMIT_OFFSET, query("externalId")], None, (200, _listing(ref("Inbox"))), [422]),
    ("get", "/v1/inboxes/{inbox_id}", "One inbox", "mail:read", [INBOX], None, (200, ref("Inbox")), [404]),
    ("delete", "/v1/inboxes/{inbox_id}", "Delete an inbox and its mailbox", "admin", [INBOX], None, (204, None),
     [404]),
    ("post", "/v1/inboxes/{inbox_id}/send", "Send (JSON or multipart/form-data with repeated `attachments`); "
     "Idempotency-Key required; threadId replies in a thread", "mail:send", [INBOX, REQUIRED_IDEMPOTENCY],
     obj(["to", "subject", "body"], to=STRING, subject={"type": "string", "minLength": 1, "maxLength": 998},
          body={"type": "string", "minLength": 1, "maxLength": 100000},
          bodyHtml={"type": "string", "maxLength": 500000}, threadId=STRING, includeQuote=BOOLEAN,
          replyTo=STRING, cc=ADDRESS_LIST, bcc=ADDRESS_LIST,
          attachments=array(obj(["filename", "content"], filename=STRING, content_type=STRING,
                                  content={"type": "string", "contentEncoding": "base64"}))),
     (200, obj(["messageId", "threadId", "providerMessageId", "status"], messageId=STRING, threadId=NSTRING,
                providerMessageId=STRING, status=SEND_STATUS)), SENDING_ERRORS),
    ("get", "/v1/inboxes/{inbox_id}/messages", "Messages of an inbox, newest first", "mail:read",
     [INBOX, query("direction", {"enum": ["inbound", "outbound"]}), *LIMIT_OFFSET], None,
     (200, _listing(ref("InboxMessage"))), [404, 422]),
    ("get", "/v1/inboxes/{inbox_id}/threads", "Threads of an inbox by newest activity", "mail:read",
     [INBOX, *LIMIT_OFFSET], None, (200, _listing(ref("InboxThread"))), [404, 422]),
    ("get", "/v1/threads/{thread_id}/messages", "A thread's messages in order", "mail:read", [THREAD], None,
     (200, obj(["threadId", "subject", "data"], threadId=STRING, subject=STRING,
                data=array(ref("InboxMessage")))), [404]),
    ("get", "/v1/attachments/{message_id}/{filename}", "An attachment by file name", "mail:read",
     [MESSAGE, path_param("filename")], None, (200, None), [404]),
    # ---- agentmail-style dialect ----
    ("get", "/api/v0/organizations", "This server as an organisation: counts and limits", "mail:read", [], None,
     (200, obj(["org_id", "name", "inbox_count", "inbox_limit", "domain_count", "domain_limit", "created_at",
                 "updated_at"], org_id=STRING, name=STRING, inbox_count=INTEGER, inbox_limit=nullable("integer"),
                domain_count=INTEGER, domain_limit=nullable("integer"), created_at=STRING, updated_at=STRING)),
     []),
    ("post", "/api/v0/inboxes", "Create an inbox (a real mailbox) on a hosted domain", "admin", [],
     obj([], username=STRING, domain=STRING, display_name=STRING, client_id=STRING), (201, ref("V0Inbox")),
     [400, 409, 413, 422]),
    ("get", "/api/v0/inboxes", "Inboxes", "mail:read", PAGE, None, (200, _page(ref("V0Inbox"))), [422]),
    ("get", "/api/v0/inboxes/{inbox_id}", "One inbox", "mail:read", [INBOX], None, (200, ref("V0Inbox")), [404]),
    ("patch", "/api/v0/inboxes/{inbox_id}", "Change the display name", "mail:read", [INBOX],
     obj([], display_name=STRING), (200, ref("V0Inbox")), [400, 404, 413, 422]),
    ("delete", "/api/v0/inboxes/{inbox_id}", "Delete an inbox and its mailbox", "admin", [INBOX], None,
     (204, None), [404]),
    ("post", "/api/v0/inboxes/{inbox_id}/messages/send", "Send (optional Idempotency-Key)", "mail:send",
     [INBOX, IDEMPOTENCY],
     obj(["to"], to=ADDRESS_LIST, cc=ADDRESS_LIST, bcc=ADDRESS_LIST, reply_to=ADDRESS_LIST, subject=STRING,
          text=STRING, html=STRING, labels=array(STRING), attachments=V0_ATTACHMENTS,
          headers={"type": "object", "additionalProperties": STRING}),
     (200, ref("V0Sent")), [*SENDING_ERRORS, 403]),
    ("get", "/api/v0/inboxes/{inbox_id}/messages", "Messages, both directions, newest first", "mail:read",
     [INBOX, *PAGE], None, (200, _page(ref("V0Message"))), [404, 422]),
    ("get", "/api/v0/inboxes/{inbox_id}/messages/{message_id}", "One message with its content", "mail:read",
     [INBOX, MESSAGE], None, (200, ref("V0MessageFull")), [404]),
    ("patch", "/api/v0/inboxes/{inbox_id}/messages/{message_id}", "Replace the message's labels", "mail:read",
     [INBOX, MESSAGE], obj(["labels"], labels=array(STRING)), (200, ref("V0MessageFull")),
     [400, 404, 413, 422]),
    ("post", "/api/v0/inboxes/{inbox_id}/messages/{message_id}/reply", "Reply to the sender (or Reply-To)",
     "mail:send", [INBOX, MESSAGE, IDEMPOTENCY], V0_REPLY, (200, ref("V0Sent")), SENDING_ERRORS),
    ("post", "/api/v0/inboxes/{inbox_id}/messages/{message_id}/reply-all", "Reply to everyone but this inbox",
     "mail:send", [INBOX, MESSAGE, IDEMPOTENCY], V0_REPLY, (200, ref("V0Sent")), SENDING_ERRORS),
    ("post", "/api/v0/inboxes/{inbox_id}/messages/{message_id}/forward", "Forward (starts a new thread)",
     "mail:send", [INBOX, MESSAGE, IDEMPOTENCY], {"allOf": [V0_REPLY, obj(["to"], to=ADDRESS_LIST)]},
     (200, ref("V0Sent")), SENDING_ERRORS),
    ("get", "/api/v0/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment_id}",
     "Attachment metadata and a signed download URL valid for an hour", "mail:read",
     [INBOX, MESSAGE, path_param("attachment_id")], None,
     (200, {"allOf": [V0_ATTACHMENT, obj(["download_url", "expires_at"], download_url=STRING,
                                          expires_at=STRING)]}), [404]),
    ("get", "/api/v0/downloads/{message_id}/{attachment_id}", "A signed download URL (no API key)", None,
     [MESSAGE, path_param("attachment_id"), {**query("expires", {"type": "integer"}), "required": True},
      {**query("signature"), "required": True}], None, (200, None), [403, 404, 422]),
    ("get", "/api/v0/inboxes/{inbox_id}/threads", "Threads by newest activity", "mail:read", [INBOX, *PAGE], None,
     (200, _page(ref("V0Thread"))), [404, 422]),
    ("get", "/api/v0/inboxes/{inbox_id}/threads/{thread_id}", "A thread with its messages in order", "mail:read",
     [INBOX, THREAD], None, (200, {"allOf": [ref("V0Thread"), obj(["messages"], messages=array(OBJECT))]}),
     [404]),
    ("delete", "/api/v0/inboxes/{inbox_id}/threads/{thread_id}", "Delete a thread and its messages", "mail:read",
     [INBOX, THREAD], None, (204, None), [404]),
    ("post", "/api/v0/domains", "Add a domain; answers the DNS records to publish", "admin", [],
     obj(["domain"], domain=STRING, feedback_enabled=BOOLEAN), (201, ref("V0Domain")), [400, 409, 413, 422]),
    ("get", "/api/v0/domains", "Domains with records and status", "admin", PAGE, None,
     (200, _page(ref("V0Domain"))), [422]),
    ("get", "/api/v0/domains/{domain}", "One domain", "admin", [DOMAIN], None, (200, ref("V0Domain")), [404]),
    ("delete", "/api/v0/domains/{domain}", "Remove a domain without mailboxes or aliases", "admin", [DOMAIN],
     None, (204, None), [404, 409]),
    ("post", "/api/v0/domains/{domain}/verify", "Check the records live; VERIFIED when all are VALID", "admin",
     [DOMAIN], None, (200, ref("V0Domain")), [404]),
    ("get", "/api/v0/domains/{domain}/zone", "The records as a BIND zone snippet", "admin", [DOMAIN], None,
     (200, "text/plain"), [404]),
    ("post", "/api/v0/webhooks", "Create a webhook (the secret is shown once)", "mail:read", [],
     obj(["url", "event_types"], **V0_WEBHOOK_BODY, client_id=STRING), (201, ref("V0Webhook")),
     [400, 404, 413, 422]),
    ("get", "/api/v0/webhooks", "Webhooks", "mail:read", PAGE, None, (200, _page(ref("V0Webhook"))), [422]),
    ("get", "/api/v0/webhooks/{webhook_id}", "One webhook", "mail:read", [path_param("webhook_id")], None,
     (200, ref("V0Webhook")), [404]),
    ("patch", "/api/v0/webhooks/{webhook_id}", "Change URL, event types, inbox filter or enabled", "mail:read",
     [path_param("webhook_id")], obj([], **V0_WEBHOOK_BODY), (200, ref("V0Webhook")), [400, 404, 413, 422]),
    ("delete", "/api/v0/webhooks/{webhook_id}", "Delete a webhook", "mail:read", [path_param("webhook_id")],
     None, (204, None), [404]),
    ("post", "/api/v0/api-keys", "Create an API key (shown once); inbox_id limits it to one inbox", "mail:read",
     [], obj(["name"], name=STRING, inbox_id=STRING), (201, ref("V0Key")), [400, 404, 413, 422]),
    ("get", "/api/v0/api-keys", "Active API keys (prefix only)", "mail:read", PAGE, None,
     (200, _page(ref("V0Key"))), [422]),
    ("delete", "/api/v0/api-keys/{key_id}", "Revoke an API key", "mail:read", [path_param("key_id")], None,
     (204, None), [404, 409]),
]
