"""Set-based claims and completions: per-row tokens, the fence in the WHERE, gapless batched events, turns."""
from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from typing import Any

import pytest

from generation.models import Completion, GenerationTask, OutputRecord, TaskOutput, WorkerProcess
from notifications.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker_row() -> WorkerProcess:
    return WorkerProcess.objects.create(name="set-based")


def done(name: str) -> Completion:
    record = OutputRecord(name="amazon", preset="amazon", format="jpeg", width=8, height=8, bytes=3,
                          file_name=f"results/{name}.jpg", content_type="image/jpeg", compliance=None)
    return Completion(f"results/{name}.jpg", "image/jpeg", None, outputs=(record,))


def log_of(user: Any) -> list[tuple[int, str, int, str]]:
    return [(e.seq, e.type, e.task_id, e.data["status"]) for e in Event.objects.filter(user=user).order_by("seq")]


def test_a_batch_claim_gives_each_row_its_own_token(make_task, worker_row):
    tasks = [make_task() for _ in range(5)]
    claimed = GenerationTask.claim_next(worker_row, limit=5)
    assert [task.pk for task, _ in claimed] == [t.pk for t in tasks]
    tokens = [token for _, token in claimed]
    assert len(set(tokens)) == 5 and all(isinstance(t, uuid.UUID) for t in tokens)
    stored = {row.pk: row for row in GenerationTask.objects.all()}
    for task, token in claimed:
        row = stored[task.pk]
        assert (row.status, row.claim_token, row.worker_id, row.attempts, row.started_at is not None) == (
            "processing", token, worker_row.pk, 1, True
        )
        assert (task.status, task.claim_token, task.attempts) == ("processing", token, 1)


def test_a_stale_tokens_completion_changes_nothing(make_task, worker_row):
    task = make_task()
    [(first, stale)] = GenerationTask.claim_next(worker_row)
    first.requeue()  # an operator takes it back while the first worker still runs it
    [(second, fresh)] = GenerationTask.claim_next(WorkerProcess.objects.create(name="new owner"))
    events_before = log_of(task.user)

    assert GenerationTask.complete_batch([(first, stale, done("stale"))]) == {task.pk}
    row = GenerationTask.objects.get(pk=task.pk)
    assert (row.status, row.claim_token, row.result_image.name, row.progress) == ("processing", fresh, "", 0)
    assert not TaskOutput.objects.filter(task=task).exists()
    assert log_of(task.user) == events_before

    assert GenerationTask.complete_batch([(second, fresh, done("fresh"))]) == set()
    row.refresh_from_db()
    assert (row.status, row.result_image.name, row.claim_token) == ("completed", "results/fresh.jpg", None)
    assert list(TaskOutput.objects.filter(task=task).values_list("file", flat=True)) == ["results/fresh.jpg"]


def test_a_batchs_events_are_gapless_and_in_claim_order_per_user(make_task, user, other_user, worker_row):
    mine = [make_task(user=user) for _ in range(3)]
    theirs = [make_task(user=other_user) for _ in range(2)]
    mine[0].cancel()
    mine[0].retry()  # this user's log is further along: 3 created + cancel + retry
    claimed = GenerationTask.claim_next(worker_row, limit=10)
    order = [task.pk for task, _ in claimed]
    assert GenerationTask.complete_batch([(task, token, done(str(task.pk))) for task, token in claimed]) == set()

    for owner, tasks, before in ((user, mine, 5), (other_user, theirs, 2)):
        log = log_of(owner)
        assert [seq for seq, *_ in log] == list(range(1, before + 2 * len(tasks) + 1))
        in_order = [pk for pk in order if pk in {t.pk for t in tasks}]
        assert log[before:] == [
            *[(before + i + 1, "task_update", pk, "processing") for i, pk in enumerate(in_order)],
            *[(before + len(tasks) + i + 1, "task_complete", pk, "completed") for i, pk in enumerate(in_order)],
        ]
    # Each event is the task as the REST API shows it at that point: the completion lists its output.
    complete = Event.objects.get(task_id=theirs[0].pk, type="task_complete")
    assert complete.data["outputs"][0]["url"] == f"/api/tasks/{theirs[0].pk}/result/?output=amazon"
    assert complete.data["result_image_url"] == f"/api/tasks/{theirs[0].pk}/result/"


