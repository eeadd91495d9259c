"""Composing outgoing mail: missing Message-ID/Date, and RFC 3464 delivery status notifications."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import format_datetime, localtime

from . import header_block, parse_headers


def new_message_id(hostname: str) -> str:
    return f"<{secrets.token_hex(12)}@{hostname}>"


def missing_id_and_date(headers: Message, hostname: str) -> tuple[bytes, dict[str, str]]:
    """The `Message-ID` and `Date` fields to add to a message that lacks them (RFC 5322 §3.6;
    RFC 6409 §8.3 lets submission do it), and their values as the index keeps them
    (`message_id` without brackets, `date`)."""
    added, values = b"", {}
    if headers.get("Message-ID") is None:
        message_id = new_message_id(hostname)
        added += f"Message-ID: {message_id}\r\n".encode("ascii")
        values["message_id"] = message_id[1:-1]
    if headers.get("Date") is None:
        values["date"] = format_datetime(datetime.now(timezone.utc))
        added += f"Date: {values['date']}\r\n".encode("ascii")
    return added, values


_trace_date: tuple[int, str] = (0, "")


def trace_date() -> str:
    """Now, as the date-time of a trace field (RFC 5322 §3.6.7), local time; computed once a second."""
    global _trace_date
    second = int(time.time())
    if _trace_date[0] != second:
        _trace_date = (second, format_datetime(localtime()))
    return _trace_date[1]


def trace_header(name: str, value: str) -> bytes:
    """A header field folded near 78 columns (RFC 5322 §2.2.3)."""
    lines, current = [], f"{name}:"
    for word in value.split(" "):
        if len(current) + 1 + len(word) > 76 and current != f"{name}:":
            lines.append(current)
            current = "\t" + word
        else:
            current += " " + word
    lines.append(current)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def delivery_status_notification(*, reporting_mta: str, sender: str, original: bytes,
                                 failures: list[dict], arrival: datetime) -> bytes:
    """An RFC 3464 `multipart/report` telling `sender` which recipients failed and why.

    Each failure: recipient, status (x.y.z), diagnostic (the remote reply or our reason),
    remote_mta (or None).
    """
    boundary = f"oms-{secrets.token_hex(8)}"
    now = datetime.now(timezone.utc)
    original_headers = parse_headers(original)
    subject = original_headers.get("Subject", "(no subject)")
    human = [
        "This is the mail system at host %s." % reporting_mta,
        "",
        "Your message could not be delivered to one or more recipients.",
        "It is attached below.",
        "",
    ]
    for failure in failures:
        human.append(f"<{failure['recipient']}>: {failure['diagnostic']}")
    per_recipient = []
    for failure in failures:
        block = [
            f"Final-Recipient: rfc822; {failure['recipient']}",
            "Action: failed",
            f"Status: {failure['status']}",
        ]
        if failure.get("remote_mta"):
            block.append(f"Remote-MTA: dns; {failure['remote_mta']}")
        block.append(f"Diagnostic-Code: smtp; {failure['diagnostic']}")
        per_recipient.append("\r\n".join(block))
    status_part = "\r\n".join([
        f"Reporting-MTA: dns; {reporting_mta}",
        f"Arrival-Date: {format_datetime(arrival)}",
    ]) + "\r\n\r\n" + "\r\n\r\n".join(per_recipient) + "\r\n"
    parts = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {format_datetime(now)}",
        f"Message-ID: {new_message_id(reporting_mta)}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: never answer this automatically
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        "",
        "\r\n".join(human),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        status_part,
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        f"Content-Description: Undelivered message headers ({subject})",
        "",
    ]
    head = "\r\n".join(parts).encode("utf-8") + b"\r\n"
    return head + header_block(original).rstrip(b"\r\n") + f"\r\n\r\n--{boundary}--\r\n".encode("ascii")


def compose(*, sender: str, to: list[str], cc: list[str], subject: str, text: str | None, html: str | None,
            reply_to: list[str] | None = None, headers: dict[str, str] | None = None,
            attachments: list[dict] | None = None, sender_name: str = "",
            in_reply_to: str | None = None, references: list[str] | None = None) -> bytes:
    """A new RFC 5322 message: text and/or HTML alternatives plus attachments.

    Attachments are dicts with filename, content_type and content (bytes).
    Header values are checked for CR/LF by the email package (no header injection).
    """
    message = EmailMessage(policy=SMTP)
    message["From"] = HeaderAddress(display_name=sender_name, addr_spec=sender) if sender_name else sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    if reply_to:
        message["Reply-To"] = ", ".join(reply_to)
    message["Subject"] = subject
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        message["References"] = " ".join(f"<{r}>" for r in references)
    for name, value in (headers or {}).items():
        message[name] = value
    if text is not None or html is None:
        message.set_content(text or "")
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    for attachment in attachments or []:
        maintype, _, subtype = attachment["content_type"].partition("/")
        message.add_attachment(attachment["content"], maintype=maintype, subtype=subtype or "octet-stream",
                               filename=attachment["filename"])
    return message.as_bytes()
