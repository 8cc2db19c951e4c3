"""Many connections reading at once share one query per batch: the token's user, the newest seq,
the pages of a replay or gap fill, and the admission counts in the cache."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework_simplejwt.tokens import AccessToken

from notifications import admission, auth
from notifications.batching import Batcher
from notifications.presence import presence
from notifications.replay import Page, read_page, read_pages

from .support import open_socket, read_until_sync, seed_events, token_for

pytestmark = pytest.mark.django_db(transaction=True)


async def test_concurrent_loads_share_one_call_and_each_gets_its_own_value() -> None:
    seen: list[list[int]] = []

    def squares(keys: list[int]) -> dict[int, int]:
        seen.append(sorted(keys))
        return {k: k * k for k in keys if k != 3}

    batcher: Batcher[int, int] = Batcher(squares, default=-1, database=False)
    assert await asyncio.gather(*(batcher.load(k) for k in [1, 2, 3, 2])) == [1, 4, -1, 4]
    assert seen == [[1, 2, 3]]  # one call, the repeated key asked once


async def test_keys_asked_while_a_call_is_in_flight_form_the_next_batch() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[list[int]] = []
    loop = asyncio.get_running_loop()

    def slow(keys: list[int]) -> dict[int, int]:
        calls.append(sorted(keys))
        if len(calls) == 1:
            loop.call_soon_threadsafe(started.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)
        return {k: k for k in keys}

    batcher: Batcher[int, int] = Batcher(slow, default=0, database=False)
    first = asyncio.ensure_future(batcher.load(0))
    await asyncio.wait_for(started.wait(), 10)
    later = [asyncio.ensure_future(batcher.load(k)) for k in range(1, 51)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), 10) == list(range(51))
    assert calls == [[0], list(range(1, 51))]


async def test_a_failed_call_raises_to_its_callers_and_the_next_batch_works() -> None:
    fail = True

    def flaky(keys: list[int]) -> dict[int, int]:
        if fail:
            raise ConnectionError("database gone")
        return {k: k for k in keys}

    batcher: Batcher[int, int] = Batcher(flaky, default=0, database=False)
    results = await asyncio.gather(batcher.load(1), batcher.load(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    fail = False
    assert await batcher.load(3) == 3


async def test_a_caller_that_goes_away_does_not_break_the_others() -> None:
    batcher: Batcher[int, int] = Batcher(lambda keys: {k: k for k in keys}, default=0, database=False)
    gone = asyncio.ensure_future(batcher.load(1))
    staying = asyncio.ensure_future(batcher.load(2))
    await asyncio.sleep(0)
    gone.cancel()
    assert await asyncio.wait_for(staying, 10) == 2


def test_read_pages_answers_as_read_page_does_with_two_queries(user: Any, other_user: Any,
                                                               django_user_model: Any) -> None:
    seed_events(user, 7)
    seed_events(other_user, 3, start=5)  # 1-4 purged
    quiet = django_user_model.objects.create_user(username="quiet")
    keys = [(user.pk, 0), (user.pk, 4), (user.pk, 7), (other_user.pk, 0), (other_user.pk, 9), (quiet.pk, 0)]
    with CaptureQueriesContext(connection) as first_seqs:
        pages = read_pages(keys[:1] + keys[3:4] + keys[5:], limit=5)
    # The events of every user in one query, the counters of the ones with nothing newer in another.
    assert len(first_seqs) == 2
    pages.update(read_pages(keys, limit=5))
    for user_id, after in keys:
        assert pages[(user_id, after)] == read_page(user_id, after, limit=5), (user_id, after)
    assert pages[(user.pk, 0)].has_more and [e["seq"] for e in pages[(user.pk, 0)].events] == [1, 2, 3, 4, 5]
    assert pages[(other_user.pk, 0)].recovered is False
    assert pages[(other_user.pk, 9)] == Page([], 7, False, False)  # ahead of the log
    assert pages[(quiet.pk, 0)] == Page([], 0, False, True)


async def test_a_storm_of_handshakes_reads_the_users_in_one_query(django_user_model: Any) -> None:
    users = await sync_to_async(lambda: [django_user_model.objects.create_user(username=f"s{i}") for i in range(40)])()
    inactive = users[-1]
    inactive.is_active = False
    await inactive.asave()
    forged = AccessToken()
    forged["user_id"] = "not-an-id"  # signed, but names no user: must not fail the others' batch
    calls = auth._active_users.calls
    found = await asyncio.gather(*(auth.auser_for_token(token_for(u)) for u in users),
                                 auth.auser_for_token(str(forged)))
    assert [user.pk for user, _ in found[:-2]] == [u.pk for u in users[:-1]]
    assert all(expires is not None for _, expires in found[:-2])
    assert [(user.is_authenticated, expires) for user, expires in found[-2:]] == [(False, None), (False, None)]
    assert auth._active_users.calls - calls <= 2  # the first handshake's lookup, then everyone else's


async def test_sockets_opened_at_once_replay_their_own_logs(user: Any, other_user: Any) -> None:
    await sync_to_async(seed_events)(user, 4)
    await sync_to_async(seed_events)(other_user, 2)
    sockets = await asyncio.gather(open_socket(token_for(user), after=1), open_socket(token_for(other_user), after=0),
                                   open_socket(token_for(user), after=3))
    synced = await asyncio.gather(*(read_until_sync(ws) for ws in sockets))
    assert [[e["seq"] for e in events] for events, _ in synced] == [[2, 3, 4], [1, 2], [4]]
    assert [sync["last_seq"] for _, sync in synced] == [4, 2, 4]
    for ws in sockets:
        await ws.disconnect()


async def test_attempts_in_one_batch_each_count_against_the_rate_and_the_cap(user: Any, settings: Any) -> None:
    settings.IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP = 3
    sockets = await asyncio.gather(*(open_socket(token_for(user), client=("10.9.8.7", 1000 + i)) for i in range(5)))
    codes = await asyncio.gather(*(_sync_or_close(ws) for ws in sockets))
    assert sorted(map(str, codes)) == ["4029"] * 2 + ["synced"] * 3
    settings.IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP = 1000
    settings.IMAGEGEN_WS_MAX_SOCKETS_PER_USER = 5  # 3 open already
    more = await asyncio.gather(*(open_socket(token_for(user), client=("10.9.8.6", 1000 + i)) for i in range(4)))
    assert sorted(map(str, await asyncio.gather(*(_sync_or_close(ws) for ws in more)))) == ["4029"] * 2 + ["synced"] * 2
    assert presence.by_user[user.pk] == 5
    for ws in sockets + more:
        await ws.disconnect()


async def test_admission_fails_open_when_redis_does_not_answer(monkeypatch: Any) -> None:
    from django.core.cache.backends.redis import RedisCache

    from imagegen_site.cache import process_cache

    cache = process_cache()
    if not isinstance(cache, RedisCache):
        pytest.skip("needs the Redis cache (REDIS_URL)")

    class Down:
        def pipeline(self, **kwargs: Any) -> Any:
            return self

        def __getattr__(self, name: str) -> Any:  # incr, expire, mget: queued; execute: Redis is gone
            def command(*args: Any, **kwargs: Any) -> Any:
                if name == "execute":
                    raise RedisConnectionError("Redis is gone")
            return command

    monkeypatch.setattr(cache._cache, "get_client", lambda *a, **k: Down())
    monkeypatch.setattr(cache, "_down_until", cache._down_until)  # restored after: later tests see Redis up
    readings = await sync_to_async(admission.admission_readings)([("10.0.0.1", 5, 1), (None, None, 2)])
    assert readings == {("10.0.0.1", 5, 1): (True, 0, None), (None, None, 2): (True, 0, None)}


async def _sync_or_close(ws: Any) -> Any:
    message = await ws.receive_output(10)
    if message["type"] == "websocket.close":
        return message["code"]
    return "synced" if '"sync_complete"' in message.get("text", "") else message



def test_loops_in_several_threads_each_get_their_own_answers() -> None:
    import threading

    batcher: Batcher[int, int] = Batcher(lambda keys: {k: -k for k in keys}, default=0, database=False)
    results: dict[int, list[int]] = {}

    def in_own_loop(base: int) -> None:
        async def many() -> list[int]:
            return list(await asyncio.gather(*(batcher.load(base + k) for k in range(20))))
        results[base] = asyncio.run(many())

    threads = [threading.Thread(target=in_own_loop, args=(b,)) for b in (100, 200, 300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == {b: [-(b + k) for k in range(20)] for b in (100, 200, 300)}
