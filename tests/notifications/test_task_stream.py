"""``GET /api/tasks/{id}/events/stream/``: one task's events as Server-Sent Events, ending after its final state."""
from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from generation.models import GenerationTask
from notifications import events
from notifications.presence import presence
from tests.generation.builders import advance, worker_row

from .sse import SSEReader
from .support import eventually, token_for

pytestmark = pytest.mark.django_db(transaction=True)

S = GenerationTask.Status
CLOSE = {"type": "close", "reason": "task_finished"}


def url(task: GenerationTask | int) -> str:
    return f"/api/tasks/{getattr(task, 'pk', task)}/events/stream/"


def bearer(user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


@pytest.fixture
def amake_task(make_task: Any) -> Any:
    return sync_to_async(make_task)


async def advance_to(task: GenerationTask, status: str) -> None:
    await sync_to_async(lambda: advance(task, status, worker_row(f"w-{task.pk}-{status}")))()


async def open_stream(async_client: Any, task: GenerationTask, query: str = "", **headers: str) -> SSEReader:
    response = await async_client.get(url(task) + query, headers=headers)
    assert response.status_code == 200, response.content if not response.streaming else response
    assert response["Content-Type"] == "text/event-stream"
    return SSEReader(response)


async def rest_of(stream: SSEReader) -> list[tuple[int | None, str | None, Any]]:
    """Every event until the server ends the stream (keep-alive comments skipped)."""
    seen = []
    while True:
        try:
            message = await stream.next_event()
        except StopAsyncIteration:
            return seen
        status = message.data.get("data", {}).get("status") if message.event != "close" else message.data
        seen.append((message.id, message.event, status))


async def test_it_follows_one_task_from_its_first_event_and_ends_after_its_final_state(
    user: Any, amake_task: Any, async_client: Any
) -> None:
    before = await amake_task()  # seq 1: the user's older events are not this stream's
    task = await amake_task()  # seq 2
    stream = await open_stream(async_client, task, **bearer(user))
    replayed, sync = await stream.until_sync()
    assert [(m.id, m.event, m.data["task_id"]) for m in replayed] == [(2, "task_created", task.pk)]
    assert sync.data == {"type": "sync_complete", "last_seq": 2, "recovered": True}

    await sync_to_async(before.cancel)()  # seq 3: another task, not sent
    await advance_to(task, S.COMPLETED)  # claim, then complete: seqs 4 and 5

    assert await rest_of(stream) == [(4, "task_update", "processing"), (5, "task_complete", "completed"),
                                     (None, "close", CLOSE)]
    await eventually(lambda: presence.by_user[user.pk] == 0)  # its slot given back


async def test_a_finished_task_replays_its_history_and_ends_at_once(user: Any, amake_task: Any,
                                                                    async_client: Any) -> None:
    task = await amake_task()
    await sync_to_async(task.cancel)()

    stream = await open_stream(async_client, task, **bearer(user))

    assert await rest_of(stream) == [(1, "task_created", "pending"), (2, "task_canceled", "canceled"),
                                     (2, "sync_complete", None), (None, "close", CLOSE)]


async def test_a_resume_gets_only_the_rest_and_a_reconnect_after_the_end_is_a_204(
    user: Any, amake_task: Any, async_client: Any
) -> None:
    task = await amake_task()  # seq 1
    await advance_to(task, S.FAILED)  # seqs 2, 3

    resumed = await open_stream(async_client, task, "?after=0", **bearer(user), **{"Last-Event-ID": "2"})
    assert await rest_of(resumed) == [(3, "task_failed", "failed"), (3, "sync_complete", None),
                                      (None, "close", CLOSE)]
    # EventSource reconnects after the end with the last id it saw: 204 tells it to stop.
    again = await async_client.get(url(task), headers={**bearer(user), "Last-Event-ID": "3"})
    assert again.status_code == 204


async def test_a_failure_then_a_retry_ends_only_at_the_later_final_state(user: Any, amake_task: Any,
                                                                        async_client: Any) -> None:
    task = await amake_task()
    await advance_to(task, S.FAILED)
    await sync_to_async(task.retry)()  # back to pending: the failure was not the end

    stream = await open_stream(async_client, task, **bearer(user))
    replayed, _ = await stream.until_sync()
    assert [m.event for m in replayed] == ["task_created", "task_update", "task_failed", "task_update"]
    await sync_to_async(task.cancel)()

    assert await rest_of(stream) == [(5, "task_canceled", "canceled"), (None, "close", CLOSE)]


async def test_a_lost_push_of_the_final_state_still_ends_the_stream_at_the_next_tick(
    user: Any, amake_task: Any, async_client: Any, settings: Any, monkeypatch: Any
) -> None:
    settings.IMAGEGEN_SSE_KEEPALIVE_SECONDS = 0.2
    task = await amake_task()
    stream = await open_stream(async_client, task, **bearer(user))
    await stream.until_sync()
    monkeypatch.setattr(events, "publish", lambda user_id, message: None)  # Redis lost every push

    await sync_to_async(task.cancel)()

    assert await rest_of(stream) == [(2, "task_canceled", "canceled"), (None, "close", CLOSE)]


async def test_it_is_a_404_for_another_users_or_an_unknown_task_and_a_401_without_credentials(
    user: Any, other_user: Any, amake_task: Any, async_client: Any
) -> None:
    theirs = await amake_task(user=other_user)
    for task_id in (theirs.pk, theirs.pk + 1000):
        response = await async_client.get(url(task_id), headers=bearer(user))
        assert (response.status_code, response.json()) == (404, {"detail": "No GenerationTask matches the given query."})
    assert (await async_client.get(url(theirs))).status_code == 401
    response = await async_client.get(url(theirs), headers={**bearer(other_user), "Last-Event-ID": "x"})
    assert response.status_code == 400 and "Last-Event-ID" in response.json()["detail"]
