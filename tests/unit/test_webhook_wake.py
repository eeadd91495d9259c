"""When the webhook dispatcher wakes: for logged events (one wake for a burst), not for
live-only changes such as an IMAP flag update, and on its tick for retries. The hub keeps
live-only changes out of its queue (`durable_only`)."""

from __future__ import annotations

import asyncio

from openmailserver.events.hub import Hub
from openmailserver.webhooks.dispatcher import _logged_event_or_tick

LIVE = {"type": "mailbox.changed", "mailbox_id": "mbx_1", "durable": False}


async def _waited(events: list[dict], tick: float) -> tuple[float, int]:
    """Seconds `_logged_event_or_tick` took with `events` published, and how many it left."""
    hub = Hub()
    with hub.subscribe(None, durable_only=True) as queue:
        for event in events:
            hub.publish(event)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await _logged_event_or_tick(queue, tick)
        return loop.time() - start, queue.qsize()


def test_wakes_at_once_for_logged_events_and_drains_the_burst() -> None:
    took, left = asyncio.run(_waited([{"type": "message.received", "seq": n} for n in range(50)], tick=5))
    assert took < 1 and left == 0


def test_live_only_changes_wait_for_the_tick() -> None:
    took, left = asyncio.run(_waited([LIVE] * 20, tick=0.3))
    assert 0.25 <= took < 2 and left == 0


def test_a_logged_event_among_live_ones_wakes_it() -> None:
    took, left = asyncio.run(_waited([LIVE, LIVE, {"type": "message.sent"}, LIVE], tick=5))
    assert took < 1 and left == 0


def test_a_logged_event_arriving_later_wakes_it_before_the_tick() -> None:
    async def go() -> float:
        hub = Hub()
        with hub.subscribe(None, durable_only=True) as queue:
            hub.publish(LIVE)
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, hub.publish, {"type": "message.received"})
            start = loop.time()
            await _logged_event_or_tick(queue, 5)
            return loop.time() - start

    assert 0.05 <= asyncio.run(go()) < 1


def test_other_subscribers_still_get_live_changes() -> None:
    hub = Hub()
    with hub.subscribe("mbx_1") as mailbox, hub.subscribe(None) as everything, \
            hub.subscribe(None, durable_only=True) as logged:
        hub.publish(LIVE)
        assert mailbox.qsize() == everything.qsize() == 1 and logged.qsize() == 0
