"""The worker: claims once, survives kill -9 and SIGTERM, retries, honours cancel."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from generation import wakeup
from generation.models import GenerationTask
from generation.worker import Worker
from notifications.models import Event
from tests.conftest import require_postgresql, wait_until
from tests.generation import backends
from tests.generation.backends import FlakyBackend, GatedBackend

BACKENDS = "tests.generation.backends"
MANAGE = [sys.executable, str(Path(__file__).resolve().parents[2] / "manage.py")]


def claims_per_task() -> Counter[int]:
    # A claim is a distinct attempt seen processing: a progress step is a "processing" event too
    # (written when the step comes later than the progress interval, as it does under load).
    attempts = {(e.task_id, e.data["attempts"]) for e in Event.objects.filter(type="task_update")
                if e.data["status"] == "processing"}
    return Counter(task_id for task_id, _ in attempts)


def run_once_in_thread(worker: Worker) -> threading.Thread:
    def target() -> None:
        try:
            worker.run_once()
        finally:
            connection.close()  # a thread's connection would otherwise outlive the test

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def start_worker(env: dict[str, str], *args: str, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*MANAGE, "runworker", *args], env={**env, **extra_env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.django_db(transaction=True)
def test_runworker_burst_is_our_command(make_task, settings):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    task = make_task()
    call_command("runworker", "--burst", "--worker-id", "cmd-test")
    task.refresh_from_db()
    assert task.status == "completed" and task.worker.name == "cmd-test"


@pytest.mark.django_db
def test_runworker_rejects_bad_arguments():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="concurrency"):
        call_command("runworker", "--concurrency", "0")


@pytest.mark.django_db
def test_run_once_claims_and_completes_in_a_pinned_number_of_queries(make_task, settings, django_assert_num_queries):
    require_postgresql("the set-based claim and completion (their pinned query count)")
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    task = make_task()
    worker = Worker(worker_id="q")
    worker.register()
    # claim: one UPDATE that picks, locks and claims + the event (seqs and insert in one
    # statement); progress(50) check; complete: one fenced UPDATE + the outputs' insert + the
    # event; plus 4 savepoint statements that are BEGIN/COMMIT outside the test's wrapping transaction.
    with django_assert_num_queries(10):
        assert worker.run_once() is True
    task.refresh_from_db()
    assert task.status == "completed"
    assert worker.run_once() is False


@pytest.mark.django_db(transaction=True)
def test_each_task_is_claimed_once_by_concurrent_threads(make_task, settings):
    require_postgresql("concurrent claimers (SQLite's in-memory test database locks whole tables at once; the embedded default's file database runs in tests/e2e/test_embedded.py)")
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    tasks = [make_task() for _ in range(40)]
    Worker(concurrency=4, burst=True, worker_id="threads").run()
    assert set(GenerationTask.objects.values_list("status", flat=True)) == {"completed"}
    assert set(GenerationTask.objects.values_list("attempts", flat=True)) == {1}
    assert claims_per_task() == Counter({t.pk: 1 for t in tasks})


@pytest.mark.django_db(transaction=True)
def test_each_task_is_claimed_once_by_separate_processes(make_task, subprocess_env):
    require_postgresql("a database shared by separate worker processes")
    tasks = [make_task() for _ in range(60)]
    procs = [
        start_worker(subprocess_env, "--burst", "--concurrency", "2", IMAGEGEN_BACKEND=f"{BACKENDS}.QuickBackend")
        for _ in range(3)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    assert set(GenerationTask.objects.values_list("status", flat=True)) == {"completed"}
    assert claims_per_task() == Counter({t.pk: 1 for t in tasks})
    from generation.models import WorkerProcess

    assert sum(WorkerProcess.objects.values_list("tasks_done", flat=True)) == 60


@pytest.mark.django_db(transaction=True)
def test_a_row_locked_by_another_connection_is_skipped(make_task, settings):
    require_postgresql("SKIP LOCKED")
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    held, free = make_task(), make_task()
    params = wakeup.postgres_conninfo()
    assert params is not None, "this test needs PostgreSQL"
    with psycopg.connect(**params) as other:
        other.execute("SELECT id FROM generation_generationtask WHERE id = %s FOR UPDATE", [held.pk])
        worker = Worker(worker_id="skip")
        assert worker.run_once() is True
        assert worker.run_once() is False  # the only other pending row is locked
        other.rollback()
    held.refresh_from_db()
    free.refresh_from_db()
    assert (held.status, free.status) == ("pending", "completed")


@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_wakes_on_notify_not_on_its_poll(make_task, settings):
    require_postgresql("LISTEN/NOTIFY")
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    worker = Worker(worker_id="idle", poll_interval=60.0)
    listener_conninfo = wakeup.postgres_conninfo()
    assert listener_conninfo is not None
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: any(isinstance(s, wakeup.Listener) and s.ready.is_set() for s in worker._services))
        task = make_task()
        # far sooner than the 60 s poll: only the NOTIFY can have woken it
        wait_until(lambda: GenerationTask.objects.get(pk=task.pk).status == "completed", timeout=10)
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_kill_9_mid_task_is_taken_back_and_completes_once(make_task, subprocess_env):
    require_postgresql("a database shared by separate worker processes")
    task = make_task()
    doomed = start_worker(subprocess_env, IMAGEGEN_BACKEND=f"{BACKENDS}.SlowBackend", IMAGEGEN_HEARTBEAT_TIMEOUT="1")
    try:
        wait_until(lambda: GenerationTask.objects.get(pk=task.pk).status == "processing", timeout=30)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    rescuer = start_worker(subprocess_env, IMAGEGEN_BACKEND=f"{BACKENDS}.QuickBackend", IMAGEGEN_HEARTBEAT_TIMEOUT="1")
    try:
        wait_until(lambda: GenerationTask.objects.get(pk=task.pk).status == "completed", timeout=30)
    finally:
        rescuer.send_signal(signal.SIGTERM)
        rescuer.communicate(timeout=30)
    task.refresh_from_db()
    assert task.attempts == 2
    types = list(Event.objects.filter(task_id=task.pk).order_by("seq").values_list("type", "data__status"))
    assert types.count(("task_complete", "completed")) == 1
    assert ("task_update", "pending") in types  # taken back, announced to the owner
    assert types[-1] == ("task_complete", "completed")


@pytest.mark.django_db(transaction=True)
def test_sigterm_releases_unfinished_work_and_exits_cleanly(make_task, subprocess_env):
    require_postgresql("a database shared by separate worker processes")
    task = make_task()
    proc = start_worker(
        subprocess_env, IMAGEGEN_BACKEND=f"{BACKENDS}.SlowBackend", IMAGEGEN_SHUTDOWN_GRACE="0.5"
    )
    wait_until(lambda: GenerationTask.objects.get(pk=task.pk).status == "processing", timeout=30)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    task.refresh_from_db()
    assert (task.status, task.attempts, task.worker_id) == ("pending", 0, None)
    assert "Released unfinished task" in out


@pytest.mark.django_db(transaction=True)
def test_sigterm_lets_a_short_task_finish_within_the_grace_period(make_task, subprocess_env):
    require_postgresql("a database shared by separate worker processes")
    task = make_task()
    proc = start_worker(
        subprocess_env, IMAGEGEN_BACKEND=f"{BACKENDS}.SlowBackend", TEST_BACKEND_SECONDS="2",
        IMAGEGEN_SHUTDOWN_GRACE="30",
    )
    # Started work (a progress step), not just claimed: a claimed task not yet started when the
    # signal lands goes back to the queue, for another worker (Worker.run_once).
    wait_until(lambda: GenerationTask.objects.get(pk=task.pk).progress > 0, timeout=30)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    task.refresh_from_db()
    assert task.status == "completed"


@pytest.mark.django_db
@pytest.mark.parametrize("failures, outcome, statuses", [
    (99, ("failed", 3, "upstream_timeout"), ["pending", "processing"] * 3 + ["failed"]),
    (1, ("completed", 2, None), ["pending", "processing"] * 2 + ["completed"]),
], ids=["then-fail", "then-succeed"])
def test_transient_errors_are_retried_until_success_or_the_last_attempt(make_task, settings, failures, outcome,
                                                                         statuses):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.FlakyBackend"
    settings.IMAGEGEN_MAX_ATTEMPTS = 3
    FlakyBackend.calls, FlakyBackend.failures = 0, failures
    task = make_task()
    worker = Worker(worker_id="flaky")
    while worker.run_once():
        pass
    task.refresh_from_db()
    assert (task.status, task.attempts, task.error_code) == outcome
    assert [e.data["status"] for e in Event.objects.filter(task_id=task.pk).order_by("seq")] == statuses


@pytest.mark.django_db
def test_a_backend_crash_is_retried_then_fails_as_internal_error(make_task, settings):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.CrashingBackend"
    settings.IMAGEGEN_MAX_ATTEMPTS = 2
    task = make_task()
    worker = Worker(worker_id="crash")
    while worker.run_once():
        pass
    task.refresh_from_db()
    assert (task.status, task.attempts, task.error_code) == ("failed", 2, "internal_error")
    assert "ZeroDivisionError" in task.error_message


@pytest.mark.django_db(transaction=True)
def test_cancel_while_processing_stops_the_worker_and_discards_the_result(make_task, settings, auth_client):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.GatedBackend"
    GatedBackend.started.clear()
    GatedBackend.release.clear()
    task = make_task()
    worker = Worker(worker_id="gated")
    thread = run_once_in_thread(worker)
    try:
        assert GatedBackend.started.wait(20)
        assert auth_client.post(f"/api/tasks/{task.pk}/cancel/").status_code == 200
        thread.join(20)
        assert not thread.is_alive(), "the worker did not notice the cancel"
    finally:
        GatedBackend.release.set()
        thread.join(20)
    task.refresh_from_db()
    assert task.status == "canceled" and not task.result_image
    results = Path(settings.MEDIA_ROOT) / "results"
    assert not results.exists() or not any(p.is_file() for p in results.rglob("*"))
    assert Event.objects.filter(task_id=task.pk, type="task_complete").count() == 0


@pytest.mark.django_db(transaction=True)
def test_progress_writes_are_coalesced_to_the_interval(make_task, settings):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.GatedBackend"
    settings.IMAGEGEN_PROGRESS_INTERVAL = 0.25
    GatedBackend.started.clear()
    GatedBackend.release.clear()
    task = make_task()
    worker = Worker(worker_id="coalesce")
    thread = run_once_in_thread(worker)
    assert GatedBackend.started.wait(20)
    # the backend reports every 20 ms; let it report for a while
    wait_until(lambda: GenerationTask.objects.get(pk=task.pk).progress >= 15, timeout=20)
    GatedBackend.release.set()
    thread.join(20)
    progress_events = list(
        Event.objects.filter(task_id=task.pk, type="task_update", data__status="processing").order_by("seq")
    )
    stamps = [e.created_at for e in progress_events[1:]]  # the first is the claim
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
    assert stamps and all(gap >= 0.2 for gap in gaps), gaps
    values = [e.data["progress"] for e in progress_events[1:]]
    assert values == sorted(values) and len(set(values)) == len(values)


@pytest.mark.django_db
def test_the_local_backend_turns_a_photo_into_a_white_background_result(make_task, settings, auth_client):
    import io

    import numpy as np
    from PIL import Image

    settings.IMAGEGEN_BACKEND = "local"
    task = make_task()
    assert Worker(worker_id="local").run_once() is True
    task.refresh_from_db()
    assert task.status == "completed", (task.error_code, task.error_message)
    response = auth_client.get(f"/api/tasks/{task.pk}/result/")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    result = np.asarray(Image.open(io.BytesIO(b"".join(response.streaming_content))).convert("RGB"))
    height, width, _ = result.shape
    assert height == width == 2000  # the amazon preset's square canvas
    border = np.concatenate([result[:10].reshape(-1, 3), result[-10:].reshape(-1, 3),
                             result[:, :10].reshape(-1, 3), result[:, -10:].reshape(-1, 3)])
    assert (border == 255).all()
    # the product is kept: its dark red body is still there, in the middle
    centre = result[height // 2 - 50 : height // 2 + 50, width // 2 - 50 : width // 2 + 50]
    assert abs(int(centre[..., 0].mean()) - 150) < 25 and centre[..., 1].mean() < 70
    assert task.compliance["passed"] is True, task.compliance
    body = auth_client.get(f"/api/tasks/{task.pk}/").json()
    assert body["compliance"]["preset"] == "amazon" and body["progress"] == 100


@pytest.mark.django_db
def test_fast_tasks_are_claimed_in_batches_and_each_runs_once(make_task, settings):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    settings.IMAGEGEN_PREFETCH_WINDOW = 0.25
    tasks = [make_task() for _ in range(30)]
    worker = Worker(worker_id="batch")
    assert worker.batch_size() == 1  # nothing measured yet: one at a time
    rounds = 0
    while worker.run_once():
        rounds += 1
    assert worker.batch_size() > 1
    assert rounds < len(tasks)
    assert set(GenerationTask.objects.values_list("status", "attempts")) == {("completed", 1)}
    assert claims_per_task() == Counter({t.pk: 1 for t in tasks})


def fast_worker(worker_id: str, make_task: Any, settings: Any) -> Worker:
    """A worker that has measured itself on a millisecond task, so it claims in batches."""
    backend = settings.IMAGEGEN_BACKEND
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    settings.IMAGEGEN_PREFETCH_WINDOW = 0.25
    make_task()
    worker = Worker(worker_id=worker_id)
    assert worker.run_once() is True and worker.batch_size() > 1
    settings.IMAGEGEN_BACKEND = backend
    return worker


def stored_results(settings: Any) -> set[str]:
    return {p.name for p in (Path(settings.MEDIA_ROOT) / "results").rglob("*") if p.is_file()}


@pytest.mark.django_db
def test_a_real_image_task_is_never_batched(make_task, settings, monkeypatch):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.SlowBackend"
    settings.IMAGEGEN_PREFETCH_WINDOW = 0.25
    monkeypatch.setenv("TEST_BACKEND_SECONDS", "0.3")  # already longer than the window; real images take ~1 s
    make_task()
    worker = Worker(worker_id="slow")
    assert worker.run_once() is True
    waiting = [make_task() for _ in range(2)]
    assert worker.run_once() is True  # after measuring a slow task: one claimed, the other still waits
    assert sorted(GenerationTask.objects.filter(pk__in=[t.pk for t in waiting]).values_list("status", flat=True)) == [
        "completed", "pending",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("backend, canceled", [
    ("CancelLastBackend", "second"),  # canceled while it waits in the batch for the first
    ("CancelFirstOnSecondCallBackend", "first"),  # canceled once produced, before the batch is recorded
], ids=["while-waiting", "before-recording"])
def test_a_task_canceled_during_its_batch_is_discarded_and_the_rest_recorded_together(
    make_task, settings, backend, canceled
):
    getattr(backends, backend).calls = 0
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.{backend}"
    worker = fast_worker(f"batch-{canceled}", make_task, settings)
    earlier = stored_results(settings)
    tasks = {"first": make_task(), "second": make_task()}
    assert worker.run_once() is True
    gone, kept = tasks[canceled], tasks["second" if canceled == "first" else "first"]
    gone.refresh_from_db()
    kept.refresh_from_db()
    assert (gone.status, kept.status) == ("canceled", "completed")
    assert not gone.result_image
    assert stored_results(settings) - earlier == {Path(kept.result_image.name).name}  # the canceled one's is gone
    assert Event.objects.filter(task_id=gone.pk, type="task_complete").count() == 0


@pytest.mark.django_db
def test_a_failed_result_write_retries_the_task_instead_of_leaving_it_processing(make_task, settings, monkeypatch):
    from django.db import OperationalError

    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    task = make_task()

    def database_hiccup(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(GenerationTask, "complete", database_hiccup)
    Worker(worker_id="hiccup").run_once()
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("pending", "internal_error")
    assert not list((Path(settings.MEDIA_ROOT) / "results").rglob("*.jpg"))


@pytest.mark.django_db
def test_a_failure_that_cannot_be_written_is_retried_by_the_heartbeat(make_task, settings, monkeypatch):
    from django.db import OperationalError

    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.CrashingBackend"
    task = make_task()
    real_fail = GenerationTask.fail
    calls = {"n": 0}

    def fail_once(self: GenerationTask, *args: Any, **kwargs: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("database unavailable")
        return real_fail(self, *args, **kwargs)

    monkeypatch.setattr(GenerationTask, "fail", fail_once)
    worker = Worker(worker_id="limbo")
    worker.run_once()
    task.refresh_from_db()
    assert task.status == "processing" and len(worker._unrecorded) == 1
    worker._retry_unrecorded()  # what the heartbeat thread does on its next beat
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("pending", "internal_error") and worker._unrecorded == []


def stored(settings: Any, folder: str) -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / folder
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.django_db
def test_a_result_with_mask_engine_and_review_flag_completes_in_the_same_pinned_queries(
    make_task, settings, django_assert_num_queries
):
    require_postgresql("the set-based claim and completion (their pinned query count)")
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.ReviewBackend"
    task = make_task()
    worker = Worker(worker_id="review")
    worker.register()
    # The same 10 as a plain result: the mask, provenance and flag are columns of the completing update.
    with django_assert_num_queries(10):
        assert worker.run_once() is True
    task.refresh_from_db()
    assert task.status == "completed" and task.needs_review is True
    assert task.engine["backend"] == "review"
    assert [p.name for p in stored(settings, "masks")] == [Path(task.mask_image.name).name]
    complete = Event.objects.get(task_id=task.pk, type="task_complete")
    assert complete.data["status"] == "completed"


@pytest.mark.django_db
def test_the_backend_gets_the_parsed_job_with_the_hint_box(make_task, settings):
    from generation.engine.spec import parse_job

    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.ReviewBackend"
    task = make_task(options=parse_job({"hint_box": "10,20,300,400", "shadow": "soft"}).to_options())
    assert Worker(worker_id="hint").run_once() is True
    task.refresh_from_db()
    # The review backend trusts a hint: a clean report and a mask that is exactly the box.
    assert task.status == "completed" and task.needs_review is False
    from PIL import Image

    with task.mask_image.open("rb") as fh:
        mask = Image.open(fh)
        mask.load()
    assert mask.getbbox() == (10, 20, 300, 400)


@pytest.mark.django_db
def test_a_batch_records_each_tasks_mask_engine_and_review_flag(make_task, settings):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.ReviewBackend"
    tasks = [make_task(), make_task()]
    worker = Worker(worker_id="batch-review")
    worker._seconds_per_task = 0.001  # fast enough to be claimed together
    assert worker.run_once() is True
    for task in tasks:
        task.refresh_from_db()
        assert (task.status, task.needs_review, task.engine["segmenter"]) == ("completed", True, "classical")
        assert task.mask_image.name.startswith("masks/")
    assert len({t.mask_image.name for t in tasks}) == 2 == len(stored(settings, "masks"))


@pytest.mark.django_db
def test_a_result_whose_claim_was_lost_leaves_no_result_or_mask_file(make_task, settings, monkeypatch):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.ReviewBackend"
    task = make_task()
    real_complete = GenerationTask.complete

    def canceled_just_before(self: GenerationTask, *args: Any, **kwargs: Any) -> None:
        GenerationTask.objects.get(pk=self.pk).cancel()  # the seller got there first
        real_complete(self, *args, **kwargs)

    monkeypatch.setattr(GenerationTask, "complete", canceled_just_before)
    assert Worker(worker_id="lost").run_once() is True
    task.refresh_from_db()
    assert task.status == "canceled" and not task.mask_image and task.engine is None
    assert stored(settings, "results") == [] and stored(settings, "masks") == []


@pytest.mark.django_db
def test_stored_options_that_no_longer_parse_fail_the_task_at_once(make_task, settings):
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    task = make_task(options={"preset": "amazon", "shadow": "sideways"})
    assert Worker(worker_id="bad-options").run_once() is True
    task.refresh_from_db()
    assert (task.status, task.error_code, task.attempts) == ("failed", "invalid_options", 1)
    assert "shadow" in task.error_message