def test_a_batch_claim_takes_turns_across_users_and_keeps_the_running_cap(make_task, user, other_user, settings):
    heavy = [make_task(user=user) for _ in range(4)]  # queued first: turns 0..3
    light = make_task(user=other_user)  # joins the current round: turn 0
    claimed = [t.pk for t, _ in GenerationTask.claim_next(WorkerProcess.objects.create(name="a"), limit=3)]
    assert claimed == [heavy[0].pk, light.pk, heavy[1].pk]

    settings.IMAGEGEN_MAX_RUNNING_PER_USER = 3
    more = [t.pk for t, _ in GenerationTask.claim_next(WorkerProcess.objects.create(name="b"), limit=5)]
    assert more == [heavy[2].pk]  # the user's third running task; the fourth waits for a slot


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_keep_every_users_log_gapless(make_task, user, other_user):
    tasks = [make_task(user=(user, other_user)[i % 2]) for i in range(40)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def drain(name: str) -> None:
        from django.db import connection

        try:
            row = WorkerProcess.objects.create(name=name)
            barrier.wait()
            while claimed := GenerationTask.claim_next(row, limit=6):
                GenerationTask.complete_batch([(task, token, done(f"{name}-{task.pk}")) for task, token in claimed])
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert set(GenerationTask.objects.values_list("status", flat=True)) == {"completed"}
    for owner in (user, other_user):
        log = log_of(owner)
        assert [seq for seq, *_ in log] == list(range(1, 3 * 20 + 1))
        per_task: dict[int, list[str]] = defaultdict(list)
        for _, kind, task_id, _ in log:
            per_task[task_id].append(kind)
        assert set(per_task) == {t.pk for t in tasks if t.user_id == owner.pk}
        assert all(kinds == ["task_created", "task_update", "task_complete"] for kinds in per_task.values())


def test_a_batchs_pushed_events_are_the_rest_body_and_the_stored_event(make_task, user, auth_client, worker_row,
                                                                     monkeypatch, django_capture_on_commit_callbacks):
    """The batch renders its events with shared lookups and pushes them without reading them
    back: what a client gets pushed is what it would replay and what GET answers."""
    from notifications import events

    pushed: list[tuple[int, dict]] = []
    monkeypatch.setattr(events, "publish_many", pushed.extend)
    tasks = [make_task(user=user) for _ in range(3)]
    with_engine = Completion("results/e.jpg", "image/jpeg", {"passed": True, "checks": {}}, engine={"backend": "noop"},
                             outputs=done("e").outputs)
    with django_capture_on_commit_callbacks(execute=True):
        claimed = GenerationTask.claim_next(worker_row, limit=3)
    with django_capture_on_commit_callbacks(execute=True):
        assert GenerationTask.complete_batch([(task, token, with_engine) for task, token in claimed]) == set()

    assert [(m["type"], m["task_id"]) for _, m in pushed] == [
        *[("task_update", t.pk) for t in tasks], *[("task_complete", t.pk) for t in tasks]
    ]
    for user_id, message in pushed:
        stored = Event.objects.get(user_id=user_id, seq=message["seq"])
        assert message == stored.as_message()
    for t in tasks:
        final = [m for _, m in pushed if m["task_id"] == t.pk][-1]
        body = auth_client.get(f"/api/tasks/{t.pk}/").json()
        assert {k: v for k, v in final["data"].items() if k != "elapsed_time"} == {
            k: v for k, v in body.items() if k != "elapsed_time"
        }
        assert list(final["data"]) == list(body)  # the same fields in the same order


@pytest.mark.parametrize(("limit", "exclude", "cap"), [(1, (), 0), (7, (5, 9), 0), (100, (3,), 0), (2, (), 3)])
def test_the_claim_query_built_once_is_the_querysets_own(limit, exclude, cap, settings):
    """The claim's SQL is compiled once per shape and then given this claim's time and ids:
    it must be exactly what ``claimable_locked`` compiles at that moment."""
    from datetime import timedelta
    from unittest import mock

    from django.db import connection, transaction
    from django.utils import timezone

    from generation.models import set_transitions

    settings.IMAGEGEN_MAX_RUNNING_PER_USER = cap
    for now in (timezone.now(), timezone.now() + timedelta(days=3, microseconds=7)):
        with transaction.atomic(), mock.patch("django.utils.timezone.now", return_value=now):
            built = set_transitions.claimable_ids(GenerationTask, limit, exclude)
            compiled = set_transitions.picked_ids(GenerationTask.objects.claimable_locked(limit, exclude))
        assert (built[0], list(built[1])) == (compiled[0], list(compiled[1]))
        if connection.vendor != "postgresql":
            continue
        # For a prepared statement: the one pending status as a literal, its parameter left out.
        with transaction.atomic(), mock.patch("django.utils.timezone.now", return_value=now):
            literal = set_transitions.claimable_ids(GenerationTask, limit, exclude, literal_status=True)
        at = [i for i, p in enumerate(compiled[1]) if p == "pending"]
        pieces = compiled[0].split("%s")
        expected = "%s".join(pieces[:at[0] + 1]) + "'pending'" + "%s".join(pieces[at[0] + 1:])
        assert len(at) == 1 and literal[0] == expected.replace(f" LIMIT {limit} ", " LIMIT %s ")
        assert list(literal[1]) == [*(p for i, p in enumerate(compiled[1]) if i != at[0]), limit]
