"""A submit on PostgreSQL is one statement (generation.models.creation): the task, its count
against the quota, its turn, its created event and its NOTIFY commit together, and what the
event says is what the REST API answers for the task at that moment."""
from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generation import wakeup
from generation.engine.spec import parse_job
from generation.models import DailyUsage, GenerationTask, QuotaExceeded, WorkerProcess
from generation.models import memo
from notifications.models import Event, EventCounter
from tests.conftest import product_photo, require_postgresql, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    require_postgresql("the one-statement submit")


def submit(user: Any, **extra: Any) -> GenerationTask:
    task, created = GenerationTask.submit(user=user, image=SimpleUploadedFile("p.jpg", product_photo()),
                                          content_type="image/jpeg", options=parse_job({}).to_options(), **extra)
    assert created
    return task


def created_event(task: GenerationTask) -> Event:
    return Event.objects.get(task_id=task.pk, type=Event.Type.CREATED)


def test_a_submit_is_one_statement_that_stores_the_task_its_count_and_its_created_event(user):
    submit(user)  # the day's counter and the event counter exist now
    with CaptureQueriesContext(connection) as queries:
        task = submit(user)
    assert len(queries.captured_queries) == 1
    stored = GenerationTask.objects.get(pk=task.pk)
    assert (stored.status, stored.turn, stored.input_image.name) == ("pending", task.turn, task.input_image.name)
    assert stored.input_image.storage.exists(stored.input_image.name)
    assert DailyUsage.usage_for(user, timezone.now()).today == 2
    assert list(Event.objects.filter(user=user).values_list("seq", "type", "task_id")) == [
        (1, "task_created", task.pk - 1), (2, "task_created", task.pk)]
    assert EventCounter.last_seq_for(user.pk) == 2


def test_the_created_event_holds_the_task_json_and_its_true_queue_position(user, other_user):
    # Claim order is priority, round-robin turn, id: a1 (turn 0), b1 (turn 0), a2 (turn 1).
    seen = {}
    for name, owner in (("a1", user), ("a2", user), ("b1", other_user)):
        task = submit(owner)
        seen[name] = (task, GenerationTask.objects.get(pk=task.pk).live_state())
    positions = {name: created_event(task).data["queue_position"] for name, (task, _) in seen.items()}
    assert positions == {"a1": 1, "a2": 2, "b1": 2}
    for task, body in seen.values():
        assert created_event(task).data == body
    assert GenerationTask.objects.get(pk=seen["a2"][0].pk).queue_position() == 3  # b1 joined ahead of it


def test_the_created_events_eta_is_the_rest_apis_to_the_second(user, other_user):
    done = submit(other_user)
    now = timezone.now()
    # Setup only: one finished 3 s run makes the typical run time 3.0 s (state is written
    # with update() so that no further event is appended).
    GenerationTask.objects.filter(pk=done.pk).update(status="completed", started_at=now - timedelta(seconds=3),
                                                     finished_at=now)
    WorkerProcess.objects.create(name="w", concurrency=2, heartbeat_timeout=timedelta(seconds=30))
    memo.forget()
    tasks = [submit(user) for _ in range(3)]
    etas = [created_event(t).data["estimated_remaining_seconds"] for t in tasks]
    # 3 s a run on 2 runners: 3, 4.5 (rounded half to even, as Python's round), 6.
    assert etas == [3, 4, 6]
    assert etas[-1] == GenerationTask.objects.get(pk=tasks[-1].pk).live_state()["estimated_remaining_seconds"]


def test_a_submit_that_waited_for_another_submit_of_its_user_counts_that_task_ahead_of_it(user):
    """The first submit holds the user's counter row (its transaction still open); the
    second waits for it. Its one statement's snapshot predates the first's commit, so it
    writes nothing and the transactional path counts the first task ahead of it."""
    submit(user)  # the day's counter row exists: the second submit waits on its lock
    holding, release = threading.Event(), threading.Event()
    first: dict[str, GenerationTask] = {}

    def hold_the_counter() -> None:
        try:
            with transaction.atomic():
                first["task"] = submit(user)
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    def release_once_the_second_waits() -> None:
        with psycopg.connect(**wakeup.postgres_conninfo(), autocommit=True) as watcher:
            wait_until(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()[0])
        release.set()

    holder = threading.Thread(target=hold_the_counter)
    holder.start()
    assert holding.wait(30)
    releaser = threading.Thread(target=release_once_the_second_waits)
    releaser.start()
    second = submit(user)
    holder.join(30)
    releaser.join(30)

    assert created_event(first["task"]).data["queue_position"] == 2
    assert created_event(second).data["queue_position"] == 3
    assert list(Event.objects.filter(user=user).values_list("seq", flat=True)) == [1, 2, 3]
    assert DailyUsage.usage_for(user, timezone.now()).today == 3


def test_a_submit_over_the_quota_writes_nothing(user, settings):
    settings.IMAGEGEN_DAILY_TASKS_PER_USER = 1
    submit(user)
    before = wakeup.local.generation
    with pytest.raises(QuotaExceeded):
        submit(user)
    assert GenerationTask.objects.count() == 1
    assert DailyUsage.usage_for(user, timezone.now()).today == 1
    assert list(Event.objects.values_list("seq", flat=True)) == [1]
    assert wakeup.local.generation == before  # no worker was woken for it


