"""The Python client over Server-Sent Events, and with an API key, against a real daphne + worker."""
from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import pytest

from apikeys.models import ApiKey
from imagegen_client import Backoff, Client, ImagegenError

from .conftest import SLOW, LiveServer, photo_variant
from .test_client_live import last_seq_of

pytestmark = pytest.mark.django_db(transaction=True)


async def follow_until_done(stream: Any, ids: set[int], seen: list[dict], on_event: Any = None,
                            timeout: float = 90) -> None:
    finished: set[int] = set()
    async with aclosing(aiter(stream)) as events:
        async def read() -> None:
            async for event in events:
                seen.append(event)
                if on_event is not None:
                    await on_event(event)
                if event["data"]["status"] == "completed":
                    finished.add(event["task_id"])
                    if finished >= ids:
                        return

        await asyncio.wait_for(read(), timeout)


async def test_sse_resumes_exactly_after_the_server_crashes(live_server_factory: Any, seller: Any) -> None:
    server: LiveServer = await asyncio.to_thread(live_server_factory, SLOW, TEST_BACKEND_SECONDS="2")
    client = Client(server.url, username=seller.username, password="seller-pass-123", event_transport="sse")
    before = await asyncio.to_thread(client.submit, photo_variant(0))  # events before the stream starts
    stream = client.events(after=0, backoff=Backoff(base=0.2, cap=1.0))
    tasks = [before] + [await asyncio.to_thread(client.submit, photo_variant(i)) for i in (1, 2)]
    seen: list[dict] = []
    crashed = False

    async def crash_once(event: dict) -> None:
        nonlocal crashed
        if event["data"]["status"] == "processing" and not crashed:
            crashed = True
            # The worker goes on producing events while the web process is down.
            await asyncio.to_thread(server.kill_web)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(server.start_web)

    await follow_until_done(stream, {t["id"] for t in tasks}, seen, crash_once)
    last = await asyncio.to_thread(last_seq_of, seller)
    assert crashed and stream.connects >= 2 and stream.mode == "sse"
    assert [e["seq"] for e in seen] == list(range(1, last + 1))  # every event once, in order
    client.close()


async def test_sse_reconnects_at_each_token_expiry_and_loses_nothing(live_server_factory: Any,
                                                                     seller: Any) -> None:
    server: LiveServer = await asyncio.to_thread(live_server_factory, SLOW, TEST_BACKEND_SECONDS="5",
                                                 JWT_ACCESS_SECONDS="2")
    client = Client(server.url, username=seller.username, password="seller-pass-123", event_transport="sse")
    stream = client.events(after=0, backoff=Backoff(base=0.2, cap=1.0))
    task = await asyncio.to_thread(client.submit, photo_variant(0))
    seen: list[dict] = []
    await follow_until_done(stream, {task["id"]}, seen)
    assert stream.connects >= 2  # the server ended the stream at each expiry
    assert [e["seq"] for e in seen] == list(range(1, await asyncio.to_thread(last_seq_of, seller) + 1))
    client.close()


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_an_api_key_client_submits_and_follows_until_its_key_is_revoked(
        live_server_factory: Any, seller: Any, transport: str) -> None:
    server: LiveServer = await asyncio.to_thread(live_server_factory)
    key, raw = await asyncio.to_thread(ApiKey.issue, user=seller, name="integration")
    client = Client(server.url, api_key=raw, event_transport=transport)
    task = await asyncio.to_thread(client.submit, photo_variant(0))
    done = await client.wait_async(task["id"], timeout=60)
    assert done["status"] == "completed"
    await asyncio.to_thread(key.revoke)
    with pytest.raises(ImagegenError) as refused:
        await asyncio.to_thread(client.get, task["id"])
    assert refused.value.status_code == 401
    client.close()
