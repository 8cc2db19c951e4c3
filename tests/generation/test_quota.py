"""The daily task quota (IMAGEGEN_DAILY_TASKS_PER_USER) and GET /api/account/."""
from __future__ import annotations

import threading
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections

from generation.models import DailyUsage, GenerationTask, QuotaExceeded
from generation.models.usage import seconds_to_next_utc_midnight, utc_day
from tests.conftest import product_photo, require_postgresql

pytestmark = pytest.mark.django_db


def upload(**fields: Any) -> dict[str, Any]:
    return {"image": SimpleUploadedFile("photo.jpg", product_photo(), content_type="image/jpeg"), **fields}


def stored_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_submit_over_the_daily_quota_is_a_429_with_its_code_and_the_seconds_to_utc_midnight(
        auth_client, user, settings):
    settings.IMAGEGEN_DAILY_TASKS_PER_USER = 2
    for _ in range(2):
        assert auth_client.post("/api/tasks/", upload(), format="multipart").status_code == 201
    files_before = stored_files(settings)

    response = auth_client.post("/api/tasks/", upload(), format="multipart")

    assert response.status_code == 429
    assert response.json() == {"detail": "Daily task quota of 2 reached; it resets at 00:00 UTC.",
                               "code": "quota_exceeded"}
    retry_after = int(response["Retry-After"])
    expected = seconds_to_next_utc_midnight(datetime.now(dt_timezone.utc))
    assert expected - 5 <= retry_after <= expected
    assert GenerationTask.objects.for_user(user).count() == 2  # nothing created
    assert stored_files(settings) == files_before  # and no upload left behind


def test_the_quota_is_per_user_and_an_idempotent_repeat_is_not_a_new_task(auth_client, other_client, settings):
    settings.IMAGEGEN_DAILY_TASKS_PER_USER = 1
    first = auth_client.post("/api/tasks/", upload(), format="multipart", HTTP_IDEMPOTENCY_KEY="sku-1")
    assert first.status_code == 201
    repeat = auth_client.post("/api/tasks/", upload(), format="multipart", HTTP_IDEMPOTENCY_KEY="sku-1")
    assert repeat.status_code == 200 and repeat.json()["id"] == first.json()["id"]
    assert auth_client.post("/api/tasks/", upload(), format="multipart").status_code == 429
    assert other_client.post("/api/tasks/", upload(), format="multipart").status_code == 201


def test_a_refused_submit_does_not_count_and_unlimited_still_counts_usage(auth_client, user, settings):
    settings.IMAGEGEN_DAILY_TASKS_PER_USER = None
    for _ in range(3):
        assert auth_client.post("/api/tasks/", upload(), format="multipart").status_code == 201
    settings.IMAGEGEN_DAILY_TASKS_PER_USER = 3
    assert auth_client.post("/api/tasks/", upload(), format="multipart").status_code == 429
    assert DailyUsage.usage_for(user, datetime.now(dt_timezone.utc)).today == 3


def test_bad_input_is_a_400_and_counts_nothing(auth_client, user, settings):
    settings.IMAGEGEN_DAILY_TASKS_PER_USER = 1
    bad = auth_client.post("/api/tasks/", upload(preset="nope"), format="multipart")
    assert bad.status_code == 400
    assert auth_client.post("/api/tasks/", upload(), format="multipart").status_code == 201


def test_the_day_boundary_is_utc_midnight():
    assert utc_day(datetime(2026, 3, 31, 23, 59, 59, tzinfo=dt_timezone.utc)).isoformat() == "2026-03-31"
    assert seconds_to_next_utc_midnight(datetime(2026, 3, 31, 23, 59, 59, 500000, tzinfo=dt_timezone.utc)) == 1
    assert seconds_to_next_utc_midnight(datetime(2026, 4, 1, 0, 0, tzinfo=dt_timezone.utc)) == 86400


@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_of_one_user_cannot_overshoot_the_quota(user, settings):
    require_postgresql("concurrent writers")
    settings.IMAGEGEN_DAILY_TASKS_PER_USER = 3
    start = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        from generation.engine.spec import parse_job
        from generation.models import QuotaExceeded

        try:
            start.wait(10)
            GenerationTask.submit(user=user, image=SimpleUploadedFile("input.jpg", product_photo()),
                                  content_type="image/jpeg", options=parse_job({}).to_options())
            outcome = "created"
        except QuotaExceeded:
            outcome = "refused"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 5
    assert GenerationTask.objects.filter(user=user).count() == 3
    assert DailyUsage.objects.get(user=user).tasks == 3


def test_the_account_shows_usage_limits_and_queue(auth_client, user, other_user, make_task, settings):
    settings.IMAGEGEN_DAILY_TASKS_PER_USER = 10
    tasks = [make_task() for _ in range(3)]
    make_task(user=other_user)
    tasks[0].cancel()
    # Earlier this month (or on the 1st, today itself: then it is not "this month but before").
    today = utc_day(datetime.now(dt_timezone.utc))
    earlier = today.replace(day=1)
    if earlier != today:
        DailyUsage.objects.create(user=user, day=earlier, tasks=5)
    DailyUsage.objects.create(user=user, day=today.replace(year=today.year - 1), tasks=50)  # another month

    body = auth_client.get("/api/account/").json()

    assert body == {
        "username": "alice",
        "usage": {"today": 3, "this_month": 3 + (5 if earlier != today else 0), "resets_at": body["usage"]["resets_at"]},
        "limits": {"daily_tasks": 10, "max_running": None, "max_upload_bytes": settings.IMAGEGEN_MAX_UPLOAD_BYTES,
                   "max_pixels": settings.IMAGEGEN_MAX_PIXELS},
        "pending": 2,
        "processing": 0,
    }
    assert body["usage"]["resets_at"].endswith("T00:00:00Z")


def test_the_account_needs_credentials(api_client):
    assert api_client.get("/api/account/").status_code == 401


def batch_of(count: int) -> dict[str, Any]:
    return {"image": [SimpleUploadedFile(f"p{i}.jpg", product_photo(), content_type="image/jpeg")
                      for i in range(count)]}


def test_every_photo_of_a_batch_counts_and_a_batch_over_the_quota_creates_nothing(auth_client, user, settings):
    settings.IMAGEGEN_DAILY_TASKS_PER_USER = 4
    assert auth_client.post("/api/batches/", batch_of(3), format="multipart").status_code == 201
    assert DailyUsage.usage_for(user, datetime.now(dt_timezone.utc)).today == 3
    files_before = stored_files(settings)

    over = auth_client.post("/api/batches/", batch_of(2), format="multipart")  # 3 + 2 > 4: all or nothing

    assert over.status_code == 429 and over.json()["code"] == "quota_exceeded" and int(over["Retry-After"]) > 0
    assert GenerationTask.objects.for_user(user).count() == 3
    assert stored_files(settings) == files_before
    assert auth_client.post("/api/batches/", batch_of(1), format="multipart").status_code == 201


def test_the_early_quota_check_is_one_read_of_the_days_counter(user, settings):
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    settings.IMAGEGEN_DAILY_TASKS_PER_USER = 1
    now = timezone.now()
    with CaptureQueriesContext(connection) as queries:
        DailyUsage.check_quota(user, now)  # nothing used yet
    assert len(queries.captured_queries) == 1
    DailyUsage.count_task(user, now)
    with pytest.raises(QuotaExceeded):
        DailyUsage.check_quota(user, now)
