"""The batch lane with a real worker: a single photo sent after a 100-photo batch does not wait behind it."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from generation.models import Batch, GenerationTask
from notifications.models import Event
from tests.conftest import product_photo, wait_until

MANAGE = [sys.executable, str(Path(__file__).resolve().parents[2] / "manage.py")]

pytestmark = pytest.mark.django_db(transaction=True)


def processing_seq(task_id: int) -> int | None:
    event = Event.objects.filter(task_id=task_id, type="task_update", data__status="processing").order_by("seq").first()
    return event.seq if event else None


def test_a_single_photo_sent_after_a_100_photo_batch_starts_before_the_batchs_remaining_tasks(
        auth_client: Any, subprocess_env: dict[str, str]) -> None:
    data = product_photo(96, 96)
    images = [SimpleUploadedFile(f"p{i}.jpg", data) for i in range(100)]
    batch = auth_client.post("/api/batches/", {"image": images}, format="multipart").json()
    worker = subprocess.Popen(
        [*MANAGE, "runworker", "--worker-id", "lane"],
        env={**subprocess_env, "IMAGEGEN_BACKEND": "tests.generation.backends.SlowBackend",
             "TEST_BACKEND_SECONDS": "0.3", "IMAGEGEN_PREFETCH_WINDOW": "0", "IMAGEGEN_POLL_INTERVAL": "0.1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # The worker is well into the batch when the single photo arrives.
        wait_until(lambda: Batch.objects.get(pk=batch["id"]).completed >= 2, timeout=60)
        single = auth_client.post("/api/tasks/", {"image": SimpleUploadedFile("one.jpg", data)}, format="multipart")
        assert single.status_code == 201
        single_id = single.json()["id"]
        created_seq = Event.objects.get(task_id=single_id, type="task_created").seq

        wait_until(lambda: processing_seq(single_id), timeout=30)
        started_seq = processing_seq(single_id)
        batch_starts = [processing_seq(task_id) for task_id in batch["tasks"]]
        # Between its arrival and its start, no batch task was claimed but (at most) the one whose
        # claim was already choosing as the photo's row committed (one runner: it could not see it).
        assert len([s for s in batch_starts if s is not None and created_seq < s < started_seq]) <= 1
        # ... while most of the batch was still waiting.
        later = [s for s in batch_starts if s is None or s > started_seq]
        assert len(later) >= 80
        assert auth_client.post(f"/api/batches/{batch['id']}/cancel/").status_code == 200
        wait_until(lambda: GenerationTask.objects.get(pk=single_id).status == "completed", timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
