"""The outbound queue scheduler (docs/architecture.md, "Mail flow").

Due recipients are grouped by destination domain. A domain gets up to
`delivery_concurrency_per_domain` connections ("lanes"); each lane takes a
chunk of messages, sends them one after another on its connection, and while
the domain has more due mail takes the next chunk on the same connection (as
Postfix's connection cache does), so a busy destination costs one connection
set-up per lane, not one per dispatch. Each recipient's outcome is committed
as soon as the remote answers, so a restart never resends what the remote
accepted. 4xx and connection trouble retry on `retry_schedule`; 5xx, a domain
that cannot receive mail, and expiry after `queue_lifetime` bounce with an
RFC 3464 report in the sender's INBOX (never for a null sender).

Rows are claimed (`in_flight`) and released under one lock, and a lane
releases its rows only after their outcomes are committed: a read that sees a
row as due and unclaimed therefore began after that row's last commit.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

from .. import mime
from ..config import parse_durations
from ..core.deliver import Delivery, deliver
from ..dns.mx import Hop, RouteError, route
from ..mime.compose import delivery_status_notification
from ..runtime import Runtime
from ..store import accounts, messages, queue, spool
from .client import ConnectionFailed, Outbound, Reply

log = logging.getLogger(__name__)

CHUNK = 20  # messages a lane takes from the queue at a time
# Like Postfix's smtp_connection_reuse_time_limit: a connection is not reused for new
# chunks after this long, so a long backlog is spread over fresh MX lookups and hosts.
CONNECTION_REUSE_SECONDS = 300.0
# Messages sent whose outcome could not be recorded (the database refused the write) stay
# claimed this long: released at once, a lane would send them again and again.
HOLD_UNRECORDED_SECONDS = 60.0
IDLE_POLL = 1.0
# While lanes run they take their own work; the dispatcher only starts new lanes, and need
# not read the queue at every new message to do that.
BUSY_SPACING = 0.1


def _by_message(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[row["outbound_id"]].append(row)
    return grouped


def _read_spool(data_dir: Path, path: str | None) -> bytes | None:
    try:
        return spool.read(data_dir, path) if path else None
    except FileNotFoundError:
        return None


def _remove_spools(data_dir: Path, paths: list[str]) -> None:
    for path in paths:
        spool.remove(data_dir, path)


Outcome = tuple[list[dict], Hop | None, dict[str, Reply], str | None]  # rows, hop, replies, TLS


class _Outcomes:
    """A lane's delivery outcomes, committed as they come with at most one write in flight:
    what arrives while one commits goes into the next (group commit at the lane)."""

    def __init__(self, runner: QueueRunner) -> None:
        self.runner = runner
        self.waiting: list[Outcome] = []
        self.finished: list[str] = []
        self.unrecorded: list[dict] = []  # rows whose outcome could not be committed
        self.task: asyncio.Task | None = None

    def add(self, rows: list[dict], hop: Hop | None, replies: dict[str, Reply], tls: str | None) -> None:
        self.waiting.append((rows, hop, replies, tls))
        if self.task is None:
            self.task = asyncio.create_task(self._commit())

    async def _commit(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    self.finished += await self.runner._settle_many(batch)
                except Exception as exc:  # noqa: BLE001 - not recorded: the rows stay due (and are
                    # held back a while); the remote's duplicate check (or ours) meets the message again.
                    log.error("could not record %d delivery outcomes: %s", len(batch), exc)
                    self.unrecorded += [row for rows, *_ in batch for row in rows]
        finally:
            self.task = None

    async def committed(self) -> list[str]:
        """Wait until every outcome added so far is committed; the spool files now unneeded."""
        while self.task is not None:
            await asyncio.shield(self.task)
        return self.finished


class QueueRunner:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.schedule = parse_durations(rt.settings.retry_schedule)
        self.in_flight: set[str] = set()
        self.in_flight_rows: dict[str, int] = defaultdict(int)  # per lane key
        self.held: set[str] = set()  # claimed rows whose outcome could not be recorded
        self.lanes: dict[str, int] = defaultdict(int)  # open lanes per lane key
        self.tasks: set[asyncio.Task] = set()
        self._claims = asyncio.Lock()
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
            except TimeoutError:
                pass
            if self.tasks and not self._stopping:
                await asyncio.sleep(BUSY_SPACING)
            self.rt.queue_wakeup.clear()

    def _key(self, row: dict) -> str:
        return "relay" if self.settings.relay_host else row["domain"]

    def _total_lanes(self) -> int:
        return sum(self.lanes.values())

    def _claim(self, rows: list[dict]) -> None:
        for row in rows:
            self.in_flight.add(row["id"])
            self.in_flight_rows[self._key(row)] += 1

    async def _release(self, rows: list[dict]) -> None:
        """Give rows back once their outcome is committed (or they were never tried)."""
        async with self._claims:
            for row in rows:
                if row["id"] in self.in_flight and row["id"] not in self.held:
                    self.in_flight.discard(row["id"])
                    self.in_flight_rows[self._key(row)] -= 1

    def _hold(self, rows: list[dict]) -> None:
        """Keep `rows` claimed for HOLD_UNRECORDED_SECONDS, then give them back."""
        self.held.update(row["id"] for row in rows)

        def unhold() -> None:
            self.held.difference_update(row["id"] for row in rows)
            task = asyncio.create_task(self._release(rows))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        asyncio.get_running_loop().call_later(HOLD_UNRECORDED_SECONDS, unhold)

    async def _dispatch(self) -> None:
        if self._total_lanes() >= self.settings.delivery_concurrency:
            return
        # Which destinations have due mail, oldest first: one short answer however long the
        # queue, so a big backlog for one domain hides no other domain's mail. Read before
        # taking the lock (lanes release and claim meanwhile): `_take` checks again under it.
        counts: dict[str, int] = defaultdict(int)
        for domain, count in await self.rt.adb.read(queue.due_domains, time.time()):
            counts["relay" if self.settings.relay_host else domain] += count
        async with self._claims:
            for key, count in counts.items():
                # Start lanes while the domain has connections free and unclaimed mail; each
                # takes a chunk now and the rest later.
                while (count > self.in_flight_rows[key]
                       and self.lanes[key] < self.settings.delivery_concurrency_per_domain
                       and self._total_lanes() < self.settings.delivery_concurrency):
                    lane = await self._take(key)
                    if not lane:
                        break
                    self.lanes[key] += 1
                    task = asyncio.create_task(self._lane(key, lane))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

    async def _take(self, key: str) -> list[dict]:
        """Claim up to CHUNK due messages of `key`'s that no lane holds (the caller holds the lock).
        Rows in flight come first in the read, so reading that many more finds the others."""
        domain = None if self.settings.relay_host else key
        rows = await self.rt.adb.read(queue.due, time.time(), self.in_flight_rows[key] + CHUNK, domain)
        fresh = list(_by_message([r for r in rows if r["id"] not in self.in_flight]).values())[:CHUNK]
        chunk = [row for message_rows in fresh for row in message_rows]
        self._claim(chunk)
        return chunk

    async def _next_chunk(self, key: str) -> list[dict]:
        """The lane's next messages: due, for its domain, claimed by no other lane."""
        if self._stopping:
            return []
        async with self._claims:
            return await self._take(key)

    async def stop(self) -> None:
        self._stopping = True
        self.rt.queue_wakeup.set()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- one connection ----------------------------------------------------------

    async def _lane(self, key: str, rows: list[dict]) -> None:
        """One connection to `key`'s mail host, kept while the domain has due mail."""
        connection: Outbound | None = None
        opened = 0.0
        settled: set[str] = set()
        try:
            while rows:
                if connection is not None and time.monotonic() - opened > CONNECTION_REUSE_SECONDS:
                    await connection.close()
                    connection = None
                if connection is None:
                    connection = await self._open(key, rows)
                    opened = time.monotonic()
                if connection is not None:
                    connection = await self._send_chunk(connection, key, rows, settled)
                await self._release(rows)
                rows = []  # released: the finally below must not release them again
                if connection is None:
                    break
                rows = await self._next_chunk(key)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never lose track of rows
            log.exception("delivery to %s failed unexpectedly", key)
            unsettled = [r for r in rows if r["id"] not in settled]
            try:
                await self._finish(await self._settle_all(unsettled, None,
                                                          Reply(451, "4.3.0 internal error during delivery")))
            except Exception:  # noqa: BLE001 - the rows stay due and are tried again, later
                log.exception("could not record the failed delivery to %s", key)
                # Released at once they would be taken again straight away: another MX lookup
                # and connection (or, after a send, another copy) every time round.
                self._hold(unsettled)
        finally:
            if connection is not None:
                await connection.close()
            await self._release(rows)
            self.lanes[key] -= 1
            self.rt.queue_wakeup.set()

    def _relay(self) -> tuple[list[Hop], int]:
        host, _, port = self.settings.relay_host.rpartition(":")
        if not host:
            host, port = self.settings.relay_host, "25"
        ips = sorted({info[4][0] for info in socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)})
        return [Hop(host, ip) for ip in ips], int(port)

    async def _open(self, domain: str, rows: list[dict]) -> Outbound | None:
        """A connection to the first mail host that answers; None (rows settled) when none does."""
        try:
            if self.settings.relay_host:
                hops, port = await self.rt.run(self._relay)
            else:
                hops, port = await self.rt.run(route, domain), self.settings.remote_smtp_port
        except RouteError as exc:
            code = 550 if exc.permanent else 451
            await self._finish(await self._settle_all(rows, None, Reply(code, f"{exc.status} {exc}")))
            return None
        except OSError as exc:
            await self._finish(await self._settle_all(rows, None,
                                                      Reply(451, f"4.4.3 relay host lookup failed: {exc}")))
            return None
        failure = "no mail host answered"
        for hop in hops:
            candidate = Outbound(hop, port, self.settings.mail_host, self.settings.relay_username,
                                 self.settings.relay_password)
            try:
                await candidate.open()
            except ConnectionFailed as exc:
                failure = f"{hop.host}[{hop.ip}]: {exc}"
                continue
            return candidate
        await self._finish(await self._settle_all(rows, hops[0] if hops else None, Reply(451, f"4.4.1 {failure}")))
        return None

    async def _send_chunk(self, connection: Outbound, key: str, rows: list[dict],
                          settled: set[str]) -> Outbound | None:
        """Send each message of `rows` on `connection`; its outcomes are committed when this
        returns. Returns the connection to go on with, or None when it failed."""
        grouped = list(_by_message(rows).values())
        outcomes = _Outcomes(self)
        # Each message's spool file is read while the one before it is sent: a lane holds two
        # messages in memory at most, however large its chunk.
        reads: dict[int, asyncio.Future] = {}

        def start(i: int) -> None:
            if i < len(grouped) and i not in reads:
                reads[i] = asyncio.ensure_future(self.rt.run(_read_spool, self.settings.data_dir,
                                                             grouped[i][0]["spool"]))

        async def data_of(i: int) -> bytes | None:
            start(i)
            start(i + 1)
            return await reads.pop(i)

        try:
            next_connection = await self._send_each(connection, key, grouped, data_of, outcomes, settled)
        finally:
            for future in reads.values():  # reads not needed any more (a lane that stopped early)
                future.cancel()
                future.add_done_callback(lambda done: done.cancelled() or done.exception())
            # The caller releases the rows next: their outcomes must be committed by then.
            await self._finish(await outcomes.committed())
            if outcomes.unrecorded:
                self._hold(outcomes.unrecorded)
        if outcomes.unrecorded and next_connection is not None:
            await next_connection.close()  # the database refuses writes: this lane stops here
            return None
        return next_connection

    async def _send_each(self, connection: Outbound, key: str, grouped: list[list[dict]],
                         data_of: Callable[[int], Awaitable[bytes | None]], outcomes: _Outcomes,
                         settled: set[str]) -> Outbound | None:
        index = 0
        while index < len(grouped):
            message_rows, data = grouped[index], await data_of(index)
            first = message_rows[0]
            if data is None:
                settled.update(r["id"] for r in message_rows)
                outcomes.add(message_rows, None, {r["recipient"]: Reply(550, "5.3.0 queued message file is missing")
                                                  for r in message_rows}, None)
                index += 1
                continue
            try:
                with self.rt.metrics.delivery_seconds.time():
                    replies = await connection.send(first["sender"], [r["recipient"] for r in message_rows], data)
            except ConnectionFailed as exc:
                await connection.close()
                if connection.used:
                    # The remote may close a connection that has carried mail (an idle timeout, a
                    # per-connection limit): a fresh one before calling the destination unreachable.
                    # Each replacement has to deliver something before it may be replaced in turn.
                    reopened = await self._open(key, [r for m in grouped[index:] for r in m])
                    if reopened is None:
                        settled.update(r["id"] for m in grouped[index:] for r in m)
                        return None
                    connection = reopened
                    continue
                for pending in grouped[index:]:
                    settled.update(r["id"] for r in pending)
                    outcomes.add(pending, connection.hop, {r["recipient"]: Reply(451, f"4.4.2 {exc}")
                                                           for r in pending}, connection.tls)
                return None
            settled.update(r["id"] for r in message_rows)
            outcomes.add(message_rows, connection.hop, replies, connection.tls)
            index += 1
        return connection

    async def _finish(self, spools: list[str] | str | None) -> None:
        """Remove the spool files of messages no recipient waits for any more."""
        paths = [spools] if isinstance(spools, str) else [p for p in spools or [] if p]
        if paths:
            await self.rt.run(_remove_spools, self.settings.data_dir, paths)

    # -- outcomes ----------------------------------------------------------------

    async def _settle_all(self, rows: list[dict], hop: Hop | None, reply: Reply,
                          tls: str | None = None) -> list[str]:
        """Record the same reply for every row; returns the spool files now unneeded."""
        return await self._settle_many([(message_rows, hop, {r["recipient"]: reply for r in message_rows}, tls)
                                        for message_rows in _by_message(rows).values()])

    def _next_attempt(self, row: dict[str, Any]) -> float | None:
        """When to retry after this failure, or None when the message expires first."""
        delay = self.schedule[min(row["attempts"], len(self.schedule) - 1)]
        at = time.time() + delay
        return None if at > row["expires_at"] else at

    async def _settle_many(self, outcomes: list[Outcome]) -> list[str]:
        """Record each recipient's outcome (one transaction for them all), then publish and
        bounce. Returns the spool files of messages no recipient needs any more."""

        def commit(conn: sqlite3.Connection) -> list[tuple[list[dict], list[dict], str | None]]:
            return [self._commit_outcome(conn, *outcome) for outcome in outcomes]

        results = await self.rt.adb.write(commit)
        finished = []
        for (rows, hop, replies, tls), (events, bounced, finished_spool) in zip(outcomes, results):
            for event in events:
                self.rt.hub.publish(event)
                self.rt.metrics.outcomes.labels(event["payload"]["state"]).inc()
            for row in rows:
                log.info("delivery %s to=<%s> via=%s tls=%s: %s", row["id"], row["recipient"],
                         f"{hop.host}[{hop.ip}]" if hop else "-", tls or "none", replies.get(row["recipient"]))
            if bounced:
                try:
                    await self._bounce(rows[0], bounced)
                except Exception:  # noqa: BLE001 - the outcome is recorded; the batch goes on
                    log.exception("could not put the bounce for %s in the sender's INBOX", rows[0]["outbound_id"])
            if finished_spool:
                finished.append(finished_spool)
        return finished

    def _commit_outcome(self, conn: sqlite3.Connection, rows: list[dict], hop: Hop | None,
                        replies: dict[str, Reply], tls: str | None) -> tuple[list[dict], list[dict], str | None]:
        """One message's recipients: attempts, states and events; returns the events, the
        bounced recipients and, when the message is finished, its spool file."""
        bounced: list[dict] = []
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
        if outbound and outbound["state"] in queue.FINISHED and outbound["spool"]:
            queue.release_spool(conn, outbound_id)
            return events, bounced, outbound["spool"]
        return events, bounced, None

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
