"""The Batch model's bookkeeping cost: what a batch adds to each task change."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation.models import Batch, BatchPart, GenerationTask
from generation.engine.spec import parse_job
from notifications.models import Event
from tests.conftest import product_photo

pytestmark = pytest.mark.django_db


def make_batch(user, count: int) -> Batch:
    options = parse_job({}).to_options()
    parts = [BatchPart(SimpleUploadedFile(f"p{i}.jpg", product_photo()), "image/jpeg", options, f"p{i}.jpg")
             for i in range(count)]
    batch, created = Batch.submit(user=user, parts=parts, options=options)
    assert created
    return batch


def test_a_batch_task_change_costs_three_queries_and_the_batch_event_more_than_a_single_one(user, make_task):
    single = make_task()
    batch = make_batch(user, 2)
    first, second = batch.tasks.order_by("id")

    with CaptureQueriesContext(connection) as alone:
        single.cancel()
    with CaptureQueriesContext(connection) as counted:
        first.cancel()  # the batch stays unfinished: one batch_update
    with CaptureQueriesContext(connection) as finishing:
        second.cancel()  # the last one: batch_update and batch_complete

    # Lock the batch, count its tasks (one GROUP BY), save it, append its event: one
    # statement on PostgreSQL (a CTE bumps the counter and inserts), two elsewhere.
    append = 1 if connection.vendor == "postgresql" else 2
    assert len(counted) == len(alone) + 3 + append
    assert len(finishing) == len(alone) + 3 + 2 * append
    batch.refresh_from_db()
    assert (batch.status, batch.canceled, batch.finished_at is not None) == ("completed", 2, True)


def test_a_task_change_that_moves_no_count_saves_no_batch_and_records_no_batch_event(user):
    batch = make_batch(user, 1)
    task = batch.tasks.get()
    updated = batch.updated_at
    assert Event.objects.filter(type="batch_update").count() == 1  # its creation

    Batch.locked(batch.pk).recount()  # nothing changed since the batch was made

    batch.refresh_from_db()
    assert batch.updated_at == updated
    assert Event.objects.filter(type="batch_update").count() == 1
    assert GenerationTask.objects.get(pk=task.pk).status == "pending"
