"""Small helpers for tests that speak SMTP: building messages and raw sessions."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import format_datetime, localtime, make_msgid


def build_message(sender: str, to: str, subject: str = "hello", body: str = "hi there\n",
                  **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(localtime())
    msg["Message-ID"] = headers.pop("message_id", None) or make_msgid(domain="test.invalid")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def send(port: int, sender: str, recipients: list[str], data: bytes, starttls: bool = False,
         **options) -> dict:
    """Send one message with smtplib; returns smtplib's refused-recipient dict."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        if starttls:
            client.starttls(context=insecure_tls())
            client.ehlo("client.test")
        return client.sendmail(sender, recipients, data, **options)


def insecure_tls() -> ssl.SSLContext:
    """Test daemons use self-signed certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class RawSMTP:
    """A line-level SMTP client for malformed input."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """One complete (possibly multi-line) reply."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return "\n".join(lines) if lines else ""
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: bytes | str) -> str:
        if isinstance(line, str):
            line = line.encode("utf-8") + b"\r\n"
        self.send(line)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met within %.1fs" % timeout)
