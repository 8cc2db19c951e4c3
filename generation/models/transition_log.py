"""One structured log line per committed task transition (what operators read in the log, docs/operations.md)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

if TYPE_CHECKING:
    from .task import GenerationTask

logger = logging.getLogger("generation.models")


def log_transition(task: GenerationTask, changed: tuple[str, ...]) -> None:
    """One structured line per change, written once it commits (a rolled-back change
    did not happen). ``extra`` carries the fields for ``LOG_FORMAT=json``; progress
    steps are many, so they log at DEBUG."""
    level = logging.INFO if "status" in changed else logging.DEBUG
    if not logger.isEnabledFor(level):
        return
    now = timezone.now()
    # The worker's name only when it is already loaded: a query per log line is not worth it.
    cached = type(task).worker.is_cached(task) and task.worker is not None
    worker = task.worker.name if cached else (str(task.worker_id) if task.worker_id else None)
    fields = {
        "event": "task_transition",
        "task_id": task.pk,
        "user_id": task.user_id,
        "status": task.status,
        "progress": task.progress,
        "attempt": task.attempts,
        "worker": worker,
        "error_code": task.error_code,
        "elapsed_ms": int((now - task.created_at).total_seconds() * 1000),
        "run_ms": int((now - task.started_at).total_seconds() * 1000) if task.started_at else None,
    }
    transaction.on_commit(
        lambda: logger.log(
            level, "Task %d %s %d%% (user %d, worker %s, attempt %d, %dms since submit)",
            fields["task_id"], fields["status"], fields["progress"], fields["user_id"], fields["worker"],
            fields["attempt"], fields["elapsed_ms"], extra=fields,
        )
    )
