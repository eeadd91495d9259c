"""Signed webhooks, delivered at least once.

Deliveries come from the event log (`store.webhooks.fan_out`), so an event
committed before a crash is delivered after it. Each POST carries the event
in the shape of OpenMail's webhooks plus `delivered_at` and `attempt`, and the headers
`X-Signature` (hex HMAC-SHA256 of "{X-Timestamp}.{raw body}" with the
endpoint's secret), `X-Timestamp` (unix seconds) and `X-Event-Id`. During a
secret rotation the old secret's signature rides along in
`X-Signature-Previous` for 24 hours. A 2xx within `webhook_timeout` is
success; 410 Gone stops at once; anything else retries on
`webhook_retry_schedule` with jitter; an endpoint failing for
`webhook_disable_after` is disabled (`webhook.disabled` event).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.resolver
import httpx

from .. import __version__
from ..config import parse_durations
from ..core.views import render_event
from ..errors import ErrorCode, MailError
from ..runtime import Runtime
from ..store import messages
from ..store import webhooks as store
from ..util import now_iso

log = logging.getLogger(__name__)

ROTATION_GRACE = 24 * 3600
CONCURRENCY = 20
EVENT_TYPES = ("message.received", "message.sent", "message.delivered", "message.deferred", "message.bounced",
               "mailbox.created", "mailbox.deleted", "domain.verified", "webhook.disabled")


def new_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _forbidden_ip(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return not address.is_global or address.is_multicast


def url_problem(url: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """Why `url` may not receive webhooks (SSRF guard), or None. Blocking: resolves the host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL must be http:// or https:// with a host"
    if parts.username or parts.password:
        return "credentials in the URL are not allowed"
    host = parts.hostname.lower()
    if host in allowed_hosts:
        return None
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = []
        for rtype in ("A", "AAAA"):
            try:
                addresses += [r.address for r in dns.resolver.resolve(host, rtype)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                return f"{host} could not be resolved: {exc}"
        if not addresses:
            return f"{host} does not resolve"
    blocked = [a for a in addresses if _forbidden_ip(a)]
    if blocked:
        return (f"{host} resolves to a private or loopback address ({blocked[0]}); "
                "list it in webhook_allowed_hosts to allow it")
    return None


def check_url(rt: Runtime, url: Any) -> str:
    if not isinstance(url, str) or len(url) > 2048:
        raise MailError(ErrorCode.INVALID_URL, "url must be a string of at most 2048 characters")
    problem = url_problem(url, tuple(h.lower() for h in rt.settings.webhook_allowed_hosts))
    if problem:
        raise MailError(ErrorCode.INVALID_URL, f"webhook url refused: {problem}",
                        fix="use a public https URL, or add the host to webhook_allowed_hosts")
    return url


async def _logged_event_or_tick(wake: asyncio.Queue, tick: float = 1.0) -> None:
    """Wait until an event that is in the log arrives (one wake for all that are queued)
    or `tick` seconds pass (retries come due). `wake` has only logged events: live-only
    changes (an IMAP flag update or APPEND) make no webhook deliveries."""
    try:
        await asyncio.wait_for(wake.get(), timeout=tick)
    except asyncio.TimeoutError:
        return
    while not wake.empty():
        wake.get_nowait()


class Dispatcher:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.schedule = parse_durations(rt.settings.webhook_retry_schedule)
        self.in_flight: set[str] = set()
        self.slots = asyncio.Semaphore(CONCURRENCY)
        self.tasks: set[asyncio.Task] = set()
        self.client = httpx.AsyncClient(timeout=rt.settings.webhook_timeout, follow_redirects=False,
                                        headers={"User-Agent": f"openmailserver-webhooks/{__version__}"})
        self._stopping = False

    async def run(self) -> None:
        with self.rt.hub.subscribe(None, durable_only=True) as wake:
            while not self._stopping:
                try:
                    await self.rt.adb.write(store.fan_out, time.time())
                    for row in await self.rt.adb.read(store.due, time.time()):
                        if row["id"] not in self.in_flight:
                            self.in_flight.add(row["id"])
                            task = asyncio.create_task(self._deliver(row))
                            self.tasks.add(task)
                            task.add_done_callback(self.tasks.discard)
                except Exception:  # noqa: BLE001 - the dispatcher must survive anything
                    log.exception("webhook dispatch failed")
                await _logged_event_or_tick(wake)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()

    def _retry_at(self, attempts_done: int) -> float | None:
        if attempts_done > len(self.schedule):
            return None
        delay = self.schedule[attempts_done - 1]
        return time.time() + delay * random.uniform(0.9, 1.1)

    async def _deliver(self, row: dict[str, Any]) -> None:
        try:
            async with self.slots:
                await self._attempt(row)
        finally:
            self.in_flight.discard(row["id"])

    async def _attempt(self, row: dict[str, Any]) -> None:
        rt = self.rt
        hook = await rt.adb.read(store.get, row["webhook_id"])
        if hook is None or not hook["enabled"]:
            return
        attempt = row["attempts"] + 1
        event = await render_event(rt, {"type": row["type"], "event_id": row["event_id"], "seq": row["event_seq"],
                                        "occurred_at": row["occurred_at"], "mailbox_id": row["mailbox_id"],
                                        "payload": json.loads(row["payload"])})
        body = json.dumps({**event, "delivered_at": now_iso(), "attempt": attempt},
                          separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Timestamp": timestamp, "X-Event-Id": row["event_id"],
                   "X-Signature": sign(hook["secret"], timestamp, body)}
        if hook["old_secret"] and (hook["old_secret_expires_at"] or 0) > time.time():
            headers["X-Signature-Previous"] = sign(hook["old_secret"], timestamp, body)
        started = time.perf_counter()
        status, error = None, None
        problem = await rt.run(url_problem, hook["url"], tuple(h.lower() for h in rt.settings.webhook_allowed_hosts))
        if problem:
            error = f"refused: {problem}"
        else:
            try:
                response = await self.client.post(hook["url"], content=body, headers=headers)
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        elapsed = int((time.perf_counter() - started) * 1000)
        if status is not None and 200 <= status < 300:
            state, next_at = "delivered", None
        elif status == 410:
            state, next_at, error = "abandoned", None, "410 Gone: the endpoint asked us to stop"
        else:
            next_at = self._retry_at(attempt)
            state = "pending" if next_at is not None else "failed"
            error = error or f"HTTP {status}"
        await rt.adb.write(self._record, row, hook, status, error, elapsed, state, next_at)
        log.info("webhook %s event %s attempt %d: %s", hook["id"], row["event_id"], attempt,
                 status if status is not None else error)

    def _record(self, conn, row, hook, status, error, elapsed, state, next_at) -> None:
        store.record_attempt(conn, row["id"], status=status, error=error, duration_ms=elapsed, state=state,
                             next_attempt_at=next_at)
        if state == "delivered":
            store.update(conn, hook["id"], failing_since=None)
            return
        failing_since = hook["failing_since"] or time.time()
        store.update(conn, hook["id"], failing_since=failing_since)
        if state == "abandoned" or time.time() - failing_since >= self.rt.settings.webhook_disable_after:
            reason = error if state == "abandoned" else "failing for too long"
            store.update(conn, hook["id"], enabled=False, disabled_reason=reason)
            messages.add_event(conn, "webhook.disabled", hook["mailbox_id"],
                               {"webhook_id": hook["id"], "url": hook["url"], "reason": reason})
