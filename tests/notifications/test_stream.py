"""``GET /api/events/stream/``: Server-Sent Events over the same log as the WebSocket."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import ApiKey
from notifications.presence import presence

from .sse import SSEReader
from .support import eventually, seed_events, token_for

pytestmark = pytest.mark.django_db(transaction=True)

STREAM = "/api/events/stream/"


@pytest.fixture
def amake_task(make_task: Any) -> Any:
    return sync_to_async(make_task)


async def open_stream(async_client: Any, query: str = "", **headers: str) -> SSEReader:
    response = await async_client.get(f"{STREAM}{query}", headers=headers)
    assert response.status_code == 200, response.content if not response.streaming else response
    assert response["Content-Type"] == "text/event-stream"
    return SSEReader(response)


def bearer(user: Any, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user, **kwargs)}"}


async def test_it_replays_then_sync_complete_then_live_events_each_with_its_seq_as_id(
        user: Any, amake_task: Any, async_client: Any) -> None:
    first = await amake_task()
    stream = await open_stream(async_client, "?after=0", **bearer(user))
    replayed, sync = await stream.until_sync()
    assert [(m.id, m.event, m.data["task_id"]) for m in replayed] == [(1, "task_created", first.pk)]
    assert replayed[0].data["seq"] == 1 and set(replayed[0].data) == {"type", "seq", "task_id", "timestamp", "data"}
    assert (sync.id, sync.data) == (1, {"type": "sync_complete", "last_seq": 1, "recovered": True})
    await sync_to_async(first.cancel)()
    live = await stream.next_event()
    assert (live.id, live.event, live.data["data"]["status"]) == (2, "task_canceled", "canceled")
    await stream.close()


async def test_without_a_cursor_it_sends_only_new_events(user: Any, amake_task: Any, async_client: Any) -> None:
    task = await amake_task()
    stream = await open_stream(async_client, "", **bearer(user))
    assert (await stream.next_event()).data == {"type": "sync_complete", "last_seq": 1, "recovered": True}
    await sync_to_async(task.cancel)()
    assert (await stream.next_event()).id == 2
    await stream.close()


async def test_a_resume_with_last_event_id_gets_every_event_exactly_once(user: Any, amake_task: Any,
                                                                        async_client: Any) -> None:
    task = await amake_task()  # before: seq 1
    stream = await open_stream(async_client, "?after=0", **bearer(user))
    replayed, _ = await stream.until_sync()
    await sync_to_async(task.cancel)()  # while connected: seq 2
    seen = [m.id for m in replayed] + [(await stream.next_event()).id]
    await stream.close()
    for change in (task.retry, task.cancel):  # while away: seqs 3 and 4
        await sync_to_async(change)()
    # EventSource reconnects with its original URL (after=0) and Last-Event-ID: the header wins.
    stream = await open_stream(async_client, "?after=0", **bearer(user), **{"Last-Event-ID": str(seen[-1])})
    missed, sync = await stream.until_sync()
    seen += [m.id for m in missed]
    await sync_to_async(task.retry)()  # after the reconnect: seq 5
    seen.append((await stream.next_event()).id)
    assert seen == [1, 2, 3, 4, 5]
    assert sync.data["last_seq"] == 4
    await stream.close()


async def test_a_replay_over_several_pages_and_a_burst_has_no_gap_or_duplicate(user: Any, amake_task: Any,
                                                                              async_client: Any) -> None:
    await sync_to_async(seed_events)(user, 1100)
    stream = await open_stream(async_client, "?after=0", **bearer(user))
    task = await amake_task()  # 1101, pushed while the replay may still be running
    for _ in range(5):
        await sync_to_async(task.cancel)()
        await sync_to_async(task.retry)()
    ids = []
    while len(ids) < 1111:
        message = await stream.next_event()
        if message.event != "sync_complete":
            ids.append(message.id)
    assert ids == list(range(1, 1112))
    await stream.close()


async def test_a_quiet_stream_gets_keep_alive_comments(user: Any, async_client: Any, settings: Any) -> None:
    settings.IMAGEGEN_SSE_KEEPALIVE_SECONDS = 0.1
    stream = await open_stream(async_client, "?after=0", **bearer(user))
    await stream.until_sync()
    comments = [(await stream.next(timeout=5)).comment for _ in range(2)]
    assert comments == ["keep-alive", "keep-alive"]
    await stream.close()


async def test_the_stream_ends_when_its_token_expires(user: Any, async_client: Any) -> None:
    stream = await open_stream(async_client, "?after=0", **bearer(user, lifetime=timedelta(seconds=2)))
    await stream.until_sync()
    last = await stream.next_event(timeout=10)
    assert (last.event, last.data) == ("close", {"type": "close", "reason": "token_expired"})
    assert await stream.ended()


async def test_streams_count_with_sockets_against_the_per_user_cap(user: Any, async_client: Any,
                                                                  settings: Any) -> None:
    settings.IMAGEGEN_WS_MAX_SOCKETS_PER_USER = 1
    stream = await open_stream(async_client, "?after=0", **bearer(user))
    await stream.until_sync()
    refused = await async_client.get(f"{STREAM}?after=0", headers=bearer(user))
    assert (refused.status_code, refused.json()) == (429, {"detail": "Too many open connections for this user."})
    assert refused["Retry-After"] == "10"
    await stream.close()
    await eventually(lambda: presence.by_user[user.pk] == 0)
    again = await open_stream(async_client, "?after=0", **bearer(user))
    await again.until_sync()
    await again.close()


@pytest.mark.parametrize("query, headers, detail", [
    ("", {}, "Authentication credentials were not provided."),
    ("", {"Authorization": "Bearer nope"}, "Given token not valid for any token type"),
    ("?token=nope", {}, "Given token not valid for any token type"),
    ("", {"Authorization": "Api-Key igk_nope"}, "Invalid or revoked API key."),
    ("?api_key=igk_nope", {}, "Invalid or revoked API key."),
])
async def test_it_needs_a_valid_credential(async_client: Any, query: str, headers: dict, detail: str) -> None:
    response = await async_client.get(f"{STREAM}{query}", headers=headers)
    assert (response.status_code, response.json()["detail"]) == (401, detail)


@pytest.mark.parametrize("query, headers, detail", [
    ("?after=-1", {}, "after must be a non-negative integer, at most 9223372036854775807."),
    ("?after=0", {"Last-Event-ID": "x"}, "Last-Event-ID must be a non-negative integer, at most 9223372036854775807."),
])
async def test_a_bad_cursor_is_a_400(user: Any, async_client: Any, query: str, headers: dict, detail: str) -> None:
    response = await async_client.get(f"{STREAM}{query}", headers={**bearer(user), **headers})
    assert (response.status_code, response.json()) == (400, {"detail": detail})


async def test_a_token_in_the_query_string_opens_the_stream(user: Any, async_client: Any) -> None:
    stream = await open_stream(async_client, f"?after=0&token={token_for(user)}")
    assert (await stream.next_event()).event == "sync_complete"
    await stream.close()


@pytest.mark.parametrize("by", ["header", "query"])
async def test_an_api_key_opens_the_stream_and_its_revoke_ends_it(user: Any, amake_task: Any, async_client: Any,
                                                                 by: str, caplog: Any) -> None:
    key, raw = await sync_to_async(ApiKey.issue)(user=user, name="shop")
    task = await amake_task()
    if by == "header":
        stream = await open_stream(async_client, "?after=0", Authorization=f"Api-Key {raw}")
    else:
        stream = await open_stream(async_client, f"?after=0&api_key={raw}")
    replayed, _ = await stream.until_sync()
    assert [m.data["task_id"] for m in replayed] == [task.pk]
    caplog.set_level(logging.INFO, logger="notifications.stream")
    await sync_to_async(key.revoke)()
    last = await stream.next_event()
    assert (last.event, last.data) == ("close", {"type": "close", "reason": "key_revoked"})
    assert await stream.ended()
    assert "its API key was revoked" in caplog.text
    refused = await async_client.get(f"{STREAM}?after=0", headers={"Authorization": f"Api-Key {raw}"})
    assert refused.status_code == 401


async def test_revoking_another_key_of_the_user_leaves_the_stream_open(user: Any, amake_task: Any,
                                                                      async_client: Any) -> None:
    kept, raw = await sync_to_async(ApiKey.issue)(user=user, name="kept")
    other, _ = await sync_to_async(ApiKey.issue)(user=user, name="other")
    stream = await open_stream(async_client, "?after=0", Authorization=f"Api-Key {raw}")
    await stream.until_sync()
    await sync_to_async(other.revoke)()
    task = await amake_task()
    assert (await stream.next_event()).data["task_id"] == task.pk
    await stream.close()
