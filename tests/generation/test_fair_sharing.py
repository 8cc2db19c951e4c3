"""Fair sharing: round-robin across users within a priority, the per-user running cap, and the
queue position that follows the new order."""
from __future__ import annotations

import threading
from typing import Any, Callable

import pytest
from django.db import connection

from generation import wakeup
from generation.models import GenerationTask, WorkerProcess
from generation.worker import Worker
from tests.generation.test_worker import BACKENDS


def claim_order(worker: WorkerProcess, n: int) -> list[int]:
    order: list[int] = []
    for _ in range(n):
        claimed = GenerationTask.claim_next(worker)
        order += [task.pk for task, _ in claimed]
    return order


@pytest.mark.django_db
def test_a_single_task_behind_40_of_another_users_starts_next_not_41st(make_task, other_user, auth_client,
                                                                        other_client, settings):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    settings.IMAGEGEN_PREFETCH_WINDOW = 0  # one at a time, like real image tasks
    heavy = [make_task(user=other_user) for _ in range(40)]
    # The one worker is busy with the heavy seller's first task when the single photo arrives.
    [(running, token)] = GenerationTask.claim_next(WorkerProcess.objects.create(name="busy"))
    mine = make_task()
    assert auth_client.get(f"/api/tasks/{mine.pk}/").json()["queue_position"] == 1
    # The heavy seller's queue moved back by one place, and says so.
    assert other_client.get(f"/api/tasks/{heavy[1].pk}/").json()["queue_position"] == 2
    assert other_client.get(f"/api/tasks/{heavy[-1].pk}/").json()["queue_position"] == 40
    running.complete(token, result_name="r.jpg", content_type="image/jpeg", compliance=None)
    assert Worker(worker_id="fair").run_once() is True
    mine.refresh_from_db()
    assert mine.status == "completed"
    assert GenerationTask.objects.filter(user=other_user, status="completed").count() == 1


@pytest.mark.django_db
def test_claims_go_round_robin_across_users_and_queue_positions_follow_that_order(
    make_task, user, other_user, django_user_model
):
    third = django_user_model.objects.create_user(username="dave", password="dave-pass-123")
    a = [make_task(user=user) for _ in range(3)]
    b = [make_task(user=other_user) for _ in range(2)]
    c = [make_task(user=third)]
    expected = [a[0].pk, b[0].pk, c[0].pk, a[1].pk, b[1].pk, a[2].pk]
    positions = {t.pk: GenerationTask.objects.get(pk=t.pk).queue_position() for t in a + b + c}
    assert sorted(positions, key=positions.get) == expected
    assert sorted(positions.values()) == [1, 2, 3, 4, 5, 6]
    assert claim_order(WorkerProcess.objects.create(name="rr"), 6) == expected


@pytest.mark.django_db
def test_a_batch_claim_interleaves_users_too(make_task, user, other_user):
    heavy = [make_task(user=user) for _ in range(10)]
    single = make_task(user=other_user)
    claimed = [t.pk for t, _ in GenerationTask.claim_next(WorkerProcess.objects.create(name="b"), limit=3)]
    assert claimed == [heavy[0].pk, single.pk, heavy[1].pk]


@pytest.mark.django_db
def test_a_higher_priority_goes_first_and_round_robin_holds_within_each(make_task, user, other_user):
    lane = [make_task(user=user, priority=-1) for _ in range(2)]  # e.g. a batch's tasks
    later_single = make_task(user=other_user)
    other_lane = make_task(user=other_user, priority=-1)
    assert GenerationTask.objects.get(pk=later_single.pk).queue_position() == 1
    assert claim_order(WorkerProcess.objects.create(name="p"), 4) == [
        later_single.pk, lane[0].pk, other_lane.pk, lane[1].pk,
    ]


@pytest.mark.django_db
def test_the_running_cap_holds_back_a_users_tasks_but_not_anothers(make_task, user, other_user, settings):
    settings.IMAGEGEN_MAX_RUNNING_PER_USER = 2
    mine = [make_task(user=user) for _ in range(4)]
    theirs = make_task(user=other_user)
    worker = WorkerProcess.objects.create(name="cap")
    claimed = [t.pk for t, _ in GenerationTask.claim_next(worker, limit=5)]
    assert claimed == [mine[0].pk, theirs.pk, mine[1].pk]
    assert GenerationTask.claim_next(worker, limit=5) == []
    task = GenerationTask.objects.get(pk=mine[0].pk)
    task.complete(task.claim_token, result_name="r.jpg", content_type="image/jpeg", compliance=None)
    assert [t.pk for t, _ in GenerationTask.claim_next(worker, limit=5)] == [mine[2].pk]


