"""State transitions of GenerationTask: allowed sources, fences, and one event per change."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from generation.models import Completion, GenerationTask, InvalidTransition, LostClaim, WorkerProcess, backoff_seconds
from notifications.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker_row() -> WorkerProcess:
    return WorkerProcess.objects.create(name="w1")


def claim(worker: WorkerProcess):
    [(task, token)] = GenerationTask.claim_next(worker)
    return task, token


def events_of(task: GenerationTask) -> list[tuple[int, str, str]]:
    return [(e.seq, e.type, e.data["status"]) for e in Event.objects.filter(task_id=task.pk).order_by("seq")]


def test_every_transition_emits_exactly_one_event_with_the_next_seq(make_task, worker_row, settings):
    settings.IMAGEGEN_MAX_ATTEMPTS = 2
    task = make_task()
    task, token = claim(worker_row)
    task.set_progress(token, 40)
    task.fail(token, code="upstream_timeout", message="slow", transient=True)  # back to pending
    task, token = claim(worker_row)
    task.fail(token, code="upstream_timeout", message="slow", transient=True)  # attempts spent
    task.retry()
    task.cancel()
    task.retry()
    task, token = claim(worker_row)
    task.complete(token, result_name="results/x.jpg", content_type="image/jpeg", compliance=None)
    assert events_of(task) == [
        (1, "task_created", "pending"),
        (2, "task_update", "processing"),
        (3, "task_update", "processing"),
        (4, "task_update", "pending"),
        (5, "task_update", "processing"),
        (6, "task_failed", "failed"),
        (7, "task_update", "pending"),
        (8, "task_canceled", "canceled"),
        (9, "task_update", "pending"),
        (10, "task_update", "processing"),
        (11, "task_complete", "completed"),
    ]
    last = Event.objects.get(task_id=task.pk, seq=11)
    assert last.data["progress"] == 100
    assert last.data["result_image_url"] == f"/api/tasks/{task.pk}/result/"


def test_seq_is_per_user(make_task, other_user):
    mine, theirs = make_task(), make_task(user=other_user)
    assert Event.objects.get(task_id=mine.pk).seq == 1
    assert Event.objects.get(task_id=theirs.pk).seq == 1


@pytest.mark.parametrize("status", ["completed", "failed", "canceled"])
def test_a_finished_task_cannot_be_canceled(make_task, worker_row, status):
    task = make_task()
    task, token = claim(worker_row)
    if status == "completed":
        task.complete(token, result_name="r.jpg", content_type="image/jpeg", compliance=None)
    elif status == "failed":
        task.fail(token, code="safety_block", message="blocked")
    else:
        task.cancel()
    before = Event.objects.count()
    with pytest.raises(InvalidTransition):
        task.cancel()
    assert Event.objects.count() == before


@pytest.mark.parametrize("status", ["pending", "processing", "completed"])
def test_only_failed_or_canceled_tasks_can_be_retried(make_task, worker_row, status):
    task = make_task()
    if status != "pending":
        task, token = claim(worker_row)
        if status == "completed":
            task.complete(token, result_name="r.jpg", content_type="image/jpeg", compliance=None)
    task.refresh_from_db()
    row_before = GenerationTask.objects.filter(pk=task.pk).values().get()
    events_before = Event.objects.count()
    with pytest.raises(InvalidTransition):
        task.retry()
    assert GenerationTask.objects.filter(pk=task.pk).values().get() == row_before
    assert Event.objects.count() == events_before


def test_a_permanent_error_fails_at_once_with_its_code(make_task, worker_row):
    make_task()
    task, token = claim(worker_row)
    assert task.fail(token, code="safety_block", message="The model refused.", transient=False) is False
    task.refresh_from_db()
    assert (task.status, task.error_code, task.error_message) == ("failed", "safety_block", "The model refused.")
    assert task.finished_at is not None


def test_a_transient_error_backs_off_through_run_after(make_task, worker_row, settings):
    settings.IMAGEGEN_RETRY_BASE_SECONDS = 10
    make_task()
    task, token = claim(worker_row)
    before = timezone.now()
    assert task.fail(token, code="upstream_error", message="HTTP 503", transient=True) is True
    task.refresh_from_db()
    assert task.status == "pending" and task.error_code == "upstream_error"
    assert before + timedelta(seconds=5) <= task.run_after <= before + timedelta(seconds=11)
    # not claimable until then
    assert GenerationTask.claim_next(worker_row) == []


def test_backoff_grows_exponentially_with_jitter_and_a_cap(settings):
    settings.IMAGEGEN_RETRY_BASE_SECONDS = 2
    settings.IMAGEGEN_RETRY_MAX_SECONDS = 20
    for attempt, full in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 20), (9, 20)]:
        samples = [backoff_seconds(attempt) for _ in range(200)]
        assert all(full / 2 <= s <= full for s in samples)
        assert max(samples) - min(samples) > full / 10  # jittered, not constant


def test_a_stale_claim_cannot_write_after_the_task_was_taken_back(make_task, worker_row):
    make_task()
    task, old_token = claim(worker_row)
    WorkerProcess.objects.filter(pk=worker_row.pk).update(last_heartbeat=timezone.now() - timedelta(seconds=120))
    assert GenerationTask.rescue_orphans(timeout=30) == [task.pk]
    new_worker = WorkerProcess.objects.create(name="w2")
    task2, new_token = claim(new_worker)
    assert task2.pk == task.pk and new_token != old_token
    # the presumed-dead worker wakes up and tries to write
    for write in (
        lambda: task.set_progress(old_token, 90),
        lambda: task.complete(old_token, result_name="stale.jpg", content_type="image/jpeg", compliance=None),
        lambda: task.fail(old_token, code="x", message="stale"),
        lambda: task.release(old_token),
    ):
        with pytest.raises(LostClaim):
            write()
    task.refresh_from_db()
    assert (task.status, task.worker_id, task.claim_token, task.attempts) == ("processing", new_worker.pk, new_token, 2)


def test_rescue_fails_with_worker_lost_when_attempts_are_spent(make_task, worker_row, settings):
    settings.IMAGEGEN_MAX_ATTEMPTS = 1
    make_task()
    task, _ = claim(worker_row)
    WorkerProcess.objects.filter(pk=worker_row.pk).update(last_heartbeat=timezone.now() - timedelta(seconds=120))
    GenerationTask.rescue_orphans(timeout=30)
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("failed", "worker_lost")


def test_rescue_leaves_tasks_of_live_workers_alone(make_task, worker_row):
    make_task()
    claim(worker_row)
    assert GenerationTask.rescue_orphans(timeout=30) == []


def test_a_canceled_task_fences_out_its_worker(make_task, worker_row):
    make_task()
    task, token = claim(worker_row)
    GenerationTask.objects.get(pk=task.pk).cancel()
    with pytest.raises(LostClaim):
        task.complete(token, result_name="r.jpg", content_type="image/jpeg", compliance=None)
    task.refresh_from_db()
    assert task.status == "canceled" and not task.result_image


def test_claim_order_is_priority_then_fifo(make_task, worker_row):
    low = make_task()
    high = make_task(priority=5)
    low2 = make_task()
    got = [t.pk for t, _ in GenerationTask.claim_next(worker_row, limit=3)]
    assert got == [high.pk, low.pk, low2.pk]


def test_release_gives_the_attempt_back(make_task, worker_row):
    make_task()
    task, token = claim(worker_row)
    task.release(token)
    task.refresh_from_db()
    assert (task.status, task.attempts, task.worker_id, task.progress) == ("pending", 0, None, 0)


@pytest.mark.django_db(transaction=True)
def test_saving_a_task_outside_a_transaction_is_refused(make_task):
    task = make_task()
    task.progress = 5
    with pytest.raises(RuntimeError, match="atomic"):
        task.save(update_fields=["progress"])
    assert Event.objects.filter(task_id=task.pk).count() == 1


def test_complete_batch_records_the_held_claims_and_reports_the_lost_ones(make_task, worker_row):
    make_task(), make_task(), make_task()
    claimed = GenerationTask.claim_next(worker_row, limit=3)
    (a, ta), (b, tb), (c, tc) = claimed
    GenerationTask.objects.get(pk=b.pk).cancel()
    lost = GenerationTask.complete_batch(
        [(a, ta, Completion("results/a.jpg", "image/jpeg", None, "masks/a.png", ENGINE, True)),
         (b, tb, Completion("results/b.jpg", "image/jpeg")),
         (c, uuid.uuid4(), Completion("results/c.jpg", "image/jpeg"))]
    )
    assert lost == {b.pk, c.pk}
    statuses = dict(GenerationTask.objects.values_list("pk", "status"))
    assert statuses == {a.pk: "completed", b.pk: "canceled", c.pk: "processing"}
    assert Event.objects.filter(type="task_complete").count() == 1
    a.refresh_from_db()
    assert (a.mask_image.name, a.engine, a.needs_review) == ("masks/a.png", ENGINE, True)


ENGINE = {"backend": "local", "segmenter": "u2netp", "model": "u2netp.onnx", "model_sha256": "ab" * 32, "version": "2.0"}


def test_completing_records_mask_engine_and_review_flag_with_the_result_in_one_change(make_task, worker_row):
    make_task()
    task, token = claim(worker_row)
    before = Event.objects.count()
    task.complete(token, result_name="results/x.png", content_type="image/png",
                  compliance={"passed": True, "needs_review": True}, mask_name="masks/x.png",
                  engine=ENGINE, needs_review=True)
    task.refresh_from_db()
    assert (task.status, task.result_image.name, task.mask_image.name) == ("completed", "results/x.png", "masks/x.png")
    assert task.engine == ENGINE and task.needs_review is True
    assert task.get_mask_url() == f"/api/tasks/{task.pk}/mask/"
    assert list(Event.objects.filter(seq__gt=before).values_list("type", flat=True)) == ["task_complete"]


def test_a_lost_claim_records_no_mask_engine_or_review_flag(make_task, worker_row):
    make_task()
    task, token = claim(worker_row)
    GenerationTask.objects.get(pk=task.pk).cancel()
    with pytest.raises(LostClaim):
        task.complete(token, result_name="results/x.png", content_type="image/png", compliance=None,
                      mask_name="masks/x.png", engine=ENGINE, needs_review=True)
    task.refresh_from_db()
    assert (task.status, task.mask_image.name, task.engine, task.needs_review) == ("canceled", "", None, False)


def test_deleting_a_finished_task_removes_its_mask_file_with_the_others(make_task, worker_row, settings):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.test import TestCase

    from generation import retention

    make_task()
    task, token = claim(worker_row)
    result = default_storage.save("results/r.jpg", ContentFile(b"r"))
    mask = default_storage.save("masks/m.png", ContentFile(b"m"))
    task.complete(token, result_name=result, content_type="image/jpeg", compliance=None, mask_name=mask)
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert retention.delete_tasks([task.pk]) == [task.pk]
    assert not default_storage.exists(mask) and not default_storage.exists(result)
    assert not default_storage.exists(task.input_image.name)
