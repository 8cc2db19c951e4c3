"""The event log: one event per transition, gapless seqs, replay equivalence, coalescing, failed pushes."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from generation.models import GenerationTask
from generation.models import WorkerProcess
from generation.worker import Worker
from notifications.events import publisher
from notifications.models import Event
from tests.generation.backends import QuickBackend

from .backends import ChattyBackend
from .support import open_socket, read_until_sync, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def log_of(user: Any) -> list[tuple[int, str, int, str]]:
    return [(e.seq, e.type, e.task_id, e.data["status"]) for e in Event.objects.filter(user=user).order_by("seq")]


def test_every_transition_appends_exactly_one_event_with_the_next_seq(user: Any, make_task: Any,
                                                                        settings: Any) -> None:
    settings.IMAGEGEN_MAX_ATTEMPTS = 2
    row = WorkerProcess.objects.create(name="t")
    task = make_task()
    expected = [(1, "task_created", task.pk, "pending")]

    def step(change: Any, kind: str, status: str) -> None:
        change()
        expected.append((len(expected) + 1, kind, task.pk, status))
        assert log_of(user) == expected

    def claim() -> Any:
        [(claimed, token)] = GenerationTask.claim_next(row)
        task.refresh_from_db()
        return token

    token = claim()
    expected.append((2, "task_update", task.pk, "processing"))
    assert log_of(user) == expected
    step(lambda: task.set_progress(token, 40), "task_update", "processing")
    task.set_progress(token, 30)  # not forward: no change, no event
    assert log_of(user) == expected
    step(lambda: task.fail(token, code="upstream_timeout", message="slow", transient=True), "task_update", "pending")
    task.run_after = timezone.now()
    GenerationTask.objects.filter(pk=task.pk).update(run_after=task.run_after)  # not state: skip the backoff
    token = claim()
    expected.append((len(expected) + 1, "task_update", task.pk, "processing"))
    step(lambda: task.fail(token, code="upstream_error", message="no", transient=True), "task_failed", "failed")
    step(task.retry, "task_update", "pending")
    token = claim()
    expected.append((len(expected) + 1, "task_update", task.pk, "processing"))
    step(lambda: task.release(token), "task_update", "pending")
    token = claim()
    expected.append((len(expected) + 1, "task_update", task.pk, "processing"))
    WorkerProcess.objects.filter(pk=row.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))
    step(lambda: GenerationTask.rescue_orphans(30), "task_update", "pending")
    WorkerProcess.objects.filter(pk=row.pk).update(last_heartbeat=timezone.now())
    token = claim()
    expected.append((len(expected) + 1, "task_update", task.pk, "processing"))
    step(lambda: task.complete(token, result_name="results/x.jpg", content_type="image/jpeg", compliance=None),
         "task_complete", "completed")
    other = make_task()
    expected.append((len(expected) + 1, "task_created", other.pk, "pending"))
    task = other
    step(task.cancel, "task_canceled", "canceled")
    assert [seq for seq, *_ in log_of(user)] == list(range(1, len(expected) + 1))


def test_seqs_stay_gapless_when_threads_change_one_users_tasks_at_once(user: Any, make_task: Any) -> None:
    tasks = [make_task() for _ in range(4)]
    barrier = threading.Barrier(len(tasks))
    errors: list[BaseException] = []

    def churn(task: GenerationTask) -> None:
        try:
            barrier.wait()
            for _ in range(15):
                task.cancel()
                task.retry()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(t,)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    seqs = list(Event.objects.filter(user=user).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 4 + 4 * 30 + 1))


def test_progress_writes_coalesce_and_state_changes_never_do(user: Any, make_task: Any, settings: Any,
                                                         monkeypatch: Any) -> None:
    settings.IMAGEGEN_BACKEND = "tests.notifications.backends.ChattyBackend"
    settings.IMAGEGEN_PROGRESS_INTERVAL = 0.25
    ChattyBackend.reports = []
    # When each progress write starts: the spacing the worker guarantees. The events' own
    # stamps come after the write, so a slow write under load would shift them.
    writes: list[float] = []
    set_progress = GenerationTask.set_progress

    def timed_set_progress(self: GenerationTask, *args: Any, **kwargs: Any) -> None:
        writes.append(time.monotonic())
        set_progress(self, *args, **kwargs)

    monkeypatch.setattr(GenerationTask, "set_progress", timed_set_progress)
    task = make_task()
    assert Worker(concurrency=1, burst=True, worker_id="coalesce").run_once()
    log = list(Event.objects.filter(user=user).order_by("seq"))
    kinds = [(e.type, e.data["status"]) for e in log]
    progress = log[2:-1]
    assert kinds[:2] == [("task_created", "pending"), ("task_update", "processing")]
    assert kinds[-1] == ("task_complete", "completed") and log[-1].data["progress"] == 100
    assert all(kind == ("task_update", "processing") for kind in kinds[2:-1])
    assert 2 <= len(progress) <= 6  # ~1.2 s of work / 250 ms
    assert len(ChattyBackend.reports) >= 5 * len(progress)  # reported far more often than written
    assert len(writes) == len(progress)
    assert min(b - a for a, b in zip(writes, writes[1:])) >= 0.249  # 1 ms for the call itself
    # The first write waits a whole interval after the claim (stamped before the reporter starts).
    assert (progress[0].created_at - log[1].created_at).total_seconds() >= 0.25
    values = [e.data["progress"] for e in progress]
    assert values == sorted(values) and len(set(values)) == len(values)
    task.refresh_from_db()
    assert task.status == "completed"


def test_a_failed_push_only_logs_and_counts(user: Any, make_task: Any, monkeypatch: Any, caplog: Any) -> None:
    layer = get_channel_layer()

    async def broken(group: str, message: dict) -> None:
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(layer, "group_send", broken)
    failed = publisher.counts["failed"]
    with caplog.at_level(logging.WARNING, logger="notifications.events"):
        task = make_task()
        task.cancel()
        assert publisher.flush_sync()
    assert publisher.counts["failed"] >= failed + 1
    assert f"Push to user.{user.pk} failed (Redis is down)" in caplog.text
    assert log_of(user) == [(1, "task_created", task.pk, "pending"), (2, "task_canceled", task.pk, "canceled")]
    task.refresh_from_db()
    assert task.status == "canceled"


def test_pushes_pause_briefly_when_they_fail_slowly(user: Any, make_task: Any, monkeypatch: Any) -> None:
    async def hung(group: str, message: dict) -> None:
        await asyncio.sleep(0.3)  # a Redis that does not answer, cut short
        raise TimeoutError("no answer")

    # Pushes left over from earlier tests go out first, and no pause of theirs is in force:
    # this test's two pushes are then the only ones, each sent on its own.
    assert publisher.flush_sync()
    publisher.skip_until = 0.0
    monkeypatch.setattr(get_channel_layer(), "group_send", hung)
    before = dict(publisher.counts)
    try:
        task = make_task()
        assert publisher.flush_sync()
        # The first push cost 0.3 s and failed ...
        assert publisher.counts["failed"] - before.get("failed", 0) == 1
        assert publisher.counts["skipped"] - before.get("skipped", 0) == 0
        task.cancel()
        assert publisher.flush_sync()
        # ... so the next one, 2 s later at most, is not tried (its event stays in the log).
        assert publisher.counts["failed"] - before.get("failed", 0) == 1
        assert publisher.counts["skipped"] - before.get("skipped", 0) == 1
        assert log_of(user) == [(1, "task_created", task.pk, "pending"), (2, "task_canceled", task.pk, "canceled")]
    finally:
        publisher.skip_until = 0.0  # the pause must not leak into other tests


async def test_state_rebuilt_from_replayed_events_equals_the_task_list(user: Any, make_task: Any,
                                                                      async_client: Any, monkeypatch: Any) -> None:
    # Every field is compared, the clock-dependent ones (elapsed time, ETA, queue position)
    # too, so the clock is the test's: it moves only where the test moves it, and no event
    # follows the last move. ETA figures are read fresh instead of from the 10 s memo.
    clock = [timezone.now() + timedelta(hours=1)]  # after every row's real-time default run_after
    monkeypatch.setattr(timezone, "now", lambda: clock[0])
    monkeypatch.setattr("generation.models.task.memoized", lambda key, ttl, compute: compute())
    quick_generate = QuickBackend.generate

    def four_seconds_of_work(self: QuickBackend, *args: Any, **kwargs: Any) -> Any:
        clock[0] += timedelta(seconds=4)  # gives the typical run time, hence the ETAs, a value
        return quick_generate(self, *args, **kwargs)

    monkeypatch.setattr(QuickBackend, "generate", four_seconds_of_work)

    def work() -> None:
        done, canceled, retried, failing = (make_task() for _ in range(4))
        Worker(concurrency=1, burst=True, worker_id="equiv").run_once()  # completes the oldest
        canceled.cancel()
        retried.cancel()
        retried.retry()
        row = WorkerProcess.objects.create(name="f")
        claimed = {task.pk: (task, token) for task, token in GenerationTask.claim_next(row, limit=2)}
        task, token = claimed.pop(failing.pk)
        task.fail(token, code="safety_block", message="Blocked.", transient=False)
        make_task()  # still pending
        [(task, token)] = claimed.values()
        clock[0] += timedelta(seconds=1.5)
        task.set_progress(token, 55)  # the last event: the clock stands still from here on

    await sync_to_async(work)()
    headers = {"Authorization": f"Bearer {token_for(user)}"}
    listing = (await async_client.get("/api/tasks/", headers=headers)).json()
    expected = {t["id"]: t for t in listing["results"]}

    ws = await open_socket(token_for(user), after=0)
    replayed, sync = await read_until_sync(ws)
    await ws.disconnect()
    polled, after = [], 0
    while True:
        page = (await async_client.get(f"/api/events/?after={after}", headers=headers)).json()
        polled += page["events"]
        after = page["last_seq"]
        if not page["has_more"]:
            break
    assert polled == replayed
    assert [e["seq"] for e in replayed] == list(range(1, len(replayed) + 1))
    assert sync["last_seq"] == listing["last_seq"] == len(replayed)
    state: dict[int, dict] = {}
    for event in replayed:
        state[event["task_id"]] = event["data"]
    assert set(state) == set(expected)
    for task_id, body in expected.items():
        assert set(body) <= set(state[task_id]), "an event lacks a field of the REST body"
        assert {f: state[task_id][f] for f in body} == body
    assert {s["status"] for s in state.values()} == {"completed", "canceled", "pending", "failed", "processing"}
    processing = next(s for s in state.values() if s["status"] == "processing")
    pending = next(s for s in state.values() if s["status"] == "pending")
    assert (processing["elapsed_time"], processing["estimated_remaining_seconds"]) == (1.5, 2)  # round(4 - 1.5)
    assert (pending["queue_position"], pending["estimated_remaining_seconds"]) == (1, 4)

async def test_a_workers_batch_reaches_the_socket_in_seq_order_in_pipelined_pushes(user: Any, make_task: Any,
                                                                                   monkeypatch: Any) -> None:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from generation.models import Completion
    from notifications import events

    if not isinstance(get_channel_layer(), RedisPubSubChannelLayer):
        pytest.skip("the pipeline is channels-redis' pub/sub layer's (REDIS_URL)")
    pipelined: list[int] = []
    real = events._publish_pipelined

    async def counted(layer: Any, batch: list) -> None:
        pipelined.append(len(batch))
        await real(layer, batch)

    monkeypatch.setattr(events, "_publish_pipelined", counted)
    await sync_to_async(lambda: [make_task() for _ in range(5)])()
    ws = await open_socket(token_for(user), after=5)  # past the five task_created
    await read_until_sync(ws)

    def work() -> None:
        claimed = GenerationTask.claim_next(WorkerProcess.objects.create(name="pipe"), limit=5)
        GenerationTask.complete_batch([(t, token, Completion(f"results/{t.pk}.jpg", "image/jpeg")) for t, token in claimed])

    await sync_to_async(work)()
    frames = [await ws.receive_json_from(10) for _ in range(10)]
    await ws.disconnect()
    assert [f["seq"] for f in frames] == list(range(6, 16))
    assert [f["type"] for f in frames] == ["task_update"] * 5 + ["task_complete"] * 5
    assert sum(pipelined) >= 10 and max(pipelined) >= 5  # a batch's events went to Redis together
