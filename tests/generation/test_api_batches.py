"""Batches through the REST API: creation, counts and events, bad parts, cancel, the archive, owners."""
from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from generation.models import BATCH_PRIORITY, Batch, GenerationTask, QueueControl
from generation.worker import Worker
from notifications.models import Event
from tests.conftest import product_photo

BACKENDS = "tests.generation.backends"


def photos(*names: str, data: bytes | None = None) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(name, data if data is not None else product_photo(320 + 8 * i, 240))
            for i, name in enumerate(names)]


def post_batch(client: Any, images: list[Any], **fields: Any) -> Any:
    return client.post("/api/batches/", {"image": images, **fields}, format="multipart")


def stored_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def events_of(user: Any) -> list[Event]:
    return list(Event.objects.filter(user=user).order_by("seq"))


def drain(settings: Any, backend: str = "QuickBackend") -> None:
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.{backend}"
    Worker(burst=True, worker_id="batch-test").run()


@pytest.mark.django_db
def test_it_creates_a_batch_of_pending_tasks_in_the_batch_lane(auth_client, user):
    response = post_batch(auth_client, photos("a.jpg", "b.jpg", "c.jpg"), preset="etsy", client_ref="spring-24")

    assert response.status_code == 201, response.json()
    batch = Batch.objects.get()
    tasks = list(GenerationTask.objects.filter(batch=batch).order_by("id"))
    assert response["Location"] == f"/api/batches/{batch.pk}/"
    assert response.json() == {
        "id": batch.pk, "status": "pending", "total": 3, "progress": 0,
        "counts": {"pending": 3, "processing": 0, "completed": 0, "failed": 0, "canceled": 0},
        "tasks": [t.pk for t in tasks], "options": tasks[0].options, "client_ref": "spring-24",
        "archive_url": f"/api/batches/{batch.pk}/archive/",
        "created_at": batch.created_at.isoformat().replace("+00:00", "Z"), "finished_at": None,
        "updated_at": batch.updated_at.isoformat().replace("+00:00", "Z"),
    }
    assert all(t.user == user and t.priority == BATCH_PRIORITY < 0 for t in tasks)
    assert [t.source_name for t in tasks] == ["a.jpg", "b.jpg", "c.jpg"]
    assert tasks[0].options["preset"] == "etsy"
    assert auth_client.get(f"/api/tasks/{tasks[0].pk}/").json()["batch"] == batch.pk
    # The batch's event first (every task pending), then each task's task_created, which names the batch.
    events = events_of(user)
    assert [(e.seq, e.type) for e in events] == [(1, "batch_update")] + [(n, "task_created") for n in (2, 3, 4)]
    assert events[0].task_id is None and events[0].data["counts"]["pending"] == 3 and "tasks" not in events[0].data
    assert {e.data["batch"] for e in events[1:]} == {batch.pk}


@pytest.mark.django_db(transaction=True)
def test_a_finished_batch_counted_each_change_in_seq_order_and_ended_with_batch_complete(auth_client, user,
                                                                                         settings):
    batch_id = post_batch(auth_client, photos("a.jpg", "b.jpg", "c.jpg")).json()["id"]

    drain(settings)

    body = auth_client.get(f"/api/batches/{batch_id}/").json()
    assert body["status"] == "completed" and body["progress"] == 100 and body["finished_at"] is not None
    assert body["counts"] == {"pending": 0, "processing": 0, "completed": 3, "failed": 0, "canceled": 0}
    events = events_of(user)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    batch_events = [e for e in events if e.type.startswith("batch_")]
    # Created, then every claim and every completion moved the counts once.
    assert len(batch_events) == 1 + 3 + 3 + 1
    assert events[-1].type == "batch_complete" and events[-2].type == "batch_update"
    assert events[-1].data == events[-2].data == {k: v for k, v in body.items() if k != "tasks"}
    # Counts only ever move forward here, and progress with them.
    progress = [e.data["progress"] for e in batch_events]
    assert progress == sorted(progress) and progress[-1] == 100
    for event in batch_events:
        assert sum(event.data["counts"].values()) == 3
    # Each batch_update follows the task event that caused it.
    for earlier, later in zip(events, events[1:]):
        if later.type == "batch_update" and later.seq > 1:
            assert earlier.type.startswith("task_")


