"""The worker's database connection between claims: no health-check round trip while it is
alive, and a connection lost while idle (or at the claim's commit) never stops a runner."""
from __future__ import annotations

import select
import threading
from collections import Counter
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connection
from django.db.backends.utils import CursorWrapper

from generation import wakeup
from generation.models import GenerationTask
from generation.worker import Worker, reuse_connection
from tests.conftest import require_postgresql, wait_until
from tests.generation.test_worker import claims_per_task

BACKENDS = "tests.generation.backends"


def terminate(pids: list[int]) -> None:
    """End these server sessions, as a database restart or an idle timeout would."""
    params = wakeup.postgres_conninfo()
    assert params is not None
    with psycopg.connect(**params, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def own_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def readable(raw: Any) -> bool:
    poller = select.poll()
    poller.register(raw.fileno(), select.POLLIN)
    return bool(poller.poll(0))


@pytest.mark.django_db(transaction=True)
def test_a_live_idle_connection_skips_the_health_check_and_an_ended_one_keeps_it():
    require_postgresql("the connection's socket (psycopg)")
    pid = own_pid()
    reuse_connection()
    assert connection.health_check_done  # no SELECT 1 before the next claim
    raw = connection.connection
    terminate([pid])
    wait_until(lambda: readable(raw))  # the server's FATAL message, then EOF
    reuse_connection()
    assert not connection.health_check_done  # Django's check runs, finds it dead, reconnects
    assert own_pid() != pid


@pytest.mark.django_db(transaction=True)
def test_a_claim_on_a_connection_ended_after_the_look_reconnects_and_claims(make_task, settings):
    require_postgresql("pg_terminate_backend")
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    task = make_task()
    worker = Worker(worker_id="reconnect")
    worker.register()
    reuse_connection()
    assert connection.health_check_done
    pid = own_pid()
    reuse_connection()
    terminate([pid])  # ended after the look: the claim's first statement meets it
    wait_until(lambda: readable(connection.connection))
    claimed = worker._claim(set(), 1)
    assert [t.pk for t, _ in claimed] == [task.pk]
    assert own_pid() != pid


@pytest.mark.django_db(transaction=True)
def test_a_claim_whose_commit_answer_is_lost_runs_the_claimed_task_once(make_task, settings, monkeypatch):
    require_postgresql("a claim committed on the server")
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    settings.IMAGEGEN_MAX_RUNNING_PER_USER = 5  # a claim in a transaction (BEGIN ... COMMIT: the capped claim)
    task = make_task()
    worker = Worker(worker_id="lost-answer")
    worker.register()
    wrapper = connection._connections[connection._alias]  # this thread's DatabaseWrapper
    commit = wrapper._commit

    def commit_then_lose_the_answer() -> None:
        commit()  # on the server: the task is processing under this worker's claim
        monkeypatch.setattr(wrapper, "_commit", commit)
        wrapper.connection.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(wrapper, "_commit", commit_then_lose_the_answer)
    assert worker.run_once() is True
    task.refresh_from_db()
    assert (task.status, task.attempts) == ("completed", 1)
    assert claims_per_task() == Counter({task.pk: 1})
    assert worker.run_once() is False


@pytest.mark.django_db(transaction=True)
def test_a_one_statement_claim_whose_answer_is_lost_runs_the_claimed_task_once(make_task, settings, monkeypatch):
    require_postgresql("a claim committed on the server")
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    task = make_task()
    worker = Worker(worker_id="lost-statement-answer")
    worker.register()
    execute = CursorWrapper.execute
    lost: list[str] = []

    def run_then_lose_the_answer(self: CursorWrapper, sql: str, params: Any = None) -> Any:
        result = execute(self, sql, params)
        if "EXECUTE imagegen_claim_" in sql and not lost:  # committed on the server as it ran (autocommit)
            lost.append(sql)
            self.db.connection.close()
            # as Django raises it (its cursor wraps psycopg's errors)
            raise OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(CursorWrapper, "execute", run_then_lose_the_answer)
    assert worker.run_once() is True
    assert lost
    task.refresh_from_db()
    assert (task.status, task.attempts) == ("completed", 1)
    assert claims_per_task() == Counter({task.pk: 1})
    assert worker.run_once() is False


@pytest.mark.django_db(transaction=True)
def test_every_worker_connection_ended_while_idle_then_a_submit_still_runs(make_task, settings):
    require_postgresql("LISTEN/NOTIFY and pg_terminate_backend")
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    worker = Worker(worker_id="idle-killed", poll_interval=60.0)
    with connection.cursor() as cursor:
        # The worker's sessions are the ones opened from now on; older ones of this test process
        # (the ASGI tests' connection pool) must live on for the tests after this one.
        cursor.execute("SELECT clock_timestamp()")
        started = cursor.fetchone()[0]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        def listener() -> wakeup.Listener:
            return next(s for s in worker._services if isinstance(s, wakeup.Listener))

        wait_until(lambda: any(isinstance(s, wakeup.Listener) for s in worker._services) and listener().ready.is_set())
        first = make_task()
        wait_until(lambda: GenerationTask.objects.get(pk=first.pk).status == "completed", timeout=10)
        # Every session of the worker (runner, listener, heartbeat, ...) ended while it idles.
        mine = own_pid()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s"
                           " AND backend_start >= %s", [mine, started])
            pids = [row[0] for row in cursor.fetchall()]
        assert pids
        listener().ready.clear()
        terminate(pids)
        wait_until(listener().ready.is_set, timeout=20)  # LISTENing again (its reconnect wakes the runner once)
        task = make_task()
        # Far sooner than the 60 s poll: the NOTIFY woke the runner, whose claim reconnected.
        wait_until(lambda: GenerationTask.objects.get(pk=task.pk).status == "completed", timeout=15)
        assert all(r.is_alive() for r in worker._runners)
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
