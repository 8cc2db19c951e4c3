"""Building known queues for the operations tests.

States are reached through the model's own transitions (so each step writes its
event, as in production); only timestamps are then moved with ``update()`` to
place a task in time, which no transition would do.
"""
from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from PIL import Image

from generation.models import GenerationTask, WorkerProcess


def worker_row(name: str = "w1", *, heartbeat_age: float = 1.0, stopped: bool = False, **fields: Any) -> WorkerProcess:
    now = timezone.now()
    return WorkerProcess.objects.create(
        name=name,
        last_heartbeat=now - timedelta(seconds=heartbeat_age),
        stopped_at=now if stopped else None,
        **fields,
    )


def claim(task: GenerationTask, worker: WorkerProcess) -> Any:
    with transaction.atomic():
        locked = GenerationTask.objects.select_for_update().get(pk=task.pk)
        token = locked.claim(worker)
    task.refresh_from_db()
    return token


def result_file() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 255, 255)).save(buf, "JPEG")
    return default_storage.save("results/test/result.jpg", ContentFile(buf.getvalue()))


def advance(task: GenerationTask, status: str, worker: WorkerProcess, *, error_code: str = "upstream_error") -> GenerationTask:
    """Take a pending task to ``status`` through the model's transitions."""
    if status == GenerationTask.Status.CANCELED:
        task.cancel()
    elif status != GenerationTask.Status.PENDING:
        token = claim(task, worker)
        if status == GenerationTask.Status.COMPLETED:
            task.complete(token, result_name=result_file(), content_type="image/jpeg", compliance=None)
        elif status == GenerationTask.Status.FAILED:
            task.fail(token, code=error_code, message="It went wrong.", transient=False)
    task.refresh_from_db()
    assert task.status == status
    return task


def place(task: GenerationTask, **times: datetime | None) -> GenerationTask:
    """Move a task's timestamps (created_at, run_after, started_at, finished_at, updated_at)."""
    GenerationTask.objects.filter(pk=task.pk).update(**times)
    task.refresh_from_db()
    return task


def ago(seconds: float = 0, *, days: float = 0, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(seconds=seconds, days=days)
