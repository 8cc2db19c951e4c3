"""``runworker --burst``: drains the queue, waits for retries that are due later, reports what it did."""
from __future__ import annotations

import subprocess

import pytest

from generation.engine.spec import parse_job
from generation.models import GenerationTask
from notifications.models import Event
from tests.generation.test_worker import BACKENDS, MANAGE


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_a_burst_finishes_what_it_started_retries_included_and_reports_the_counts(make_task, subprocess_env,
                                                                                 concurrency):
    plain = [make_task(), make_task()]
    refused = make_task(options=parse_job({"hint_box": "10,10,50,50"}).to_options())
    # The first plain attempt fails transiently and is retried after a real backoff (0.5-1 s).
    env = {**subprocess_env, "IMAGEGEN_BACKEND": f"{BACKENDS}.BurstBackend", "IMAGEGEN_RETRY_BASE_SECONDS": "1"}
    done = subprocess.run([*MANAGE, "runworker", "--burst", "--concurrency", concurrency], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Burst finished: 2 completed, 1 failed (1 attempts retried, 0 discarded)" in done.stdout
    statuses = dict(GenerationTask.objects.values_list("id", "status"))
    assert statuses == {plain[0].pk: "completed", plain[1].pk: "completed", refused.pk: "failed"}
    assert sorted(GenerationTask.objects.values_list("attempts", flat=True)) == [1, 1, 2]
    retried = GenerationTask.objects.get(attempts=2)
    assert [e.data["status"] for e in Event.objects.filter(task_id=retried.pk).order_by("seq")] == [
        "pending", "processing", "pending", "processing", "completed",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_burst_on_an_empty_queue_exits_at_once_and_says_so(subprocess_env):
    done = subprocess.run([*MANAGE, "runworker", "--burst"], env={**subprocess_env,
                          "IMAGEGEN_BACKEND": f"{BACKENDS}.QuickBackend"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Burst finished: 0 completed, 0 failed" in done.stdout
