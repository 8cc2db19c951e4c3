"""The WebSocket consumer: replay, live handover, gaps, frames (Redis pub/sub layer, PostgreSQL)."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from notifications.metrics import GAP_FILLS
from notifications import events
from notifications.models import Event, EventCounter

from .support import open_socket, read_events, read_until_sync, seed_events, token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def amake_task(make_task: Any) -> Any:
    return sync_to_async(make_task)


def seqs(frames: list[dict]) -> list[int]:
    return [f["seq"] for f in frames]


async def test_it_replays_the_log_then_sync_complete_then_live_events(user: Any, amake_task: Any) -> None:
    first, second = await amake_task(), await amake_task()
    ws = await open_socket(token_for(user), after=0)
    replayed, sync = await read_until_sync(ws)
    assert [(e["seq"], e["type"], e["task_id"]) for e in replayed] == [
        (1, "task_created", first.pk), (2, "task_created", second.pk)]
    assert sync == {"type": "sync_complete", "last_seq": 2, "recovered": True}
    await sync_to_async(first.cancel)()
    [live] = await read_events(ws, 1)
    assert (live["seq"], live["type"], live["task_id"], live["data"]["status"]) == (3, "task_canceled", first.pk, "canceled")
    assert set(live) == {"type", "seq", "task_id", "timestamp", "data"}
    await ws.disconnect()


async def test_without_after_it_sends_sync_complete_first_then_only_new_events(user: Any, amake_task: Any) -> None:
    task = await amake_task()
    ws = await open_socket(token_for(user))
    assert await ws.receive_json_from(10) == {"type": "sync_complete", "last_seq": 1, "recovered": True}
    await sync_to_async(task.cancel)()
    assert seqs(await read_events(ws, 1)) == [2]
    await ws.disconnect()


async def test_a_client_that_resumes_gets_exactly_the_events_it_missed(user: Any, amake_task: Any) -> None:
    task = await amake_task()
    ws = await open_socket(token_for(user), after=0)
    replayed, sync = await read_until_sync(ws)
    await ws.disconnect()
    seen = sync["last_seq"]
    for change in (task.cancel, task.retry, task.cancel):  # work happens while it is away
        await sync_to_async(change)()
    ws = await open_socket(token_for(user), after=seen)
    missed, sync = await read_until_sync(ws)
    assert seqs(missed) == [2, 3, 4]
    assert [e["type"] for e in missed] == ["task_canceled", "task_update", "task_canceled"]
    assert sync == {"type": "sync_complete", "last_seq": 4, "recovered": True}
    await ws.disconnect()


async def test_replay_and_live_handover_under_a_burst_has_no_gap_and_no_duplicate(user: Any, amake_task: Any) -> None:
    await sync_to_async(seed_events)(user, 1200)  # three replay pages
    task = await amake_task()  # seq 1201
    stop = threading.Event()

    def churn() -> None:
        # Each cancel/retry commits one event while the socket replays and goes live.
        for _ in range(100):
            if stop.is_set():
                return
            task.cancel()
            task.retry()

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        ws = await open_socket(token_for(user), after=0)
        replayed, sync = await read_until_sync(ws, timeout=30)
    finally:
        await sync_to_async(worker.join)()
    final = await sync_to_async(EventCounter.last_seq_for)(user.pk)
    assert final == 1201 + 200
    live = await read_events(ws, final - sync["last_seq"], timeout=30)
    assert seqs(replayed + live) == list(range(1, final + 1))
    assert sync["last_seq"] == seqs(replayed)[-1]
    # Both halves of the handover were exercised: churn events in the replay, and live.
    assert 1201 < sync["last_seq"] < final
    await ws.disconnect()


async def test_a_lost_push_is_filled_from_the_log_before_the_next_one(user: Any, amake_task: Any,
                                                                       monkeypatch: Any) -> None:
    task = await amake_task()
    ws = await open_socket(token_for(user), after=0)
    await read_until_sync(ws)
    fills = GAP_FILLS._value.get()
    monkeypatch.setattr(events, "publish", lambda user_id, message: None)
    await sync_to_async(task.cancel)()  # seq 2: committed, never pushed
    monkeypatch.undo()
    await sync_to_async(task.retry)()  # seq 3: pushed, arrives after a hole
    frames = await read_events(ws, 2)
    assert seqs(frames) == [2, 3]
    assert [f["type"] for f in frames] == ["task_canceled", "task_update"]
    assert GAP_FILLS._value.get() == fills + 1
    await ws.disconnect()


async def test_a_ping_delivers_a_push_lost_while_idle_before_the_pong(user: Any, amake_task: Any,
                                                                      monkeypatch: Any) -> None:
    task = await amake_task()
    ws = await open_socket(token_for(user), after=0)
    await read_until_sync(ws)
    monkeypatch.setattr(events, "publish", lambda user_id, message: None)
    await sync_to_async(task.cancel)()
    await ws.send_json_to({"type": "ping"})
    [missed] = await read_events(ws, 1)
    assert (missed["seq"], missed["type"]) == (2, "task_canceled")
    assert await ws.receive_json_from(10) == {"type": "pong"}
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(10) == {"type": "pong"}  # nothing new: no event again
    await ws.disconnect()


async def test_duplicate_and_stale_pushes_are_dropped(user: Any, amake_task: Any) -> None:
    task = await amake_task()
    ws = await open_socket(token_for(user), after=0)
    [first], _ = await read_until_sync(ws)
    await get_channel_layer().group_send(f"user.{user.pk}", {"type": "task.event", "event": first})
    await sync_to_async(task.cancel)()
    assert seqs(await read_events(ws, 1)) == [2]  # the duplicate of 1 never reached the client
    await ws.disconnect()


async def test_a_push_the_log_does_not_have_is_not_forwarded(user: Any, amake_task: Any) -> None:
    task = await amake_task()
    ws = await open_socket(token_for(user), after=0)
    [first], _ = await read_until_sync(ws)
    forged = dict(first, seq=7)  # e.g. another deployment sharing the Redis
    await get_channel_layer().group_send(f"user.{user.pk}", {"type": "task.event", "event": forged})
    await sync_to_async(task.cancel)()
    assert seqs(await read_events(ws, 1)) == [2]
    await ws.disconnect()


async def test_a_user_receives_only_their_own_events(user: Any, other_user: Any, amake_task: Any) -> None:
    alice = await open_socket(token_for(user), after=0)
    bob = await open_socket(token_for(other_user), after=0)
    await read_until_sync(alice)
    await read_until_sync(bob)
    bobs = await amake_task(user=other_user)
    alices = await amake_task()
    assert [(e["seq"], e["task_id"]) for e in await read_events(alice, 1)] == [(1, alices.pk)]
    assert [(e["seq"], e["task_id"]) for e in await read_events(bob, 1)] == [(1, bobs.pk)]
    bob_again = await open_socket(token_for(other_user), after=0)
    bob_replay, _ = await read_until_sync(bob_again)
    assert [e["task_id"] for e in bob_replay] == [bobs.pk]
    for ws in (alice, bob, bob_again):
        await ws.disconnect()


async def test_resume_frame_replays_and_resyncs_on_an_open_socket(user: Any, amake_task: Any) -> None:
    task = await amake_task()
    await sync_to_async(task.cancel)()
    ws = await open_socket(token_for(user))
    assert (await ws.receive_json_from(10))["last_seq"] == 2
    await ws.send_json_to({"type": "resume", "after": 0})
    replayed, sync = await read_until_sync(ws)
    assert seqs(replayed) == [1, 2]
    assert sync == {"type": "sync_complete", "last_seq": 2, "recovered": True}
    await ws.disconnect()


@pytest.mark.parametrize(
    "frame, detail",
    [
        ("{not json", "Malformed JSON."),
        ('{"type": "dance"}', "Unknown message type 'dance'; expected ping, resume or refresh."),
        ("[1, 2]", "Unknown message type None; expected ping, resume or refresh."),
        ('{"type": "resume", "after": -1}', "resume needs after: a non-negative integer, at most 9223372036854775807."),
        ('{"type": "resume", "after": true}', "resume needs after: a non-negative integer, at most 9223372036854775807."),
        ('{"type": "resume", "after": 9223372036854775808}', "resume needs after: a non-negative integer, at most 9223372036854775807."),
        ('{"type": "ping", "pad": "' + "x" * 5000 + '"}', "Frame too large (at most 4096 bytes)."),
        (b"\x00binary", "Send JSON text frames."),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays(user: Any, frame: Any, detail: str) -> None:
    ws = await open_socket(token_for(user))
    await ws.receive_json_from(10)
    if isinstance(frame, bytes):
        await ws.send_to(bytes_data=frame)
    else:
        await ws.send_to(text_data=frame)
    assert await ws.receive_json_from(10) == {"type": "error", "detail": detail}
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(10) == {"type": "pong"}
    await ws.disconnect()


async def test_a_bad_after_gets_an_error_then_live_only(user: Any, amake_task: Any) -> None:
    await amake_task()
    ws = await open_socket(token_for(user), after="abc")
    assert await ws.receive_json_from(10) == {
        "type": "error", "detail": "after must be a non-negative integer, at most 9223372036854775807; sending live events only."}
    assert await ws.receive_json_from(10) == {"type": "sync_complete", "last_seq": 1, "recovered": True}
    await ws.disconnect()


async def test_after_ahead_of_the_log_is_not_recovered(user: Any, amake_task: Any) -> None:
    task = await amake_task()
    ws = await open_socket(token_for(user), after=50)  # e.g. a client of a reset database
    assert await read_until_sync(ws) == ([], {"type": "sync_complete", "last_seq": 1, "recovered": False})
    await sync_to_async(task.cancel)()
    assert seqs(await read_events(ws, 1)) == [2]
    await ws.disconnect()


async def test_events_keep_their_logged_form(user: Any, amake_task: Any) -> None:
    task = await amake_task()
    ws = await open_socket(token_for(user), after=0)
    [replayed], _ = await read_until_sync(ws)
    logged = await sync_to_async(lambda: Event.objects.get(user=user, seq=1).as_message())()
    assert replayed == logged
    assert replayed["data"]["status"] == "pending" and replayed["task_id"] == task.pk
    await ws.disconnect()
