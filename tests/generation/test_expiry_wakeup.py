"""The expiry sweepers wake for work with a deadline only: locally after commit, and in
other processes through the NOTIFY's payload (their listener relays it)."""
from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from generation import wakeup
from generation.engine.spec import parse_job
from generation.models import GenerationTask
from tests.conftest import product_photo

pytestmark = pytest.mark.django_db(transaction=True)


def submit(user: Any, **extra: Any) -> GenerationTask:
    task, _ = GenerationTask.submit(user=user, image=SimpleUploadedFile("p.jpg", product_photo()),
                                    content_type="image/jpeg", options=parse_job({}).to_options(), **extra)
    return task


def test_work_without_a_deadline_wakes_workers_but_not_the_expiry_sweepers(user: Any) -> None:
    work, deadlines = wakeup.local.generation, wakeup.deadlines.generation
    submit(user)
    assert wakeup.local.generation > work
    assert wakeup.deadlines.generation == deadlines
    submit(user, expires_in=60)
    assert wakeup.deadlines.generation > deadlines


def test_other_processes_learn_of_a_deadline_from_the_notify_payload(user: Any) -> None:
    conninfo = wakeup.postgres_conninfo()
    if conninfo is None:
        pytest.skip("NOTIFY needs PostgreSQL (DATABASE_URL=postgres://...)")
    with psycopg.connect(**conninfo, autocommit=True) as listener:
        listener.execute(f"LISTEN {wakeup.CHANNEL}")
        submit(user)
        task = submit(user, expires_in=60)
        payloads = [note.payload for note in listener.notifies(timeout=5, stop_after=2)]
        assert payloads == ["", wakeup.DEADLINE]
        assert task.expires_at is not None
