"""The client's event stream against a fake server: resume, dedupe, gaps, auth, dead peers, fallback."""
from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any, AsyncIterator

import httpx
import pytest

from imagegen_client import Backoff, Client, ImagegenError, TokenAuth
from imagegen_client.events import EventStream

from .fake_server import FakeServer


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def client(server: FakeServer) -> Client:
    return Client(server.base_url, token="token-1", refresh_token="refresh-1",
                  transport=server.transport(), async_transport=server.async_transport())


def fast(**overrides: Any) -> dict[str, Any]:
    """Stream options for tests: no real backoff waits."""
    return {"backoff": Backoff(base=0.01, cap=0.05), **overrides}


async def take(stream: AsyncIterator[dict[str, Any]], count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        return [await anext(stream) for _ in range(count)]

    return await asyncio.wait_for(read(), timeout)


def seqs(items: list[dict[str, Any]]) -> list[int]:
    return [item["seq"] for item in items]


async def test_it_replays_then_resumes_after_a_cut_with_no_gap_or_duplicate(server: FakeServer, client: Client) -> None:
    await server.add(3)
    events = client.events(after=0, **fast())
    async with aclosing(aiter(events)) as stream:
        assert seqs(await take(stream, 3)) == [1, 2, 3]
        await server.cut_all()
        await server.add(3)  # happen while we are away
        assert seqs(await take(stream, 3)) == [4, 5, 6]
        await server.add(1)
        assert seqs(await take(stream, 1)) == [7]
    assert events.connects == 2
    assert server.handshakes[1]["after"] == ["3"]


async def test_after_none_starts_from_now(server: FakeServer, client: Client) -> None:
    await server.add(5)
    async with aclosing(aiter(client.events(**fast()))) as stream:
        reader = asyncio.create_task(take(stream, 1))  # "now" is when iteration starts
        await asyncio.wait_for(_until(lambda: server.connections), 10)
        await server.add(1)
        assert seqs(await reader) == [6]


async def test_a_lost_push_is_fetched_from_the_event_log_in_order(server: FakeServer, client: Client) -> None:
    await server.add(1)
    async with aclosing(aiter(client.events(after=0, **fast()))) as stream:
        assert seqs(await take(stream, 1)) == [1]  # connected and synced: what follows is live
        server.drop_pushes = {2, 3}
        await server.add(3)
        assert seqs(await take(stream, 3)) == [2, 3, 4]
    assert server.http_requests == ["GET /api/events/?after=1&wait=0"]


async def test_a_gap_spanning_several_pages_is_filled_page_by_page(server: FakeServer, client: Client) -> None:
    server.page_size = 2
    await server.add(1)
    async with aclosing(aiter(client.events(after=0, **fast()))) as stream:
        assert seqs(await take(stream, 1)) == [1]
        server.drop_pushes = {2, 3, 4, 5, 6}
        await server.add(6)
        assert seqs(await take(stream, 6)) == [2, 3, 4, 5, 6, 7]
    assert len(server.http_requests) == 3  # 2-3, 4-5, 6-7


async def test_duplicates_from_a_racing_replay_or_a_double_push_are_dropped(server: FakeServer, client: Client) -> None:
    async with aclosing(aiter(client.events(after=0, **fast()))) as stream:
        await server.add(2)
        assert seqs(await take(stream, 2)) == [1, 2]
        server.extra_replay = 2  # the next replay repeats 1 and 2
        server.double_pushes = True
        await server.cut_all()
        await server.add(2)
        assert seqs(await take(stream, 2)) == [3, 4]
        await server.add(1)
        assert seqs(await take(stream, 1)) == [5]


async def test_an_expired_token_4001_is_refreshed_and_the_stream_goes_on(server: FakeServer, client: Client) -> None:
    async with aclosing(aiter(client.events(after=0, **fast()))) as stream:
        await server.add(1)
        assert seqs(await take(stream, 1)) == [1]
        server.expire_tokens()
        await server.cut_all(4001)
        await server.add(1)
        assert seqs(await take(stream, 1)) == [2]
    assert any(r.startswith("POST /api/auth/token/refresh/") for r in server.http_requests)
    assert server.handshakes[-1]["token"] == ["token-2"]


async def test_a_silent_connection_is_declared_dead_and_replaced(server: FakeServer, client: Client) -> None:
    events = client.events(after=0, **fast(ping_interval=0.1, pong_grace=0.2))
    async with aclosing(aiter(events)) as stream:
        await server.add(1)
        assert seqs(await take(stream, 1)) == [1]
        server.silent = True  # a half-open connection: no error, no pongs, no pushes
        await server.add(1)
        # Only a new connection's replay can deliver it: the dead-man timer must fire.
        assert seqs(await take(stream, 1)) == [2]
    assert events.connects >= 2


async def test_it_long_polls_when_the_server_has_no_websocket(server: FakeServer, client: Client) -> None:
    server.refuse_upgrade = True
    events = client.events(after=0, **fast(poll_wait=5))
    async with aclosing(aiter(events)) as stream:
        await server.add(2)
        assert seqs(await take(stream, 2)) == [1, 2]
        assert events.mode == "poll"
        await server.add(1)
        assert seqs(await take(stream, 1)) == [3]
    assert events.connects == 0
    assert any("wait=5" in r for r in server.http_requests)


async def test_it_falls_back_after_repeated_failures_and_returns_to_websocket(server: FakeServer, client: Client) -> None:
    port = server.port
    await server.stop()  # nothing listens: every WebSocket connect fails
    auth = TokenAuth(server.base_url, token="token-1", refresh_token="refresh-1")
    http = httpx.AsyncClient(base_url=server.base_url, transport=server.async_transport(), auth=auth)
    events = EventStream(http, auth.source(http), 0, close_http=True, fallback_after=2, retry_websocket_after=0.5,
                         poll_wait=1, backoff=Backoff(base=0.01, cap=0.02))
    async with aclosing(aiter(events)) as stream:
        await server.add(1)
        assert seqs(await take(stream, 1)) == [1]
        assert events.mode == "poll"
        await server.start(port)
        seen: list[int] = []
        while not events.connects and len(seen) < 100:  # the stream works only while read
            await server.add(1)
            seen += seqs(await take(stream, 1))
            await asyncio.sleep(0.05)
        assert events.connects == 1 and events.mode == "websocket"
        await server.add(1)
        seen += seqs(await take(stream, 1))
        assert seen == list(range(2, len(seen) + 2))


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_purged_events_yield_a_reset_before_what_remains(server: FakeServer, client: Client) -> None:
    await server.add(5)
    server.purged_through = 3
    async with aclosing(aiter(client.events(after=1, **fast()))) as stream:
        items = await take(stream, 3)
    assert items[0] == {"type": "reset", "last_seq": 5}
    assert seqs(items[1:]) == [4, 5]


def test_backoff_uses_full_jitter_capped_and_resets_after_a_stable_minute() -> None:
    now = [0.0]
    backoff = Backoff(base=0.5, cap=30.0, stable_after=60.0, rng=lambda: 1.0, clock=lambda: now[0])
    ceilings = [backoff.next_delay() for _ in range(8)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    backoff.opened()
    now[0] = 59.0
    backoff.closed()
    assert backoff.next_delay() == 30.0  # up less than a minute: still backing off
    backoff.opened()
    now[0] = 200.0
    backoff.closed()
    assert backoff.next_delay() == 0.5
    assert Backoff(rng=lambda: 0.25).next_delay() == 0.125  # a uniform draw below the ceiling


class Sleeps(list[float]):
    """Records the stream's waits instead of waiting them (the order of events stays real)."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
        await asyncio.sleep(0)


async def test_a_503_or_429_while_long_polling_waits_its_retry_after_and_goes_on(server: FakeServer,
                                                                                 client: Client) -> None:
    server.refuse_upgrade = True
    server.events_failures = [(503, {"Retry-After": "7"}), (429, {"Retry-After": "3"}), (502, {})]
    sleeps = Sleeps()
    async with aclosing(aiter(client.events(after=0, **fast(poll_wait=5, sleep=sleeps)))) as stream:
        await server.add(2)
        assert seqs(await take(stream, 2)) == [1, 2]
        await server.add(1)
        assert seqs(await take(stream, 1)) == [3]
    assert server.events_failures == []
    assert sleeps[:2] == [7.0, 3.0]  # the server's word, not a shorter backoff
    assert 0 <= sleeps[2] <= 0.05  # no Retry-After: plain backoff


async def test_a_503_while_filling_a_gap_reconnects_and_the_replay_fills_it(server: FakeServer,
                                                                           client: Client) -> None:
    sleeps = Sleeps()
    events = client.events(after=0, **fast(sleep=sleeps))
    async with aclosing(aiter(events)) as stream:
        await server.add(1)
        assert seqs(await take(stream, 1)) == [1]
        server.drop_pushes = {2, 3}
        server.events_failures = [(503, {"Retry-After": "4"})]
        await server.add(3)
        assert seqs(await take(stream, 3)) == [2, 3, 4]
        await server.add(1)
        assert seqs(await take(stream, 1)) == [5]
    assert sleeps == [4.0]
    assert events.connects == 2
    assert server.handshakes[-1]["after"] == ["1"]  # resumed from the last seq handed out


async def test_a_client_error_from_the_event_log_ends_the_stream_with_its_detail(server: FakeServer,
                                                                                 client: Client) -> None:
    server.refuse_upgrade = True
    server.events_failures = [(403, {})]
    async with aclosing(aiter(client.events(after=0, **fast(poll_wait=1)))) as stream:
        with pytest.raises(ImagegenError) as caught:
            await take(stream, 1)
    assert caught.value.status_code == 403


async def test_an_expired_token_on_the_event_log_is_renewed_once_and_the_poll_resent(server: FakeServer,
                                                                                    client: Client) -> None:
    server.refuse_upgrade = True
    async with aclosing(aiter(client.events(after=0, **fast(poll_wait=1)))) as stream:
        await server.add(1)
        assert seqs(await take(stream, 1)) == [1]
        server.expire_tokens()
        await server.add(1)
        assert seqs(await take(stream, 1)) == [2]
    refreshes = [r for r in server.http_requests if r.startswith("POST /api/auth/token/refresh/")]
    assert len(refreshes) == 1
