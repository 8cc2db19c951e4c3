"""Mixed heartbeat timeouts in one fleet: liveness is judged by the timeout each worker declared."""
from __future__ import annotations

import signal
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from generation.models import GenerationTask, WorkerProcess
from generation.worker import Worker
from notifications.models import Event
from tests.conftest import wait_until
from tests.generation.backends import HushedGatedBackend
from tests.generation.test_worker import BACKENDS, start_worker


def statuses_of(task: GenerationTask) -> list[str]:
    return list(Event.objects.filter(task_id=task.pk).order_by("seq").values_list("data__status", flat=True))


def quick_beat_past_5s_of_silence() -> bool:
    rows = {w.name: w for w in WorkerProcess.objects.filter(name__in=["steady", "quick"])}
    return len(rows) == 2 and rows["quick"].last_heartbeat > rows["steady"].last_heartbeat + timedelta(seconds=5.5)


@pytest.mark.django_db(transaction=True)
def test_a_quick_timeout_worker_never_takes_back_a_live_slow_timeout_workers_tasks(make_task, subprocess_env):
    # The set-up: a worker with the default 30 s (beating every 10 s) runs two tasks longer
    # than 5 s; a worker with IMAGEGEN_HEARTBEAT_TIMEOUT=5 starts beside it.
    tasks = [make_task(), make_task()]
    backend = {"IMAGEGEN_BACKEND": f"{BACKENDS}.SilentBackend", "TEST_BACKEND_SECONDS": "8"}
    steady = start_worker(subprocess_env, "--concurrency", "2", "--worker-id", "steady",
                          IMAGEGEN_HEARTBEAT_TIMEOUT="30", **backend)
    quick = None
    try:
        wait_until(lambda: GenerationTask.objects.filter(status="processing").count() == 2, timeout=90)
        quick = start_worker(subprocess_env, "--worker-id", "quick", IMAGEGEN_HEARTBEAT_TIMEOUT="5", **backend)
        # The quick worker beats (and looks for orphans) while the steady one has been silent for
        # more than 5 s: the moment that took the tasks back before.
        wait_until(lambda: quick_beat_past_5s_of_silence(), timeout=90)
        wait_until(lambda: GenerationTask.objects.filter(status__in=["completed", "failed"]).count() == 2, timeout=60)
    finally:
        for proc in (steady, quick):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
    for task in tasks:
        task.refresh_from_db()
        assert (task.status, task.attempts, task.worker.name) == ("completed", 1, "steady")
        assert statuses_of(task) == ["pending", "processing", "completed"]  # never taken back
    assert WorkerProcess.objects.get(name="quick").heartbeat_timeout == timedelta(seconds=5)
    assert WorkerProcess.objects.get(name="steady").heartbeat_timeout == timedelta(seconds=30)


@pytest.mark.django_db(transaction=True)
def test_a_silent_worker_is_still_taken_back_after_its_own_timeout(make_task):
    task = make_task()
    silent = WorkerProcess.objects.create(name="gone", heartbeat_timeout=timedelta(seconds=2),
                                          last_heartbeat=timezone.now() - timedelta(seconds=3))
    GenerationTask.claim_next(silent)
    long_timeout = WorkerProcess.objects.create(name="long", heartbeat_timeout=timedelta(seconds=60),
                                                last_heartbeat=timezone.now() - timedelta(seconds=3))
    other = make_task()
    GenerationTask.claim_next(long_timeout)
    # the rescuer's own setting (here 600 s) does not matter either way
    assert GenerationTask.rescue_orphans() == [task.pk]
    task.refresh_from_db()
    other.refresh_from_db()
    assert (task.status, task.error_code, other.status) == ("pending", "worker_lost", "processing")


@pytest.mark.django_db(transaction=True)
def test_a_worker_never_runs_a_second_attempt_of_a_task_it_is_still_running(make_task, settings):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.HushedGatedBackend"
    HushedGatedBackend.started.clear()
    HushedGatedBackend.release.clear()
    task = make_task()
    worker = Worker(worker_id="twice")
    first = threading.Thread(target=lambda: (worker.run_once(), connection.close()))
    first.start()
    try:
        assert HushedGatedBackend.started.wait(20)
        # An operator takes the task back while this worker still runs attempt 1 (a stuck-looking task):
        GenerationTask.objects.get(pk=task.pk).requeue()
        assert GenerationTask.objects.get(pk=task.pk).status == "pending"
        # The worker's other thread must not start attempt 2 beside attempt 1.
        assert worker.run_once() is False
        assert GenerationTask.objects.get(pk=task.pk).status == "pending"
    finally:
        HushedGatedBackend.release.set()
        first.join(20)
    # Attempt 1 noticed it lost its claim and stopped; now the task may run again, here too.
    assert worker.run_once() is True
    task.refresh_from_db()
    assert (task.status, task.attempts) == ("completed", 1)