def test_inside_the_callers_transaction_the_task_and_its_event_wait_for_its_commit(user):
    before = wakeup.local.generation
    with pytest.raises(RuntimeError, match="caller"):
        with transaction.atomic():
            submit(user)
            assert wakeup.local.generation == before  # woken at commit, not before
            raise RuntimeError("the caller's transaction fails")
    assert not GenerationTask.objects.exists()
    assert not Event.objects.exists()
    assert DailyUsage.usage_for(user, timezone.now()).today == 0
    with transaction.atomic():
        task = submit(user)
    assert wakeup.local.generation > before
    assert created_event(task).seq == 1


def prepared_here() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'imagegen_create_%%'")
        return cursor.fetchone()[0]


def test_the_statement_is_prepared_once_per_connection_but_not_behind_a_pooler(user, settings):
    for _ in range(3):
        submit(user)
    assert prepared_here() == 1
    connection.close()
    settings.DATABASE_LISTEN_URL = "postgres://db-host/imagegen"  # DATABASE_URL is a pooler
    task = submit(user)
    assert prepared_here() == 0  # a transaction pooler's next transaction may be on another server connection
    assert created_event(task).seq == 4


def test_the_prepared_statement_is_planned_once_and_its_plan_can_use_the_partial_indexes(user, other_user):
    # Planning the statement for its values cost twice its execution (docs/benchmarks/queue.md):
    # every run uses the one generic plan. That plan is only good if the statuses are literals
    # (a parameter cannot prove a partial index's ``status = 'pending'``), but for the one read
    # that must not use the claim index: the user's last pending turn (``_turn_reads``).
    for owner in (user, other_user, user, user, other_user, user, user, user):
        submit(owner)
    with connection.cursor() as cursor:
        cursor.execute("SELECT generic_plans, custom_plans, statement FROM pg_prepared_statements"
                       " WHERE name LIKE 'imagegen_create_%%'")
        [(generic, custom, statement)] = cursor.fetchall()
    assert (generic, custom) == (8, 0)
    statuses = re.findall(r"status = ('[a-z]+'|\$\d+)", statement)
    assert re.fullmatch(r"\$\d+", statuses[0]) and statuses[1:] == ["'processing'", "'pending'", "'pending'", "'pending'"]
    assert [t.turn for t in GenerationTask.objects.filter(user=user).order_by("id")] == [0, 1, 2, 3, 4, 5]



def test_a_session_whose_first_prepare_was_rolled_back_still_runs_the_generic_plan(user):
    # PREPARE outlives a rolled-back transaction but a SET does not: the session's plan mode is
    # set as it connects, so a first submit that rolled back leaves no session planning for values.
    connection.close()
    with pytest.raises(RuntimeError), transaction.atomic():
        submit(user)
        raise RuntimeError("the caller's transaction fails")
    for _ in range(3):
        submit(user)
    with connection.cursor() as cursor:
        cursor.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name LIKE 'imagegen_create_%%'")
        assert cursor.fetchall() == [(4, 0)]
    assert GenerationTask.objects.filter(user=user).count() == 3

def index_entries_read() -> int:
    """Index entries this transaction has read from the task table's indexes so far."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0) FROM pg_index "
                       "WHERE indrelid = %s::regclass", [GenerationTask._meta.db_table])
        return int(cursor.fetchone()[0])


def test_a_submit_behind_another_sellers_queue_reads_a_few_index_entries_not_the_queue(user, other_user):
    # The user's last turn and the queue position's COUNT each walked every pending task of
    # the priority under the statement's generic plan: behind 4,600 of another seller's tasks,
    # 8 of a submit's 9 ms on the server, for a task that is second in the queue.
    submit(user)  # prepared, and the counters exist
    GenerationTask.objects.filter(user=user).delete()
    heavy = [GenerationTask(user=other_user, input_image="inputs/x.jpg", input_content_type="image/jpeg", options={})
             for _ in range(300)]
    with transaction.atomic():
        GenerationTask.assign_turns(heavy)
        GenerationTask.objects.bulk_create(heavy)
    with transaction.atomic():
        before = index_entries_read()
        single = submit(user)
        read = index_entries_read() - before
    assert read < 30
    assert created_event(single).data["queue_position"] == single.queue_position() == 2
    # The seller's own next task is counted behind all of its queue and the other's single task.
    assert created_event(submit(other_user)).data["queue_position"] == 302


def test_the_201_body_is_the_created_event_without_counting_the_queue_again(auth_client, user):
    submit(user)
    with CaptureQueriesContext(connection) as queries:
        response = auth_client.post("/api/tasks/", {"image": SimpleUploadedFile("p.jpg", product_photo())},
                                    format="multipart")
    assert response.status_code == 201
    body = response.json()
    assert body == created_event(GenerationTask.objects.get(pk=body["id"])).data
    assert body["queue_position"] == 2
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
