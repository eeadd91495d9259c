"""When the webhook dispatcher wakes: for logged events (one wake for a burst), not for
live-only changes such as an IMAP flag update, and on its tick for retries."""

from __future__ import annotations

import asyncio

from openmailserver.webhooks import _logged_event_or_tick


async def _waited(events: list[dict], tick: float) -> tuple[float, int]:
    """Seconds `_logged_event_or_tick` took with `events` queued, and how many it left."""
    queue: asyncio.Queue = asyncio.Queue()
    for event in events:
        queue.put_nowait(event)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await _logged_event_or_tick(queue, tick)
    return loop.time() - start, queue.qsize()


def test_wakes_at_once_for_logged_events_and_drains_the_burst() -> None:
    took, left = asyncio.run(_waited([{"type": "message.received", "seq": n} for n in range(50)], tick=5))
    assert took < 1 and left == 0


def test_live_only_changes_wait_for_the_tick() -> None:
    live = {"type": "mailbox.changed", "durable": False}
    took, left = asyncio.run(_waited([live] * 20, tick=0.3))
    assert 0.25 <= took < 2 and left == 0


def test_a_logged_event_among_live_ones_wakes_it() -> None:
    live = {"type": "mailbox.changed", "durable": False}
    took, left = asyncio.run(_waited([live, live, {"type": "message.sent"}, live], tick=5))
    assert took < 1 and left == 0


def test_a_logged_event_arriving_later_wakes_it_before_the_tick() -> None:
    async def go() -> float:
        queue: asyncio.Queue = asyncio.Queue()
        queue.put_nowait({"type": "mailbox.changed", "durable": False})
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, queue.put_nowait, {"type": "message.received"})
        start = loop.time()
        await _logged_event_or_tick(queue, 5)
        return loop.time() - start

    assert 0.05 <= asyncio.run(go()) < 1
