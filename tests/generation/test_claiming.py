"""A worker's claim outside a transaction on PostgreSQL is one statement (generation.models.claiming):
the claims, their tokens and their processing events commit together, in one round trip, and
each event says what the REST API answers for the task at that moment."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generation import wakeup
from generation.models import GenerationTask, WorkerProcess, claiming
from notifications import events
from notifications.models import Event
from tests.conftest import require_postgresql
from tests.generation.test_batch_model import make_batch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only(monkeypatch: Any) -> None:
    require_postgresql("the one-statement claim")
    monkeypatch.setattr(claiming, "_batches_seen", -claiming.BATCHES_SEEN_FOR)


@pytest.fixture
def worker_row() -> WorkerProcess:
    return WorkerProcess.objects.create(name="one-statement")


@pytest.fixture
def pushed(monkeypatch: Any) -> list[tuple[int, dict]]:
    """The pushes handed to the publisher, each checked at that moment to be in the log
    already, as another connection sees it."""
    got: list[tuple[int, dict]] = []
    params = wakeup.postgres_conninfo()
    assert params is not None

    def publish_many(messages: list[tuple[int, dict]]) -> None:
        with psycopg.connect(**params, autocommit=True) as other:
            for user_id, message in messages:
                stored = other.execute("SELECT type FROM notifications_event WHERE user_id = %s AND seq = %s",
                                       [user_id, message["seq"]]).fetchall()
                assert stored == [(message["type"],)], "pushed before it was in the event log"
        got.extend(messages)

    monkeypatch.setattr(events, "publish_many", publish_many)
    return got


def statements_of(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries]


def is_claim_statement(sql: str) -> bool:
    return "EXECUTE imagegen_claim_" in sql or "claimed_event" in sql


def test_a_claim_is_one_statement_that_commits_the_claim_and_its_event(make_task, worker_row, pushed):
    for limit in (3, 7):  # the claim query compiled once per limit; one statement prepared for all
        assert GenerationTask.claim_next(worker_row, limit=limit) == []
    task = make_task()
    with CaptureQueriesContext(connection) as queries:
        [(claimed, token)] = GenerationTask.claim_next(worker_row, limit=7)
    [sql] = statements_of(queries)
    assert is_claim_statement(sql)
    row = GenerationTask.objects.get(pk=task.pk)
    assert (row.status, row.claim_token, row.worker_id, row.attempts) == ("processing", token, worker_row.pk, 1)
    assert (claimed.pk, claimed.status, claimed.claim_token, claimed.worker) == (task.pk, "processing", token, worker_row)
    log = list(Event.objects.filter(user=task.user).order_by("seq").values_list("seq", "type", "task_id"))
    assert log == [(1, "task_created", task.pk), (2, "task_update", task.pk)]
    assert [(m["seq"], m["type"], m["task_id"]) for _, m in pushed] == [(2, "task_update", task.pk)]
    with connection.cursor() as cursor:  # prepared once (for every limit), and run on its one generic plan
        cursor.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name LIKE 'imagegen_claim_%%'")
        assert cursor.fetchall() == [(3, 0)]


def test_an_empty_queue_claims_nothing_and_writes_nothing(worker_row, pushed):
    assert GenerationTask.claim_next(worker_row, limit=5) == []
    assert not Event.objects.exists() and pushed == []


def test_each_event_is_the_rest_body_of_the_task_just_claimed(make_task, user, worker_row, pushed, monkeypatch):
    # The clock is the test's, so elapsed_time and the ETA are those of the claim's instant;
    # the ETA reads a typical run time of 7.6 s (the memo bypassed).
    clock = [timezone.now().replace(microsecond=0) + timedelta(hours=1)]  # a whole second: no fraction
    monkeypatch.setattr(timezone, "now", lambda: clock[0])
    monkeypatch.setattr("generation.models.task.memoized", lambda key, ttl, compute: compute())
    monkeypatch.setattr(type(GenerationTask.objects), "typical_run_seconds", lambda self, sample=50: 7.6)
    plain = make_task()
    retried = make_task()
    GenerationTask.objects.filter(pk=retried.pk).update(
        attempts=1, error_code="upstream_timeout", error_message="Gemini did not answer.", client_ref="sku-1",
        expires_at=datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt_timezone.utc), compliance={"passed": False},
        engine={"name": "local", "version": "2.5"}, needs_review=True,
    )
    by_url, _ = GenerationTask.submit(user=user, image=None, content_type="", options=plain.options,
                                      image_url="https://example.com/p.jpg")
    clock[0] += timedelta(microseconds=250)  # started_at and updated_at with a fraction
    claimed = GenerationTask.claim_next(worker_row, limit=5)
    assert [t.pk for t, _ in claimed] == [plain.pk, retried.pk, by_url.pk]
    stored = {e.task_id: e for e in Event.objects.filter(type="task_update")}
    for task, _ in claimed:
        body = GenerationTask.objects.get(pk=task.pk).render_state(None)  # as GET renders it now
        assert stored[task.pk].data == body
    assert {m["task_id"]: m["data"] for _, m in pushed} == {pk: e.data for pk, e in stored.items()}
    by_id = {pk: e.data for pk, e in stored.items()}
    assert by_id[plain.pk]["input_image_url"] is not None
    assert by_id[by_url.pk]["input_image_url"] is None
    assert by_id[retried.pk]["expires_at"] == "2031-05-06T07:08:09.123456Z"
    assert "." not in by_id[plain.pk]["created_at"]  # a whole second: no ".000000"
    assert by_id[plain.pk]["started_at"].endswith(".000250Z")
    assert (by_id[plain.pk]["elapsed_time"], by_id[plain.pk]["estimated_remaining_seconds"]) == (0.0, 8)


def test_seqs_follow_claim_order_per_owner_and_stay_gapless(make_task, user, other_user, worker_row, pushed):
    tasks = [make_task(user=(user, other_user)[i % 2]) for i in range(6)]
    claimed = GenerationTask.claim_next(worker_row, limit=4)
    claimed += GenerationTask.claim_next(WorkerProcess.objects.create(name="second"), limit=4)
    assert [t.pk for t, _ in claimed] == [t.pk for t in tasks]
    for owner in (user, other_user):
        log = list(Event.objects.filter(user=owner).order_by("seq").values_list("seq", "type", "task_id"))
        assert [seq for seq, *_ in log] == list(range(1, 7))
        updates = [task_id for _, kind, task_id in log if kind == "task_update"]
        assert updates == [t.pk for t in tasks if t.user_id == owner.pk]
    assert sorted((u, m["seq"]) for u, m in pushed) == sorted(
        (e.user_id, e.seq) for e in Event.objects.filter(type="task_update"))


def test_a_row_locked_elsewhere_is_skipped_and_claimed_once(make_task, worker_row):
    locked, free = make_task(), make_task()
    params = wakeup.postgres_conninfo()
    assert params is not None
    with psycopg.connect(**params) as other:  # another worker's claim transaction, still open
        other.execute("SELECT id FROM generation_generationtask WHERE id = %s FOR UPDATE", [locked.pk])
        assert [t.pk for t, _ in GenerationTask.claim_next(worker_row, limit=5)] == [free.pk]
        other.rollback()
    [(task, token)] = GenerationTask.claim_next(WorkerProcess.objects.create(name="b"), limit=5)
    assert task.pk == locked.pk
    assert GenerationTask.claim_next(worker_row, limit=5) == []
    claims = defaultdict(int)
    for event in Event.objects.filter(type="task_update"):
        claims[event.task_id] += 1
    assert dict(claims) == {locked.pk: 1, free.pk: 1}


def test_the_token_fences_later_writes(make_task, worker_row):
    task = make_task()
    [(claimed, token)] = GenerationTask.claim_next(worker_row)
    claimed.requeue()  # taken back while this worker still runs it
    [(again, fresh)] = GenerationTask.claim_next(WorkerProcess.objects.create(name="new owner"))
    assert again.pk == task.pk and fresh != token
    assert GenerationTask.complete_batch([(claimed, token, _done())]) == {task.pk}
    assert GenerationTask.objects.get(pk=task.pk).claim_token == fresh


def test_a_batch_task_is_claimed_transactionally_with_its_batch_event(user, worker_row):
    assert GenerationTask.claim_next(worker_row) == []  # the statement prepared
    batch = make_batch(user, 2)
    with CaptureQueriesContext(connection) as queries:
        [(task, _)] = GenerationTask.claim_next(worker_row)
    sql = statements_of(queries)
    assert is_claim_statement(sql[0])  # tried, picked a batch task: claimed nothing
    assert len(sql) > 2 and not any(is_claim_statement(s) for s in sql[1:])
    assert task.batch_id == batch.pk
    kinds = list(Event.objects.filter(user=user).order_by("seq").values_list("type", flat=True))
    assert kinds[-2:] == ["task_update", "batch_update"]
    with CaptureQueriesContext(connection) as queries:
        GenerationTask.claim_next(worker_row)
    assert not any(is_claim_statement(s) for s in statements_of(queries))  # for a while, straight away


def test_inside_a_transaction_the_claim_is_transactional(make_task, worker_row):
    from django.db import transaction

    make_task(), make_task()
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert len(GenerationTask.claim_next(worker_row)) == 1
    assert not any(is_claim_statement(s) for s in statements_of(queries))


def test_under_a_running_cap_the_claim_statement_runs_after_a_lock_per_user(make_task, user, other_user,
                                                                            worker_row, pushed, settings):
    settings.IMAGEGEN_MAX_RUNNING_PER_USER = 2
    mine = [make_task(user=user) for _ in range(3)]
    theirs = make_task(user=other_user)
    GenerationTask.objects.filter(pk=mine[0].pk).update(status="processing")  # one slot of two taken
    with CaptureQueriesContext(connection) as queries:
        claimed = [t.pk for t, _ in GenerationTask.claim_next(worker_row, limit=5)]
    assert sorted(claimed) == sorted([mine[1].pk, theirs.pk])  # the room the user had, and the other user's task
    sql = [s for s in statements_of(queries) if not s.startswith("PREPARE")]  # once per session
    # BEGIN, the candidates with their users' locks, the claim statement over those that fit, COMMIT.
    assert len(sql) == 4 and (sql[0], sql[-1]) == ("BEGIN", "COMMIT")
    assert "EXECUTE imagegen_claim_pick_" in sql[1] and "EXECUTE imagegen_claim_capped_" in sql[2]
    # Each claimed task's processing event was pushed once it was durable (``pushed`` checks).
    assert sorted(m["task_id"] for _, m in pushed) == sorted(claimed)
    assert GenerationTask.claim_next(worker_row, limit=5) == []  # the user is at the cap now


def test_under_a_running_cap_a_claim_waits_for_another_claim_of_the_user_and_counts_its_task(
        make_task, user, worker_row, settings):
    import threading

    from tests.conftest import wait_until

    settings.IMAGEGEN_MAX_RUNNING_PER_USER = 1
    first, second = make_task(), make_task()
    # Another worker's claim of ``first``, not yet committed: it holds the user's lock and the row.
    other = psycopg.connect(**wakeup.postgres_conninfo())
    other.execute("SELECT pg_advisory_xact_lock(%s, %s)", [claiming.RUNNING_CAP_LOCK, user.pk])
    other.execute("UPDATE generation_generationtask SET status = 'processing' WHERE id = %s", [first.pk])
    got: list[Any] = []

    def claim() -> None:
        try:
            got.append(GenerationTask.claim_next(worker_row, limit=5))
        finally:
            connection.close()

    thread = threading.Thread(target=claim)
    thread.start()
    try:
        with psycopg.connect(**wakeup.postgres_conninfo(), autocommit=True) as watcher:
            # Our claim picked ``second`` (``first``'s row is locked) and waits for the user's lock.
            wait_until(lambda: watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")
                       .fetchone()[0] == 1)
        other.commit()
    finally:
        other.close()
    thread.join(20)
    assert got == [[]]  # the other claim's task took the user's one slot
    assert GenerationTask.objects.get(pk=second.pk).status == "pending"

def _done() -> Any:
    from generation.models import Completion

    return Completion("results/x.jpg", "image/jpeg", None)
