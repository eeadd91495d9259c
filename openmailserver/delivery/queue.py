"""The outbound queue scheduler (DESIGN §4).

Due recipients are grouped by destination domain; each group gets one
connection that carries all of its messages. Each recipient's outcome is
committed as soon as the remote answers, so a restart never resends what the
remote accepted. 4xx and connection trouble retry on `retry_schedule`; 5xx,
a domain that cannot receive mail, and expiry after `queue_lifetime` bounce
with an RFC 3464 report in the sender's INBOX (never for a null sender).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from .. import mime
from ..config import parse_durations
from ..core.deliver import Delivery, deliver
from ..mime.compose import delivery_status_notification
from ..runtime import Runtime
from ..store import accounts, messages, queue, spool
from .client import ConnectionFailed, Outbound, Reply
from .mx import Hop, RouteError, route

log = logging.getLogger(__name__)

BATCH = 500
IDLE_POLL = 1.0


class QueueRunner:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.schedule = parse_durations(rt.settings.retry_schedule)
        self.in_flight: set[str] = set()
        self.total = asyncio.Semaphore(rt.settings.delivery_concurrency)
        self.per_domain: dict[str, int] = defaultdict(int)
        self.tasks: set[asyncio.Task] = set()
        self._stopping = False

    # -- scheduling ------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self._dispatch()
            except Exception:  # noqa: BLE001 - the scheduler must survive anything
                log.exception("queue dispatch failed")
            try:
                await asyncio.wait_for(self.rt.queue_wakeup.wait(), timeout=IDLE_POLL)
            except asyncio.TimeoutError:
                pass
            self.rt.queue_wakeup.clear()

    async def _dispatch(self) -> None:
        rows = await self.rt.adb.read(queue.due, time.time(), BATCH)
        by_domain: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            if row["id"] not in self.in_flight:
                by_domain["relay" if self.settings.relay_host else row["domain"]].append(row)
        for domain, group in by_domain.items():
            free = self.settings.delivery_concurrency_per_domain - self.per_domain[domain]
            if free <= 0:
                continue
            # Spread the domain's messages over its free connections, keeping each
            # message's recipients together.
            by_message: dict[str, list[dict]] = defaultdict(list)
            for row in group:
                by_message[row["outbound_id"]].append(row)
            lanes: list[list[dict]] = [[] for _ in range(min(free, len(by_message)))]
            for n, message_rows in enumerate(by_message.values()):
                lanes[n % len(lanes)].extend(message_rows)
            for lane in lanes:
                self.in_flight.update(r["id"] for r in lane)
                self.per_domain[domain] += 1
                task = asyncio.create_task(self._deliver_lane(domain, lane))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        self._stopping = True
        self.rt.queue_wakeup.set()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- one connection ----------------------------------------------------------

    async def _deliver_lane(self, domain: str, rows: list[dict]) -> None:
        try:
            async with self.total:
                # The dispatcher's read may predate a lane that just finished some of these rows.
                pending = await self.rt.adb.read(queue.still_pending, [r["id"] for r in rows])
                live = [r for r in rows if r["id"] in pending]
                if live:
                    await self._attempt(domain, live)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never lose track of rows
            log.exception("delivery to %s failed unexpectedly", domain)
            await self._settle_all(rows, None, Reply(451, "4.3.0 internal error during delivery"))
        finally:
            self.per_domain[domain] -= 1
            self.in_flight.difference_update(r["id"] for r in rows)
            if rows:
                self.rt.queue_wakeup.set()

    def _relay(self) -> tuple[list[Hop], int]:
        host, _, port = self.settings.relay_host.rpartition(":")
        if not host:
            host, port = self.settings.relay_host, "25"
        ips = sorted({info[4][0] for info in socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)})
        return [Hop(host, ip) for ip in ips], int(port)

    async def _attempt(self, domain: str, rows: list[dict]) -> None:
        try:
            if self.settings.relay_host:
                hops, port = await self.rt.run(self._relay)
            else:
                hops, port = await self.rt.run(route, domain), self.settings.remote_smtp_port
        except RouteError as exc:
            code = 550 if exc.permanent else 451
            await self._settle_all(rows, None, Reply(code, f"{exc.status} {exc}"))
            return
        except OSError as exc:
            await self._settle_all(rows, None, Reply(451, f"4.4.3 relay host lookup failed: {exc}"))
            return
        connection, failure = None, "no mail host answered"
        for hop in hops:
            candidate = Outbound(hop, port, self.settings.mail_host, self.settings.relay_username,
                                 self.settings.relay_password)
            try:
                await candidate.open()
            except ConnectionFailed as exc:
                failure = f"{hop.host}[{hop.ip}]: {exc}"
                continue
            connection = candidate
            break
        if connection is None:
            await self._settle_all(rows, hops[0] if hops else None, Reply(451, f"4.4.1 {failure}"))
            return
        try:
            by_message: dict[str, list[dict]] = defaultdict(list)
            for row in rows:
                by_message[row["outbound_id"]].append(row)
            settled: set[str] = set()
            for message_rows in by_message.values():
                first = message_rows[0]
                try:
                    data = await self.rt.run(spool.read, self.settings.data_dir, first["spool"])
                except (FileNotFoundError, TypeError):
                    await self._settle_all(message_rows, None, Reply(550, "5.3.0 queued message file is missing"))
                    settled.update(r["id"] for r in message_rows)
                    continue
                try:
                    with self.rt.metrics.delivery_seconds.time():
                        replies = await connection.send(first["sender"], [r["recipient"] for r in message_rows],
                                                        data)
                except ConnectionFailed as exc:
                    pending = [r for r in rows if r["id"] not in settled]
                    await self._settle_all(pending, connection.hop, Reply(451, f"4.4.2 {exc}"), connection.tls)
                    return
                await self._settle(message_rows, connection.hop, replies, connection.tls)
                settled.update(r["id"] for r in message_rows)
        finally:
            await connection.close()

    # -- outcomes ----------------------------------------------------------------

    async def _settle_all(self, rows: list[dict], hop: Hop | None, reply: Reply, tls: str | None = None) -> None:
        by_message: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_message[row["outbound_id"]].append(row)
        for message_rows in by_message.values():
            await self._settle(message_rows, hop, {r["recipient"]: reply for r in message_rows}, tls)

    def _next_attempt(self, row: dict[str, Any]) -> float | None:
        """When to retry after this failure, or None when the message expires first."""
        delay = self.schedule[min(row["attempts"], len(self.schedule) - 1)]
        at = time.time() + delay
        return None if at > row["expires_at"] else at

    async def _settle(self, rows: list[dict], hop: Hop | None, replies: dict[str, Reply], tls: str | None) -> None:
        """Record each recipient's outcome in one transaction, then publish, bounce, clean up."""
        bounced: list[dict] = []

        def commit(conn: sqlite3.Connection) -> tuple[list[dict], str | None]:
            bounced.clear()
            events = []
            for row in rows:
                reply = replies.get(row["recipient"]) or Reply(451, "4.3.0 no reply recorded")
                if reply.ok:
                    state, next_at = "delivered", None
                elif reply.permanent:
                    state, next_at = "bounced", None
                else:
                    next_at = self._next_attempt(row)
                    state = "deferred" if next_at is not None else "bounced"
                    if next_at is None:
                        reply = Reply(reply.code, f"{reply.text} (gave up: the message expired in the queue)")
                queue.record_attempt(conn, row, outcome=state, mx_host=hop.host if hop else None,
                                     ip=hop.ip if hop else None, tls=tls, code=reply.code, response=reply.text)
                queue.set_state(conn, row["id"], state, next_attempt_at=next_at, code=reply.code,
                                error=None if reply.ok else str(reply), count_attempt=True)
                if state == "bounced":
                    bounced.append({"row": row, "reply": reply, "hop": hop})
                events.append(messages.add_event(conn, f"message.{state}", row["mailbox_id"], {
                    "outbound_id": row["outbound_id"], "recipient": row["recipient"], "state": state,
                    "rfc822_message_id": row["message_id"], "mx": hop.host if hop else None,
                    "code": reply.code, "response": reply.text, "tls": tls}))
            outbound_id = rows[0]["outbound_id"]
            outbound = queue.refresh_outbound(conn, outbound_id)
            finished = not any(r["state"] in queue.PENDING + ("held",) for r in queue.queue_rows_of(conn, outbound_id))
            if finished and outbound and outbound["spool"]:
                conn.execute("UPDATE outbound SET spool = NULL WHERE id = ?", (outbound_id,))
                return events, outbound["spool"]
            return events, None

        events, finished_spool = await self.rt.adb.write(commit)
        for event in events:
            self.rt.hub.publish(event)
            self.rt.metrics.outcomes.labels(event["payload"]["state"]).inc()
        for row in rows:
            log.info("delivery %s to=<%s> via=%s tls=%s: %s", row["id"], row["recipient"],
                     f"{hop.host}[{hop.ip}]" if hop else "-", tls or "none", replies.get(row["recipient"]))
        if bounced:
            await self._bounce(rows[0], bounced)
        if finished_spool:
            await self.rt.run(spool.remove, self.settings.data_dir, finished_spool)

    async def _bounce(self, first: dict, failures: list[dict]) -> None:
        """An RFC 3464 report to the local sender; never for a null sender (RFC 5321 §6.1)."""
        if not first["sender"] or not first["mailbox_id"]:
            return
        mailbox = await self.rt.adb.read(accounts.get_mailbox_by_id, first["mailbox_id"])
        if mailbox is None:
            return
        try:
            original = await self.rt.run(spool.read, self.settings.data_dir, first["spool"])
        except (FileNotFoundError, TypeError):
            original = f"Message-ID: <{first['message_id']}>\r\nSubject: {first['subject']}\r\n\r\n".encode()
        report = delivery_status_notification(
            reporting_mta=self.settings.mail_host, sender=first["sender"], original=original,
            arrival=datetime.fromisoformat(first["submitted_at"].replace("Z", "+00:00")),
            failures=[{"recipient": f["row"]["recipient"], "status": _status_of(f["reply"]),
                       "diagnostic": str(f["reply"]), "remote_mta": f["hop"].host if f["hop"] else None}
                      for f in failures])
        head = (f"Return-Path: <>\r\nDelivered-To: {first['sender']}\r\n").encode()
        meta = {**mime.index_meta(report), "envelope_from": ""}
        await deliver(self.rt, [Delivery(mailbox=mailbox, data=head + report, meta=meta)])


def _status_of(reply: Reply) -> str:
    words = reply.text.split()
    if words and words[0].count(".") == 2 and words[0][0] in "245":
        status = words[0]
        return "5" + status[1:] if status[0] == "4" else status
    return "5.0.0" if reply.permanent else "4.4.7"
