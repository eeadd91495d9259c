"""Live fan-out of committed changes to listeners: IMAP IDLE, WebSocket and SSE streams.

The durable event log is the `events` table (`store.messages.add_event`),
written in the same transaction as each change. After the commit, the writer
publishes the event here so sessions waiting on a mailbox wake at once. This
hub is memory only: a listener that was not connected reads the log instead.
Changes that are not logged events (flag updates, expunges made by an IMAP or
API client) are published with `durable=False` so other sessions see them.

A change published in one worker process reaches the others through `broadcast`
(the supervisor's relay); what arrives from them is `deliver`ed here only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

QUEUE_LIMIT = 1000


class Hub:
    def __init__(self, broadcast: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._broadcast = broadcast
        self._subscribers: dict[str | None, set[asyncio.Queue]] = defaultdict(set)
        self._durable_only: set[asyncio.Queue] = set()

    @contextmanager
    def subscribe(self, mailbox_id: str | None = None, durable_only: bool = False) -> Iterator[asyncio.Queue]:
        """A queue receiving the events of one mailbox (None: every mailbox); with
        `durable_only`, only those in the log."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._subscribers[mailbox_id].add(queue)
        if durable_only:
            self._durable_only.add(queue)
        try:
            yield queue
        finally:
            self._durable_only.discard(queue)
            self._subscribers[mailbox_id].discard(queue)
            if not self._subscribers[mailbox_id]:
                del self._subscribers[mailbox_id]

    def publish(self, event: dict[str, Any]) -> None:
        """Called on the event loop after the change is committed: to this process's listeners
        and to every other worker's."""
        self.deliver(event)
        if self._broadcast is not None:
            self._broadcast(event)

    def deliver(self, event: dict[str, Any]) -> None:
        """To this process's listeners."""
        durable = event.get("durable", True)
        for key in (event.get("mailbox_id"), None):
            for queue in self._subscribers.get(key, ()):
                if queue.full():  # a stalled listener loses live events, never blocks others
                    continue
                if durable or queue not in self._durable_only:
                    queue.put_nowait(event)