@pytest.mark.django_db
def test_one_bad_part_is_a_400_naming_it_and_nothing_is_created(auth_client, user, settings):
    images = photos("a.jpg", "b.jpg", "c.jpg", "d.jpg")
    images[1] = SimpleUploadedFile("notes.jpg", b"not a photo at all")
    images[3] = SimpleUploadedFile("tiny.png", product_photo(20, 20, fmt="PNG"))

    response = post_batch(auth_client, images)

    assert response.status_code == 400
    body = response.json()
    assert sorted(body["errors"]) == ["image[1]", "image[3]"]
    assert "notes.jpg" in body["errors"]["image[1]"][0] and "tiny.png" in body["errors"]["image[3]"][0]
    assert body["detail"].startswith("image[1]: notes.jpg")
    assert Batch.objects.count() == GenerationTask.objects.count() == Event.objects.count() == 0
    assert stored_files(settings) == []


@pytest.mark.django_db
@pytest.mark.parametrize(("fields", "named"), [
    ({"preset": "nowhere"}, "preset"),
    ({"colour": "red"}, "colour"),
    ({"client_ref": "x" * 201}, "client_ref"),
    ({"client_ref": "spring\x00"}, "client_ref"),  # PostgreSQL text cannot hold NUL
])
def test_a_bad_shared_option_is_a_400_naming_the_option(auth_client, settings, fields, named):
    response = post_batch(auth_client, photos("a.jpg", "b.jpg"), **fields)

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [named]
    assert Batch.objects.count() == GenerationTask.objects.count() == Event.objects.count() == 0
    assert stored_files(settings) == []


@pytest.mark.django_db
def test_more_than_100_photos_or_none_is_a_400(auth_client, settings):
    data = product_photo(96, 96)
    too_many = post_batch(auth_client, photos(*(f"p{i}.jpg" for i in range(101)), data=data))
    none = auth_client.post("/api/batches/", {"preset": "etsy"}, format="multipart")

    assert too_many.status_code == 400 and "at most 100" in too_many.json()["errors"]["image"][0]
    assert none.status_code == 400 and list(none.json()["errors"]) == ["image"]
    assert Batch.objects.count() == GenerationTask.objects.count() == 0 and stored_files(settings) == []


@pytest.mark.django_db
def test_a_batch_of_exactly_100_is_accepted(auth_client):
    response = post_batch(auth_client, photos(*(f"p{i}.jpg" for i in range(100)), data=product_photo(96, 96)))

    assert response.status_code == 201, response.json()
    assert response.json()["total"] == 100 == GenerationTask.objects.filter(batch__isnull=False).count()


@pytest.mark.django_db
def test_paused_intake_refuses_batches_too(auth_client, settings):
    QueueControl.get().set_intake(paused=True, by="ops", reason="maintenance")

    response = post_batch(auth_client, photos("a.jpg"))

    assert response.status_code == 503 and "Retry-After" in response
    assert Batch.objects.count() == GenerationTask.objects.count() == 0 and stored_files(settings) == []


