"""One structured log line per task transition, written only once the change is committed."""
from __future__ import annotations

import logging
from typing import Any, Callable

import pytest
from django.db import transaction

from generation.models import GenerationTask

from .builders import claim, worker_row

FIELDS = ("task_id", "user_id", "status", "progress", "attempt", "worker", "error_code", "elapsed_ms", "run_ms")


def transitions(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "task_transition"]


@pytest.mark.django_db
def test_it_logs_one_structured_line_per_state_change_once_committed(
    make_task: Callable[..., GenerationTask], caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    caplog.set_level(logging.INFO, logger="generation.models")
    worker = worker_row("logger-1")
    with django_capture_on_commit_callbacks(execute=True):
        task = make_task()
        token = claim(task, worker)
        task.set_progress(token, 40)  # progress steps: DEBUG only
        task.fail(token, code="upstream_error", message="boom", transient=False)

    records = transitions(caplog)
    assert [(r.status, r.levelname) for r in records] == [("pending", "INFO"), ("processing", "INFO"), ("failed", "INFO")]
    for record in records:
        assert all(hasattr(record, field) for field in FIELDS)
        assert (record.task_id, record.user_id) == (task.pk, task.user_id)
    claimed, failed = records[1], records[2]
    assert claimed.worker == "logger-1" and claimed.attempt == 1 and claimed.run_ms is not None
    assert failed.error_code == "upstream_error" and failed.elapsed_ms >= 0
    assert f"Task {task.pk} failed" in failed.getMessage()


class RolledBack(Exception):
    pass


@pytest.mark.django_db
def test_it_logs_nothing_for_a_change_that_rolled_back(
    make_task: Callable[..., GenerationTask], caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    task = make_task()
    caplog.set_level(logging.INFO, logger="generation.models")
    # Commit callbacks run here (as at a real commit): only the change's own rollback may stop its line.
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RolledBack), transaction.atomic():
            task.cancel()
            raise RolledBack
    task.refresh_from_db()
    assert task.status == "pending" and transitions(caplog) == []

    with django_capture_on_commit_callbacks(execute=True):
        task.cancel()  # the same change, kept: one line
    assert [r.status for r in transitions(caplog)] == ["canceled"]
