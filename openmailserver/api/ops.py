"""Operations endpoints without a key: `/metrics` and mail client autoconfiguration."""

from __future__ import annotations

import time
from xml.sax.saxutils import escape

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from ..store import queue
from .base import runtime


async def metrics(request: Request) -> Response:
    rt = runtime(request)
    depth, _ = await rt.adb.read(queue.queue_depth)
    rt.metrics.queue_depth.set(depth)
    return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _xml(text: str) -> Response:
    return Response(text, media_type="application/xml")


async def thunderbird(request: Request) -> Response:
    """Thunderbird's autoconfig format (config-v1.1): IMAP with TLS and SMTP submission with TLS."""
    rt = runtime(request)
    host, domain = escape(rt.settings.mail_host), escape(rt.settings.mail_domain)
    return _xml(f"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="{domain}">
    <domain>{domain}</domain>
    <displayName>{domain} mail</displayName>
    <displayShortName>{domain}</displayShortName>
    <incomingServer type="imap">
      <hostname>{host}</hostname>
      <port>{rt.settings.imaps_port or 993}</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>{host}</hostname>
      <port>{rt.settings.submission_port or 465}</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
""")


async def autodiscover(request: Request) -> Response:
    """Microsoft's POX autodiscover response (used by Outlook and many phones)."""
    rt = runtime(request)
    email = ""
    if request.method == "POST":
        body = (await request.body())[:64 * 1024].decode("utf-8", "replace")
        start, end = body.find("<EMailAddress>"), body.find("</EMailAddress>")
        if start != -1 and end > start:
            email = body[start + len("<EMailAddress>"):end].strip()
    login = escape(email) if "@" in email and len(email) < 255 else ""
    host = escape(rt.settings.mail_host)

    def protocol(kind: str, port: int) -> str:
        return (f"<Protocol><Type>{kind}</Type><Server>{host}</Server><Port>{port}</Port>"
                f"<LoginName>{login}</LoginName><SPA>off</SPA><SSL>on</SSL><AuthRequired>on</AuthRequired>"
                "</Protocol>")

    return _xml('<?xml version="1.0" encoding="utf-8"?>\n'
                '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">'
                '<Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">'
                '<Account><AccountType>email</AccountType><Action>settings</Action>'
                f'{protocol("IMAP", rt.settings.imaps_port or 993)}{protocol("SMTP", rt.settings.submission_port or 465)}'
                '</Account></Response></Autodiscover>\n')


class Timing:
    """ASGI middleware: API latency per route template into /metrics, and the number of the
    worker process that answered in `X-OpenMailserver-Worker` (HTTP responses and WebSocket
    handshakes)."""

    def __init__(self, app, metrics, worker: int) -> None:
        self.app = app
        self.metrics = metrics
        self.worker_header = (b"x-openmailserver-worker", str(worker).encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":
            async def accept(message) -> None:
                if message["type"] == "websocket.accept":
                    message = {**message, "headers": [*message.get("headers", ()), self.worker_header]}
                await send(message)

            await self.app(scope, receive, accept)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), self.worker_header]}
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            self.metrics.api_seconds.labels(scope["method"], getattr(route, "path", "unmatched"),
                                            str(status[0])).observe(time.perf_counter() - started)
