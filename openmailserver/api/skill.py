"""`openmailserver skill --inbox ADDRESS`: a SKILL.md that teaches an agent to use this server.

The file follows the pattern of OpenMail's API integration guide: the per-agent
values come from environment variables (`OPENMAIL_API_KEY`, `OPENMAIL_INBOX_ID`,
`OPENMAIL_ADDRESS`), the commands are plain `curl` against this server's base
URL. Every command is meant to run as written, in order, in one shell: the
send step keeps the thread id for the later steps. A test runs them all.
"""

from __future__ import annotations

from textwrap import dedent

ENV_VARS = ("OPENMAIL_API_KEY", "OPENMAIL_INBOX_ID", "OPENMAIL_ADDRESS")

_TEMPLATE = dedent('''\
    ---
    name: email
    description: Send, receive and reply to email as {address} through the openmailserver at {base}
    requires:
      env:
        - OPENMAIL_API_KEY
        - OPENMAIL_INBOX_ID
        - OPENMAIL_ADDRESS
    ---

    # Email

    Your email address is $OPENMAIL_ADDRESS ({address}); use it when you introduce yourself or share
    contact details. Your inbox id is $OPENMAIL_INBOX_ID ({inbox_id}). The mail server's API is at
    {base}. Every request sends `Authorization: Bearer $OPENMAIL_API_KEY`. Answers are JSON; an error
    is `{{"error": ..., "message": ..., "fix": ...}}` and `fix`, when present, says what to change.

    ## Send an email

    ```bash
    SENT=$(curl -sS -X POST "{base}/v1/inboxes/$OPENMAIL_INBOX_ID/send" \\
      -H "Authorization: Bearer $OPENMAIL_API_KEY" \\
      -H "Content-Type: application/json" \\
      -H "Idempotency-Key: $(uuidgen)" \\
      -d '{{"to": "recipient@example.com", "subject": "Hello", "body": "Message body"}}')
    echo "$SENT"
    THREAD_ID=$(printf '%s' "$SENT" | python3 -c 'import json, sys; print(json.load(sys.stdin)["threadId"])')
    ```

    The answer is `{{"messageId", "threadId", "providerMessageId", "status"}}`; `status` is `sent`,
    `pending` (queued for a remote server) or `failed`. Keep `threadId` to continue the conversation.
    `body` may be plain text or HTML (a text version is generated). Add `"replyTo"` to route replies
    elsewhere.

    ## Reply in a thread

    ```bash
    curl -sS -X POST "{base}/v1/inboxes/$OPENMAIL_INBOX_ID/send" \\
      -H "Authorization: Bearer $OPENMAIL_API_KEY" \\
      -H "Content-Type: application/json" \\
      -H "Idempotency-Key: $(uuidgen)" \\
      -d '{{"to": "recipient@example.com", "subject": "Re: Hello", "body": "Reply body", "threadId": "'"$THREAD_ID"'"}}'
    ```

    With `threadId` the server sets `In-Reply-To` and `References`, so the reply threads in the
    recipient's mail client, and quotes the previous message (`"includeQuote": false` to leave it out).

    ## Check for new messages

    ```bash
    curl -sS "{base}/v1/inboxes/$OPENMAIL_INBOX_ID/messages?direction=inbound&limit=10" \\
      -H "Authorization: Bearer $OPENMAIL_API_KEY"
    ```

    Each message has `id`, `threadId`, `fromAddr`, `toAddr`, `cc`, `subject`, `bodyText`, `attachments`
    (each with a download `url`) and `createdAt`, newest first.

    ## Reply to one message

    ```bash
    MESSAGE_ID=$(curl -sS "{base}/v1/inboxes/$OPENMAIL_INBOX_ID/messages?direction=inbound&limit=1" \\
      -H "Authorization: Bearer $OPENMAIL_API_KEY" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')
    curl -sS -X POST "{base}/v1/messages/$MESSAGE_ID/reply" \\
      -H "Authorization: Bearer $OPENMAIL_API_KEY" \\
      -H "Content-Type: application/json" \\
      -H "Idempotency-Key: $(uuidgen)" \\
      -d '{{"text": "Thanks, got it."}}'
    ```

    `/reply` answers the sender (or its Reply-To), `/reply-all` everyone but you, `/forward` takes
    `"to"` and starts a new thread.

    ## List threads

    ```bash
    curl -sS "{base}/v1/inboxes/$OPENMAIL_INBOX_ID/threads?limit=10" \\
      -H "Authorization: Bearer $OPENMAIL_API_KEY"
    ```

    ## Read a thread

    ```bash
    curl -sS "{base}/v1/threads/$THREAD_ID/messages" \\
      -H "Authorization: Bearer $OPENMAIL_API_KEY"
    ```

    The whole conversation, oldest first, both directions (`direction` is `inbound` or `outbound`).

    ## Send with attachments

    ```bash
    printf 'Quarterly numbers\\n' > report.txt
    curl -sS -X POST "{base}/v1/inboxes/$OPENMAIL_INBOX_ID/send" \\
      -H "Authorization: Bearer $OPENMAIL_API_KEY" \\
      -H "Idempotency-Key: $(uuidgen)" \\
      -F "to=recipient@example.com" \\
      -F "subject=Report attached" \\
      -F "body=See the attached file." \\
      -F "attachments=@report.txt"
    ```

    Repeat `-F "attachments=@..."` for more files; at most 25 MB in all.

    ## Wait for the next email (WebSocket)

    ```bash
    python3 - <<'EOF'
    import asyncio, json, os
    import websockets  # pip install websockets

    async def next_email():
        headers = {{"Authorization": f"Bearer {{os.environ['OPENMAIL_API_KEY']}}"}}
        async with websockets.connect("{ws}/v1/ws", additional_headers=headers) as ws:
            await ws.send(json.dumps({{"type": "subscribe", "inbox_ids": [os.environ["OPENMAIL_INBOX_ID"]],
                                      "event_types": ["message.received"],
                                      "after": int(os.environ.get("OPENMAIL_LAST_SEQ", "0"))}}))
            async for raw in ws:
                event = json.loads(raw)
                if event.get("event") == "message.received":
                    print(json.dumps(event, indent=2))
                    return

    asyncio.run(asyncio.wait_for(next_email(), timeout=600))
    EOF
    ```

    Every event has a `seq`; reconnect with `"after": <last seq you handled>` (here: set
    OPENMAIL_LAST_SEQ) and the server first replays what you missed, then streams new events, so
    nothing is lost. The event carries `thread_id` and `message` (`id`, `from`, `to`, `cc`, `subject`,
    `body_text`, `attachments`). Without a WebSocket client, poll
    `{base}/v1/events?after=<seq>&types=message.received` with the same header.

    ## Notes

    - Always send an `Idempotency-Key` (a fresh UUID per email). Retrying with the same key never
      sends twice: the first answer is returned again. The same key with a different body is refused
      (409).
    - Use `threadId` (or `/v1/messages/<id>/reply`) when answering, so conversations stay threaded.
    - A 429 answer means the sending rate limit was reached; wait the `Retry-After` seconds.
    - `$OPENMAIL_*` values come from your environment at run time; never print the API key.
    ''')


def render(*, base_url: str, address: str, inbox_id: str) -> str:
    base = base_url.rstrip("/")
    ws = "wss://" + base[len("https://"):] if base.startswith("https://") else \
        "ws://" + base[len("http://"):] if base.startswith("http://") else base
    return _TEMPLATE.format(base=base, ws=ws, address=address, inbox_id=inbox_id)
