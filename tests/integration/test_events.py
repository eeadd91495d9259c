"""The event log over HTTP, WebSocket and SSE: replay after a seq, then live, nothing missed."""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets

from support.mail import build_message, send


def _deliver(daemon, subject: str, to: str = "agent@ev.test") -> None:
    send(daemon.smtp_port, "x@remote.test", [to], build_message("x@remote.test", to, subject, body=f"{subject} body\n"))


def test_events_api_and_isolation(make_daemon):
    daemon = make_daemon("ev")
    agent = daemon.create_mailbox("agent")
    other = daemon.create_mailbox("other")
    _deliver(daemon, "first")
    _deliver(daemon, "for other", "other@ev.test")
    with daemon.http(agent["api_key"]["key"]) as client:
        page = client.get("/v1/events").json()
        types = [e["event"] for e in page["events"]]
        assert types == ["mailbox.created", "message.received"]
        received = page["events"][1]
        assert received["inbox_id"] == agent["mailbox"]["id"] and received["event_id"].startswith("evt_")
        assert received["message"]["subject"] == "first" and received["message"]["body_text"] == "first body\n"
        assert received["thread_id"] and received["message"]["received_at"]
        assert client.get("/v1/events", params={"after": page["next_after"]}).json()["events"] == []
        assert client.get("/v1/events", params={"mailbox": other["mailbox"]["id"]}).status_code == 404
        assert client.get("/v1/events", params={"after": "x"}).status_code == 422
    with daemon.http() as admin:
        everything = admin.get("/v1/events", params={"types": "message.received"}).json()["events"]
        assert [e["message"]["subject"] for e in everything] == ["first", "for other"]


def test_websocket_replays_after_reconnect_then_streams_live(make_daemon):
    daemon = make_daemon("ev")
    agent = daemon.create_mailbox("agent")
    key = agent["api_key"]["key"]
    url = daemon.api_url.replace("http://", "ws://") + "/v1/ws"

    async def scenario():
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            await ws.send(json.dumps({"type": "subscribe", "event_types": ["message.received"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            await asyncio.to_thread(_deliver, daemon, "live one")
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert first["event"] == "message.received" and first["message"]["subject"] == "live one"
            last_seq = first["seq"]
        # Disconnected: three messages arrive meanwhile.
        for n in range(3):
            await asyncio.to_thread(_deliver, daemon, f"missed {n}")
        async with websockets.connect(f"{url}?key={key}") as ws:
            await ws.send(json.dumps({"type": "subscribe", "event_types": ["message.received"], "after": last_seq}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            replayed = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
            assert [e["message"]["subject"] for e in replayed] == ["missed 0", "missed 1", "missed 2"]
            assert [e["seq"] for e in replayed] == sorted(e["seq"] for e in replayed)
            await asyncio.to_thread(_deliver, daemon, "live again")
            live = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert live["message"]["subject"] == "live again"
            try:
                extra = await asyncio.wait_for(ws.recv(), 1.5)
            except asyncio.TimeoutError:
                extra = None
            assert extra is None  # exactly those, nothing twice

    asyncio.run(scenario())


def test_websocket_auth_and_bad_subscribe(make_daemon):
    daemon = make_daemon("ev")
    agent = daemon.create_mailbox("agent")
    url = daemon.api_url.replace("http://", "ws://") + "/v1/ws"

    async def scenario():
        try:
            async with websockets.connect(url) as ws:
                await ws.recv()
            raise AssertionError("an unauthenticated socket must be refused")
        except (websockets.InvalidStatus, websockets.ConnectionClosed):
            pass
        async with websockets.connect(f"{url}?key={agent['api_key']['key']}") as ws:
            await ws.send(json.dumps({"type": "nonsense"}))
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["error"] == "invalid_request"
        async with websockets.connect(f"{url}?key={agent['api_key']['key']}") as ws:
            await ws.send(json.dumps({"type": "subscribe", "inbox_ids": ["mbx_someoneelse"]}))
            assert json.loads(await ws.recv())["error"] == "not_found"

    asyncio.run(scenario())


def test_sse_honours_last_event_id(make_daemon):
    daemon = make_daemon("ev")
    agent = daemon.create_mailbox("agent")
    _deliver(daemon, "one")
    _deliver(daemon, "two")
    with daemon.http(agent["api_key"]["key"]) as client:
        events = client.get("/v1/events", params={"types": "message.received"}).json()["events"]
    first_seq = events[0]["seq"]
    seen = []
    headers = {"X-OpenMailserver-Key": agent["api_key"]["key"], "Last-Event-ID": str(first_seq)}
    with httpx.stream("GET", f"{daemon.api_url}/v1/events/stream", headers=headers,
                      params={"types": "message.received"}, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                name, _, value = line.partition(":")
                block[name] = value.strip()
            elif not line and "data" in block:
                seen.append(block)
                if len(seen) == 1:
                    _deliver(daemon, "three")
                if len(seen) == 2:
                    break
                block = {}
    subjects = [json.loads(b["data"])["message"]["subject"] for b in seen]
    assert subjects == ["two", "three"]
    assert int(seen[0]["id"]) > first_seq and seen[0]["event"] == "message.received"
