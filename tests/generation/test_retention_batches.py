"""Retention of batches: a batch goes with its last task, and waits for its whole batch to be old."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from generation import retention
from generation.engine.spec import parse_job
from generation.models import Batch, BatchPart, GenerationTask
from tests.conftest import product_photo

from .builders import advance, ago, place, worker_row

pytestmark = pytest.mark.django_db

S = GenerationTask.Status
MONTH = timedelta(days=30)


def make_batch(user: Any, count: int) -> Batch:
    options = parse_job({}).to_options()
    parts = [BatchPart(SimpleUploadedFile(f"p{i}.jpg", product_photo()), "image/jpeg", options, f"p{i}.jpg")
             for i in range(count)]
    batch, _ = Batch.submit(user=user, parts=parts, options=options)
    return batch


def finished_long_ago(batch: Batch, *outcomes: str, days: float = 31) -> Batch:
    """Finish the batch's tasks with these outcomes, then date them and the batch ``days`` back."""
    worker = worker_row()
    for task, outcome in zip(batch.tasks.order_by("id"), outcomes, strict=True):
        place(advance(task, outcome, worker), finished_at=ago(days=days))
    Batch.objects.filter(pk=batch.pk).update(finished_at=ago(days=days))
    batch.refresh_from_db()
    assert batch.is_finished
    return batch


def test_a_batch_finished_long_ago_goes_with_all_its_tasks_and_files(
    user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    old = finished_long_ago(make_batch(user, 3), S.COMPLETED, S.FAILED, S.CANCELED)
    files = [t.input_image.name for t in old.tasks.all()]
    recent = make_batch(user, 1)
    recent.cancel()

    with django_capture_on_commit_callbacks(execute=True):
        result = retention.purge_tasks(older_than=MONTH)

    assert (result.tasks, result.batches) == (3, 1)
    assert list(Batch.objects.values_list("id", flat=True)) == [recent.pk]
    assert GenerationTask.objects.filter(batch=recent).count() == 1
    assert not any(default_storage.exists(name) for name in files)


def test_old_tasks_of_a_batch_that_finished_recently_wait_for_their_batch(user: Any) -> None:
    batch = finished_long_ago(make_batch(user, 2), S.COMPLETED, S.FAILED)
    # One task was retried and finished yesterday: the batch reopened and finished again then.
    Batch.objects.filter(pk=batch.pk).update(finished_at=ago(days=1))

    result = retention.purge_tasks(older_than=MONTH)

    assert (result.tasks, result.batches) == (0, 0)
    assert Batch.objects.get(pk=batch.pk).tasks.count() == 2


def test_a_dry_run_counts_the_batches_a_purge_would_remove(user: Any) -> None:
    finished_long_ago(make_batch(user, 2), S.COMPLETED, S.CANCELED)
    partly = finished_long_ago(make_batch(user, 2), S.COMPLETED, S.FAILED)

    everything = retention.purge_tasks(older_than=MONTH, dry_run=True)
    failed_only = retention.purge_tasks(older_than=MONTH, statuses=["failed"], dry_run=True)

    assert (everything.tasks, everything.batches) == (4, 2)
    assert (failed_only.tasks, failed_only.batches) == (1, 0)
    assert Batch.objects.filter(pk=partly.pk).exists() and GenerationTask.objects.count() == 4


def test_a_batch_keeping_some_tasks_keeps_its_row_its_outcome_and_lists_what_it_still_holds(
    user: Any, auth_client: Any
) -> None:
    batch = finished_long_ago(make_batch(user, 2), S.COMPLETED, S.FAILED)
    completed_id = batch.tasks.get(status=S.COMPLETED).pk

    result = retention.purge_tasks(older_than=MONTH, statuses=["failed"])

    assert (result.tasks, result.batches) == (1, 0)
    body = auth_client.get(f"/api/batches/{batch.pk}/").json()
    assert body["tasks"] == [completed_id]
    assert (body["status"], body["total"], body["counts"]["completed"], body["counts"]["failed"]) == \
        ("completed", 2, 1, 1)
    retention.purge_tasks(older_than=MONTH)  # the rest later: the batch goes with its last task
    assert not Batch.objects.filter(pk=batch.pk).exists()


def test_deleting_a_batchs_last_task_by_hand_removes_the_batch_too(user: Any) -> None:
    batch = make_batch(user, 2)
    batch.cancel()
    first, second = batch.task_ids()

    assert retention.delete_tasks([first]) == [first]
    assert Batch.objects.filter(pk=batch.pk).exists()
    assert retention.delete_tasks([second]) == [second]
    assert not Batch.objects.filter(pk=batch.pk).exists()


def test_a_due_batch_whose_tasks_were_removed_before_batches_were_purged_goes_on_the_next_run(user: Any) -> None:
    emptied = finished_long_ago(make_batch(user, 1), S.COMPLETED)
    young = make_batch(user, 1)
    young.cancel()
    # Retention before batch rows were purged deleted the tasks and left the row behind.
    GenerationTask.objects.filter(batch__in=[emptied, young]).delete()

    result = retention.purge_tasks(older_than=MONTH)

    assert result.batches == 1
    assert list(Batch.objects.values_list("id", flat=True)) == [young.pk]  # not due yet: it goes in a month
