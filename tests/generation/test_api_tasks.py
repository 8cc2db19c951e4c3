"""The REST contract for tasks: shapes, owner isolation, idempotency, state rules, bad uploads."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from generation.models import GenerationTask
from notifications.models import Event
from tests.conftest import bearer, product_photo

pytestmark = pytest.mark.django_db


def upload(data: bytes, name: str = "photo.jpg", **fields: Any) -> dict[str, Any]:
    return {"image": SimpleUploadedFile(name, data), **fields}


def stored_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_it_creates_a_pending_task_with_location_and_contract_shape(auth_client, user, settings):
    response = auth_client.post("/api/tasks/", upload(product_photo()), format="multipart")
    assert response.status_code == 201, response.json()
    body = response.json()
    task = GenerationTask.objects.get(pk=body["id"])
    assert response["Location"] == f"/api/tasks/{task.pk}/"
    assert task.user == user
    assert body == {
        "id": task.pk,
        "status": "pending",
        "progress": 0,
        "queue_position": 1,
        "attempts": 0,
        "error_message": None,
        "error_code": None,
        "options": task.options,
        "input_image_url": f"/api/tasks/{task.pk}/input/",
        "result_image_url": None,
        "created_at": task.created_at.isoformat().replace("+00:00", "Z"),
        "started_at": None,
        "finished_at": None,
        "updated_at": task.updated_at.isoformat().replace("+00:00", "Z"),
        "elapsed_time": None,
        "estimated_remaining_seconds": None,  # no task has completed yet: nothing to estimate from
        "compliance": None,
    }
    assert task.options["preset"] == "amazon"
    # stored under an unguessable name, never the client's
    assert "photo" not in task.input_image.name and task.input_image.name.endswith(".jpg")


def test_it_requires_authentication_everywhere(api_client, make_task):
    task = make_task()
    for method, path in [
        ("get", "/api/tasks/"), ("post", "/api/tasks/"), ("get", f"/api/tasks/{task.pk}/"),
        ("post", f"/api/tasks/{task.pk}/cancel/"), ("post", f"/api/tasks/{task.pk}/retry/"),
        ("get", f"/api/tasks/{task.pk}/result/"), ("get", f"/api/tasks/{task.pk}/input/"),
    ]:
        response = getattr(api_client, method)(path)
        assert response.status_code == 401, (method, path)
        assert "detail" in response.json()


def test_it_returns_404_for_another_users_task_everywhere(other_client, make_task):
    task = make_task()
    for method, path in [
        ("get", f"/api/tasks/{task.pk}/"), ("post", f"/api/tasks/{task.pk}/cancel/"),
        ("post", f"/api/tasks/{task.pk}/retry/"), ("get", f"/api/tasks/{task.pk}/result/"),
        ("get", f"/api/tasks/{task.pk}/input/"),
    ]:
        assert getattr(other_client, method)(path).status_code == 404, (method, path)
    assert other_client.get("/api/tasks/").json()["count"] == 0
    task.refresh_from_db()
    assert task.status == "pending"


def test_it_lists_own_tasks_newest_first_with_status_filter_and_last_seq(auth_client, make_task, other_user):
    first, second, third = make_task(), make_task(), make_task()
    make_task(user=other_user)
    third.cancel()
    body = auth_client.get("/api/tasks/").json()
    assert [t["id"] for t in body["results"]] == [third.pk, second.pk, first.pk]
    assert body["count"] == 3 and body["next"] is None and body["previous"] is None
    assert body["last_seq"] == Event.objects.filter(user=first.user).count() == 4
    canceled = auth_client.get("/api/tasks/?status=canceled").json()
    assert [t["id"] for t in canceled["results"]] == [third.pk]
    assert auth_client.get("/api/tasks/?status=nonsense").status_code == 400


def test_it_reports_queue_positions_in_claim_order(auth_client, make_task, other_user):
    a = make_task(user=other_user)
    b = make_task()
    c = make_task()
    assert auth_client.get(f"/api/tasks/{b.pk}/").json()["queue_position"] == 2
    assert auth_client.get(f"/api/tasks/{c.pk}/").json()["queue_position"] == 3
    a.cancel()
    assert auth_client.get(f"/api/tasks/{c.pk}/").json()["queue_position"] == 2


def test_an_idempotency_key_repeat_returns_the_first_task_with_200(auth_client, other_client):
    first = auth_client.post("/api/tasks/", upload(product_photo()), format="multipart", HTTP_IDEMPOTENCY_KEY="k-1")
    again = auth_client.post("/api/tasks/", upload(product_photo()), format="multipart", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    # the key is per user
    theirs = other_client.post("/api/tasks/", upload(product_photo()), format="multipart", HTTP_IDEMPOTENCY_KEY="k-1")
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert GenerationTask.objects.count() == 2


def test_cancel_and_retry_follow_the_state_rules(auth_client, make_task):
    task = make_task()
    response = auth_client.post(f"/api/tasks/{task.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    conflict = auth_client.post(f"/api/tasks/{task.pk}/cancel/")
    assert conflict.status_code == 409 and "canceled" in conflict.json()["detail"]
    retried = auth_client.post(f"/api/tasks/{task.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert auth_client.post(f"/api/tasks/{task.pk}/retry/").status_code == 409


def test_a_completed_task_cannot_be_canceled_and_serves_its_result(auth_client, make_task, settings):
    from generation.models import WorkerProcess

    task = make_task()
    token = GenerationTask.claim_next(WorkerProcess.objects.create(name="w"))[0][1]
    assert auth_client.get(f"/api/tasks/{task.pk}/result/").status_code == 404
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    png = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(png, "PNG")
    name = default_storage.save("results/x.png", ContentFile(png.getvalue()))
    task.refresh_from_db()
    task.complete(token, result_name=name, content_type="image/png", compliance={"passed": True})
    assert auth_client.post(f"/api/tasks/{task.pk}/cancel/").status_code == 409
    response = auth_client.get(f"/api/tasks/{task.pk}/result/", HTTP_ACCEPT="image/*")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == png.getvalue()
    assert auth_client.get(f"/api/tasks/{task.pk}/").json()["result_image_url"] == f"/api/tasks/{task.pk}/result/"


def test_it_serves_the_input_image_to_its_owner(auth_client, make_task):
    data = product_photo()
    task = make_task(image=data)
    response = auth_client.get(f"/api/tasks/{task.pk}/input/")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content) == data


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), "red").save(buf, "GIF")
    return buf.getvalue()


def _bomb() -> bytes:
    # A tiny PNG whose header declares 30000 x 30000 pixels.
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, fields, words",
    [
        (b"", {}, "empty"),
        (b"hello, I am not an image" * 10, {}, "image"),
        (_gif(), {}, "gif"),
        (product_photo()[: len(product_photo()) // 2], {}, "incomplete"),
        (_bomb(), {}, "pixels"),
        (product_photo(20, 20), {}, "at least 64"),
        (product_photo(), {"preset": "nowhere"}, "preset"),
        (product_photo(), {"format": "tiff"}, "format"),
        (product_photo(), {"size": "huge"}, "size"),
        (product_photo(), {"colour": "blue"}, "colour"),
    ],
    ids=["empty", "text", "gif", "truncated", "bomb", "too-small", "bad-preset", "bad-format", "bad-size", "unknown-field"],
)
def test_a_bad_upload_is_a_400_that_creates_nothing(auth_client, settings, data, fields, words):
    response = auth_client.post("/api/tasks/", upload(data, **fields), format="multipart")
    assert response.status_code == 400, response.content
    assert words in response.json()["detail"].lower(), response.json()
    assert GenerationTask.objects.count() == 0
    assert Event.objects.count() == 0
    assert stored_files(settings) == []


def test_an_upload_over_the_byte_limit_is_a_400(auth_client, settings):
    settings.IMAGEGEN_MAX_UPLOAD_BYTES = 1000
    response = auth_client.post("/api/tasks/", upload(product_photo()), format="multipart")
    assert response.status_code == 400 and "limit" in response.json()["detail"]
    assert GenerationTask.objects.count() == 0


def test_a_missing_image_is_a_400(auth_client):
    response = auth_client.post("/api/tasks/", {"preset": "amazon"}, format="multipart")
    assert response.status_code == 400 and response.json()["detail"].startswith("image:")


def test_png_and_webp_uploads_are_accepted(auth_client):
    for fmt, ext in [("PNG", "png"), ("WEBP", "webp")]:
        response = auth_client.post("/api/tasks/", upload(product_photo(fmt=fmt), f"x.{ext}"), format="multipart")
        assert response.status_code == 201, response.json()
        assert GenerationTask.objects.get(pk=response.json()["id"]).input_content_type == f"image/{ext}"


def test_jwt_obtain_and_refresh_work(api_client, user):
    tokens = api_client.post("/api/auth/token/", {"username": "alice", "password": "alice-pass-123"}, format="json").json()
    assert set(tokens) == {"access", "refresh"}
    refreshed = api_client.post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 200 and "access" in refreshed.json()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api_client.get("/api/tasks/").status_code == 200
    bad = api_client.post("/api/auth/token/", {"username": "alice", "password": "nope"}, format="json")
    assert bad.status_code == 401 and "detail" in bad.json()


def test_the_openapi_schema_and_docs_are_served(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/tasks/{id}/cancel/" in schema.json()["paths"]
    assert api_client.get("/api/docs/").status_code == 200


def test_the_submit_rate_limit_answers_429(auth_client, settings):
    # Through settings only: the throttle reads its rate per request, so nothing class-level is patched.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "submit": "2/min"},
    }
    codes = [auth_client.post("/api/tasks/", upload(product_photo()), format="multipart").status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    assert GenerationTask.objects.count() == 2


def test_a_task_deleted_between_read_and_lock_is_a_404_not_a_500(auth_client, make_task, monkeypatch):
    task = make_task()
    real_lock = GenerationTask._lock

    def vanish_then_lock(self):
        GenerationTask.objects.filter(pk=self.pk).delete()  # retention got there first
        real_lock(self)

    monkeypatch.setattr(GenerationTask, "_lock", vanish_then_lock)
    assert auth_client.post(f"/api/tasks/{task.pk}/cancel/").status_code == 404