@pytest.mark.django_db
def test_a_repeated_idempotency_key_returns_the_first_batch(auth_client):
    first = auth_client.post("/api/batches/", {"image": photos("a.jpg")}, format="multipart",
                             HTTP_IDEMPOTENCY_KEY="chunk-1")
    again = auth_client.post("/api/batches/", {"image": photos("a.jpg")}, format="multipart",
                             HTTP_IDEMPOTENCY_KEY="chunk-1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and Batch.objects.count() == 1
    assert GenerationTask.objects.count() == 1


@pytest.mark.django_db
def test_an_idempotency_key_reused_for_other_photos_or_options_is_a_422_that_creates_nothing(auth_client, settings):
    first = auth_client.post("/api/batches/", {"image": photos("a.jpg")}, format="multipart",
                             HTTP_IDEMPOTENCY_KEY="chunk-1")
    files_before = stored_files(settings)
    other_photo = auth_client.post("/api/batches/", {"image": photos("a.jpg", data=product_photo(100, 100))},
                                   format="multipart", HTTP_IDEMPOTENCY_KEY="chunk-1")
    other_option = auth_client.post("/api/batches/", {"image": photos("a.jpg"), "preset": "etsy"},
                                    format="multipart", HTTP_IDEMPOTENCY_KEY="chunk-1")

    assert first.status_code == 201
    for answer in (other_photo, other_option):
        assert answer.status_code == 422
        assert answer.json()["code"] == "idempotency_key_reused"
        assert f"batch {first.json()['id']}" in answer.json()["detail"]
    assert Batch.objects.count() == GenerationTask.objects.count() == 1
    assert stored_files(settings) == files_before


@pytest.mark.django_db
def test_cancel_ends_every_unfinished_task_with_their_events_and_the_batch_events(auth_client, user):
    body = post_batch(auth_client, photos("a.jpg", "b.jpg", "c.jpg")).json()
    first = GenerationTask.objects.get(pk=body["tasks"][0])
    first.cancel()  # one task canceled on its own before the batch
    before = Event.objects.filter(user=user).count()

    response = auth_client.post(f"/api/batches/{body['id']}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "canceled" and response.json()["counts"]["canceled"] == 3
    assert set(GenerationTask.objects.values_list("status", flat=True)) == {"canceled"}
    new = [e.type for e in Event.objects.filter(user=user, seq__gt=before).order_by("seq")]
    assert new == ["task_canceled", "batch_update", "task_canceled", "batch_update", "batch_complete"]
    again = auth_client.post(f"/api/batches/{body['id']}/cancel/")
    assert again.status_code == 409


@pytest.mark.django_db
def test_another_users_batch_is_a_404_everywhere(auth_client, other_client):
    batch_id = post_batch(auth_client, photos("a.jpg")).json()["id"]

    for path in (f"/api/batches/{batch_id}/", f"/api/batches/{batch_id}/archive/"):
        assert other_client.get(path).status_code == 404
    assert other_client.post(f"/api/batches/{batch_id}/cancel/").status_code == 404
    assert other_client.get("/api/batches/").json()["count"] == 0
    assert auth_client.get("/api/batches/").json()["results"][0]["id"] == batch_id
    assert GenerationTask.objects.get().status == "pending"


@pytest.mark.django_db(transaction=True)
def test_the_archive_holds_every_completed_output_named_after_its_photo_and_a_manifest(auth_client, settings):
    images = photos("Shoe 1.JPG", "shoe 1.jpg", "../../etc/passwd.jpg", "bad.jpg")
    response = post_batch(auth_client, images)
    body = response.json()
    failing = GenerationTask.objects.get(pk=body["tasks"][3])
    failing.cancel()
    drain(settings, "ReviewBackend")  # doubts every cut: passed false, needs_review true

    response = auth_client.get(f"/api/batches/{body['id']}/archive/")

    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    data = b"".join(response.streaming_content)
    assert int(response["Content-Length"]) == len(data)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.namelist() == ["Shoe_1.jpg", "shoe_1-2.jpg", "passwd.jpg", "manifest.csv"]
    first = GenerationTask.objects.get(pk=body["tasks"][0])
    assert archive.read("Shoe_1.jpg") == first.result_image.read()
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [(r["file"], r["source"], r["status"], r["passed"], r["needs_review"]) for r in rows] == [
        ("Shoe_1.jpg", "Shoe 1.JPG", "completed", "false", "true"),
        ("shoe_1-2.jpg", "shoe 1.jpg", "completed", "false", "true"),
        ("passwd.jpg", "passwd.jpg", "completed", "false", "true"),  # Django keeps only the base name
        ("", "bad.jpg", "canceled", "", ""),
    ]
    assert set(rows[0]) == {"file", "task_id", "source", "client_ref", "status", "error_code", "error",
                            "output", "passed", "needs_review"}
    assert rows[3]["task_id"] == str(failing.pk)


@pytest.mark.django_db(transaction=True)
def test_a_retried_task_reopens_its_finished_batch_until_it_finishes_again(auth_client, user, settings):
    body = post_batch(auth_client, photos("a.jpg", "b.jpg")).json()
    assert auth_client.post(f"/api/batches/{body['id']}/cancel/").json()["status"] == "canceled"

    retried = auth_client.post(f"/api/tasks/{body['tasks'][0]}/retry/")

    assert retried.status_code == 200 and retried.json()["batch"] == body["id"]
    reopened = auth_client.get(f"/api/batches/{body['id']}/").json()
    assert (reopened["status"], reopened["finished_at"], reopened["progress"]) == ("processing", None, 50)
    assert reopened["counts"] == {"pending": 1, "processing": 0, "completed": 0, "failed": 0, "canceled": 1}
    drain(settings)
    final = auth_client.get(f"/api/batches/{body['id']}/").json()
    assert final["status"] == "canceled" and final["counts"]["completed"] == 1  # one stays canceled
    assert [e.type for e in events_of(user)].count("batch_complete") == 2


@pytest.mark.django_db
def test_batches_share_the_submit_rate_limit_with_tasks(auth_client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "submit": "2/min"},
    }
    task = auth_client.post("/api/tasks/", {"image": photos("one.jpg")[0]}, format="multipart")
    batch = post_batch(auth_client, photos("a.jpg"))
    refused = post_batch(auth_client, photos("b.jpg"))

    assert (task.status_code, batch.status_code, refused.status_code) == (201, 201, 429)
    assert "Retry-After" in refused
    assert Batch.objects.count() == 1
    assert auth_client.get("/api/batches/").status_code == 200  # reading is not a submission
