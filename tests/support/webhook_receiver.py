"""A real HTTP server on loopback that receives webhooks and checks their signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Records every POST; answers `fail_status` to the first `fail_first` requests of each event."""

    def __init__(self, secret: str = "", fail_first: int = 0, fail_status: int = 500) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if len(raw) < length:  # the sender died mid-request (tests SIGKILL it): nothing arrived
                    self.close_connection = True
                    return
                with receiver.lock:
                    body = json.loads(raw)
                    entry = {"body": body, "raw": raw, "headers": dict(self.headers),
                             "valid": receiver.valid(raw, self.headers)}
                    receiver.requests.append(entry)
                    tries = sum(1 for r in receiver.requests if r["body"]["event_id"] == body["event_id"])
                status = receiver.fail_status if tries <= receiver.fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def valid(self, raw: bytes, headers) -> bool:
        expected = hmac.new(self.secret.encode(), f"{headers['X-Timestamp']}.".encode() + raw,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, headers.get("X-Signature", ""))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self, event_type: str | None = None) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if event_type is None or r["body"]["event"] == event_type]
