"""Automatic retention: what it deletes, what it never deletes, how often, and by whom."""
from __future__ import annotations

import threading
from typing import Any, Callable

import pytest
from django.core.files.storage import default_storage
from django.db import connections

from generation import retention
from generation.models import GenerationTask, QueueControl, WorkerProcess
from generation.worker import Worker
from notifications.models import Event
from tests.conftest import wait_until

from .builders import advance, ago, place, worker_row

S = GenerationTask.Status


@pytest.fixture
def retention_settings(settings: Any) -> Any:
    settings.IMAGEGEN_TASK_RETENTION_DAYS = 30
    settings.IMAGEGEN_EVENT_RETENTION_SECONDS = 30 * 86400
    settings.IMAGEGEN_WORKER_RETENTION_DAYS = 7
    settings.IMAGEGEN_RETENTION_INTERVAL_MINUTES = 60
    return settings


@pytest.fixture
def old_and_new(make_task: Callable[..., GenerationTask]) -> dict[str, GenerationTask]:
    worker = worker_row()
    old = {s: place(advance(make_task(), s, worker), finished_at=ago(days=31)) for s in (S.COMPLETED, S.FAILED, S.CANCELED)}
    return {
        **{f"old_{s}": t for s, t in old.items()},
        "recent": advance(make_task(), S.COMPLETED, worker),
        "old_pending": place(make_task(), created_at=ago(days=90), run_after=ago(days=90), updated_at=ago(days=90)),
        "old_processing": place(advance(make_task(), S.PROCESSING, worker), created_at=ago(days=90),
                                started_at=ago(days=90), updated_at=ago(days=90)),
    }


def names(task: GenerationTask) -> list[str]:
    return [n for n in (task.input_image.name, task.result_image.name) if n]


@pytest.mark.django_db
def test_it_deletes_expired_finished_tasks_and_their_files(
    old_and_new: dict[str, GenerationTask], retention_settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        result = retention.run_retention()

    assert (result.tasks, result.files, result.skipped) == (3, 4, None)
    kept = set(GenerationTask.objects.values_list("id", flat=True))
    assert kept == {old_and_new[k].pk for k in ("recent", "old_pending", "old_processing")}
    for key, task in old_and_new.items():
        assert all(default_storage.exists(n) == (task.pk in kept) for n in names(task)), key


@pytest.mark.django_db
def test_it_never_deletes_a_pending_or_processing_task_whatever_its_age(
    old_and_new: dict[str, GenerationTask], retention_settings: Any
) -> None:
    with pytest.raises(ValueError, match="only finished tasks"):
        retention.purge_tasks(older_than=ago(0) - ago(0), statuses=["pending"])
    retention.purge_tasks(older_than=ago(0) - ago(0))  # everything finished, of any age

    assert set(GenerationTask.objects.values_list("status", flat=True)) == {S.PENDING, S.PROCESSING}


@pytest.mark.django_db
def test_it_keeps_files_when_the_delete_rolls_back(
    old_and_new: dict[str, GenerationTask], django_capture_on_commit_callbacks: Any
) -> None:
    from django.db import transaction

    task = old_and_new["old_completed"]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            retention.delete_tasks([task.pk])
            raise RuntimeError("the surrounding transaction fails")

    assert callbacks == [] and GenerationTask.objects.filter(pk=task.pk).exists()
    assert all(default_storage.exists(n) for n in names(task))


@pytest.mark.django_db
def test_it_runs_at_most_once_per_interval_across_processes(
    old_and_new: dict[str, GenerationTask], retention_settings: Any
) -> None:
    first = retention.run_retention()
    again = retention.run_retention()

    assert first.skipped is None and again.skipped == "not due"
    assert QueueControl.get().retention_ran_at is not None
    place(old_and_new["recent"], finished_at=ago(days=40))
    QueueControl.objects.filter(pk=1).update(retention_ran_at=ago(61 * 60))  # the interval has passed
    assert retention.run_retention().tasks == 1


@pytest.mark.django_db
def test_it_purges_old_events_and_stale_worker_rows(
    old_and_new: dict[str, GenerationTask], retention_settings: Any
) -> None:
    Event.objects.filter(task_id=old_and_new["old_failed"].pk).update(created_at=ago(days=31))
    stale = worker_row("long-gone", heartbeat_age=8 * 86400, stopped=True)

    result = retention.run_retention()

    assert result.events == 3 and not Event.objects.filter(task_id=old_and_new["old_failed"].pk).exists()
    assert Event.objects.filter(task_id=old_and_new["recent"].pk).exists()
    assert result.workers == 1 and not WorkerProcess.objects.filter(pk=stale.pk).exists()


@pytest.mark.django_db
def test_it_keeps_everything_when_retention_is_disabled(old_and_new: dict[str, GenerationTask], settings: Any) -> None:
    settings.IMAGEGEN_TASK_RETENTION_DAYS = settings.IMAGEGEN_WORKER_RETENTION_DAYS = 0
    settings.IMAGEGEN_EVENT_RETENTION_SECONDS = 0

    assert retention.run_retention().skipped == "disabled"
    assert GenerationTask.objects.count() == len(old_and_new)


postgres_only = pytest.mark.skipif(connections["default"].vendor != "postgresql",
                                   reason="a PostgreSQL advisory lock (SQLite: one process, a thread lock)")


@pytest.mark.django_db
@postgres_only
def test_it_lets_only_one_process_purge_at_a_time(
    old_and_new: dict[str, GenerationTask], retention_settings: Any
) -> None:
    other = connections.create_connection("default")  # another worker process's session
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [retention.LOCK_KEY])

        assert retention.run_retention().skipped == "locked"
        assert GenerationTask.objects.count() == len(old_and_new)
        assert QueueControl.objects.filter(retention_ran_at__isnull=False).count() == 0

        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [retention.LOCK_KEY])
        assert retention.run_retention().tasks == 3
    finally:
        other.close()