def claim_at_once(workers: int, rounds: int, limit: int) -> list[int]:
    """The ids ``workers`` worker rows claim, each in its own thread, started together,
    ``rounds`` claims of up to ``limit`` each; raises what any thread raised (a deadlock)."""
    rows = [WorkerProcess.objects.create(name=f"c{i}") for i in range(workers)]
    start = threading.Barrier(len(rows))
    claimed: list[int] = []
    errors: list[BaseException] = []

    def claim(row: WorkerProcess) -> None:
        try:
            start.wait(10)
            for _ in range(rounds):
                claimed.extend(t.pk for t, _ in GenerationTask.claim_next(row, limit=limit))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(row,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    if errors:
        raise errors[0]
    return claimed


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_exceed_the_running_cap(make_task, user, settings):
    settings.IMAGEGEN_MAX_RUNNING_PER_USER = 1
    for _ in range(8):
        make_task(user=user)
    claimed = claim_at_once(workers=4, rounds=5, limit=2)
    assert len(claimed) == 1
    assert GenerationTask.objects.filter(status="processing").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_across_many_users_keep_each_users_cap(make_task, user, django_user_model, settings):
    # Claims in fair order span several users at once: each one's slots are checked together,
    # and four workers claiming batches across the same users neither deadlock nor overshoot.
    settings.IMAGEGEN_MAX_RUNNING_PER_USER = 2
    owners = [user] + [django_user_model.objects.create_user(username=f"cap{i}", password="pw-cap-12345")
                       for i in range(4)]
    for _ in range(5):
        for owner in owners:
            make_task(user=owner)
    claimed = claim_at_once(workers=4, rounds=6, limit=4)
    assert len(claimed) == len(set(claimed)) == 2 * len(owners)
    running = GenerationTask.objects.filter(status="processing")
    assert sorted(running.values_list("user_id", flat=True)) == sorted([o.pk for o in owners] * 2)


def produce_recording(monkeypatch: Any, order: list[int], during: Callable[[int], None] | None = None) -> None:
    """Record the order in which the worker runs tasks; ``during(n)`` runs after the n-th one."""
    real = Worker._produce

    def recording(self: Worker, task: GenerationTask, token: Any) -> Any:
        order.append(task.pk)
        outcome = real(self, task, token)
        if during is not None:
            during(len(order))
        return outcome

    monkeypatch.setattr(Worker, "_produce", recording)


@pytest.mark.django_db
def test_a_single_task_queued_during_another_users_batch_runs_next_not_after_the_batch(
    make_task, other_user, settings, monkeypatch
):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    settings.IMAGEGEN_PREFETCH_WINDOW = 0.25
    heavy = [make_task(user=other_user) for _ in range(8)]
    worker = Worker(worker_id="cut-in")
    worker._seconds_per_task = 0.001  # fast tasks: the whole queue fits one claim
    arrived: list[GenerationTask] = []

    def a_seller_submits(n: int) -> None:
        if n == 2:
            arrived.append(make_task())
            wakeup.local.notify()  # what the listener does when the submit's NOTIFY arrives

    order: list[int] = []
    produce_recording(monkeypatch, order, a_seller_submits)
    assert worker.run_once() is True
    [single] = arrived
    # Claimed and run right after the task in progress, not after the other six of the batch.
    assert order == [heavy[0].pk, heavy[1].pk, single.pk] + [t.pk for t in heavy[2:]]
    assert set(GenerationTask.objects.values_list("status", flat=True)) == {"completed"}
    assert GenerationTask.objects.filter(attempts=1).count() == 9


@pytest.mark.django_db
def test_a_batch_with_nothing_new_queued_is_claimed_once(make_task, other_user, settings, monkeypatch):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    settings.IMAGEGEN_PREFETCH_WINDOW = 0.25
    heavy = [make_task(user=other_user) for _ in range(8)]
    worker = Worker(worker_id="no-cut-in")
    worker._seconds_per_task = 0.001
    claims: list[int] = []
    real_claim = GenerationTask.claim_next.__func__

    def counting(cls: type[GenerationTask], *args: Any, **kwargs: Any) -> Any:
        claimed = real_claim(cls, *args, **kwargs)
        claims.append(len(claimed))
        return claimed

    monkeypatch.setattr(GenerationTask, "claim_next", classmethod(counting))
    order: list[int] = []
    produce_recording(monkeypatch, order)
    assert worker.run_once() is True
    assert claims == [8]  # one claim (one commit) for the batch: no wake-up, no extra claim
    assert order == [t.pk for t in heavy]