@pytest.mark.django_db
def test_it_lets_only_one_thread_purge_at_a_time(
    old_and_new: dict[str, GenerationTask], retention_settings: Any
) -> None:
    # The embedded default's case (one process, a thread lock on SQLite), and on PostgreSQL
    # the advisory lock held by another thread's session.
    holding, release = threading.Event(), threading.Event()
    acquired: list[bool] = []

    def hold() -> None:  # another runner thread is purging
        try:
            with retention.retention_lock() as got:
                acquired.append(got)
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    other = threading.Thread(target=hold)
    other.start()
    try:
        assert holding.wait(10) and acquired == [True]
        assert retention.run_retention().skipped == "locked"
        assert GenerationTask.objects.count() == len(old_and_new)
    finally:
        release.set()
        other.join()
    assert retention.run_retention().tasks == 3


@pytest.mark.django_db
@postgres_only
def test_it_releases_the_lock_after_a_run(retention_settings: Any) -> None:
    retention.run_retention(force=True)
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [retention.LOCK_KEY])
            assert cursor.fetchone()[0] is True
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_it_purges_from_a_running_worker(
    old_and_new: dict[str, GenerationTask], retention_settings: Any, settings: Any
) -> None:
    settings.IMAGEGEN_RETENTION_CHECK_SECONDS = 0.05
    settings.IMAGEGEN_BACKEND = "tests.generation.backends.QuickBackend"
    expired = old_and_new["old_completed"]
    worker = Worker(concurrency=1, worker_id="retention-test")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: not GenerationTask.objects.filter(pk=expired.pk).exists(), timeout=20)
        wait_until(lambda: not any(default_storage.exists(n) for n in names(expired)), timeout=20)
        # The runner may claim the pending task only after the purge (one retention pass
        # is quick): stopping before it finished would release it back to pending.
        pending = old_and_new["old_pending"].pk
        wait_until(lambda: GenerationTask.objects.get(pk=pending).status == S.COMPLETED, timeout=20)
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert GenerationTask.objects.filter(pk=old_and_new["old_processing"].pk).exists()
    assert GenerationTask.objects.get(pk=old_and_new["old_pending"].pk).status == S.COMPLETED  # it ran, not purged
