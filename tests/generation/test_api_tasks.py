"""The REST contract for tasks: shapes, owner isolation, idempotency, state rules, bad uploads."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from generation.engine.spec import parse_job
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
        "needs_review": False,
        "engine": None,
        "outputs": [],  # listed once completed
        "client_ref": None,
        "expires_at": None,
        "image_url": None,
        "batch": None,  # a single submission
    }
    assert task.options == parse_job({}).to_options()
    assert task.options["preset"] == "amazon" and task.options["hint_box"] is None
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


# --- Engine v2 options, review, mask and provenance -------------------------------------

def exif_rotated_photo(width: int, height: int) -> bytes:
    """A JPEG stored ``width`` x ``height`` with EXIF orientation 6: displayed as height x width."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(io.BytesIO(product_photo(width, height))).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize(
    "fields, stored",
    [
        ({"background": "transparent", "format": "png"}, {"background": "transparent", "format": "png"}),
        ({"background": "transparent"}, {"background": "transparent", "format": "png"}),
        ({"fit": "original"}, {"fit": "original"}),
        ({"shadow": "keep"}, {"shadow": "keep"}),
        ({"shadow": "soft"}, {"shadow": "soft"}),
        ({"hint_box": "100,80,540,400"}, {"hint_box": [100, 80, 540, 400]}),
        ({"hint_box": "0,0,640,480"}, {"hint_box": [0, 0, 640, 480]}),
    ],
    ids=["transparent-png", "transparent-default-format", "fit-original", "shadow-keep", "shadow-soft",
         "hint-box", "hint-box-whole-photo"],
)
def test_it_accepts_and_stores_each_new_option(auth_client, fields, stored):
    response = auth_client.post("/api/tasks/", upload(product_photo(), **fields), format="multipart")
    assert response.status_code == 201, response.json()
    task = GenerationTask.objects.get(pk=response.json()["id"])
    expected = {**parse_job({}).to_options(), **stored}
    assert task.options == response.json()["options"] == expected


def test_a_hint_box_is_checked_against_the_photo_as_displayed_after_exif_rotation(auth_client):
    photo = exif_rotated_photo(640, 480)  # displayed 480 wide, 640 tall
    tall = auth_client.post("/api/tasks/", upload(photo, hint_box="10,10,470,630"), format="multipart")
    assert tall.status_code == 201, tall.json()
    wide = auth_client.post("/api/tasks/", upload(photo, hint_box="10,10,630,470"), format="multipart")
    assert wide.status_code == 400 and list(wide.json()["errors"]) == ["hint_box"]
    assert "480x640" in wide.json()["errors"]["hint_box"][0]
    assert GenerationTask.objects.count() == 1


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"background": "blue"}, "background"),
        ({"fit": "stretch"}, "fit"),
        ({"shadow": "dark"}, "shadow"),
        ({"background": "transparent", "format": "jpeg"}, "format"),
        ({"hint_box": "1,2,3"}, "hint_box"),
        ({"hint_box": "a,b,c,d"}, "hint_box"),
        ({"hint_box": "300,200,100,400"}, "hint_box"),
        ({"hint_box": "-5,10,200,300"}, "hint_box"),
        ({"hint_box": "100,100,700,400"}, "hint_box"),  # wider than the 640 px photo
        ({"hint_box": "100,100,500,481"}, "hint_box"),  # taller than the 480 px photo
        ({"preset": "nowhere"}, "preset"),
        ({"colour": "blue"}, "colour"),
    ],
    ids=["background", "fit", "shadow", "jpeg-transparent", "hint-3-numbers", "hint-words", "hint-reversed",
         "hint-negative", "hint-too-wide", "hint-too-tall", "preset", "unknown-field"],
)
def test_a_bad_option_is_a_400_naming_its_field_that_creates_nothing(auth_client, settings, fields, field):
    response = auth_client.post("/api/tasks/", upload(product_photo(), **fields), format="multipart")
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body["errors"]) == [field], body
    assert isinstance(body["errors"][field], list) and body["errors"][field][0]
    assert body["detail"].startswith(f"{field}: ")
    assert GenerationTask.objects.count() == 0
    assert Event.objects.count() == 0
    assert stored_files(settings) == []


@pytest.mark.parametrize("field", ["image", "preset"])
def test_a_field_given_twice_is_a_400_naming_it_that_creates_nothing(auth_client, settings, field):
    # A form keeps the last of repeated values: two photos would have made one task of the second.
    twice = {
        "image": [SimpleUploadedFile("a.jpg", product_photo()), SimpleUploadedFile("b.jpg", product_photo(background=200))],
        "preset": ["amazon", "etsy"],
    }
    data = {"image": SimpleUploadedFile("a.jpg", product_photo()), field: twice[field]}
    response = auth_client.post("/api/tasks/", data, format="multipart")
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body["errors"]) == [field], body
    assert body["detail"].startswith(f"{field}: Give this field once")
    assert GenerationTask.objects.count() == 0
    assert Event.objects.count() == 0
    assert stored_files(settings) == []


def flat_photo() -> bytes:
    """Nothing but background: the review backend refuses it, as the engine refuses an empty shot."""
    buf = io.BytesIO()
    Image.new("RGB", (200, 160), (120, 120, 120)).save(buf, "JPEG")
    return buf.getvalue()


def run_worker_once(settings: Any, backend: str) -> None:
    from generation.worker import Worker

    settings.IMAGEGEN_BACKEND = backend
    assert Worker(worker_id="api-test").run_once() is True


REVIEW = "tests.generation.backends.ReviewBackend"
QUICK = "tests.generation.backends.QuickBackend"


def test_the_mask_is_a_greyscale_png_of_the_inputs_size_for_its_owner_once_completed(
    auth_client, other_client, api_client, make_task, settings
):
    task = make_task(image=exif_rotated_photo(320, 200))
    assert auth_client.get(f"/api/tasks/{task.pk}/mask/").status_code == 404  # pending
    run_worker_once(settings, REVIEW)
    response = auth_client.get(f"/api/tasks/{task.pk}/mask/", HTTP_ACCEPT="image/*")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    mask = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert mask.format == "PNG" and mask.mode == "L"
    assert mask.size == (200, 320)  # the input as displayed, after EXIF rotation
    assert mask.getextrema() == (0, 255)
    assert other_client.get(f"/api/tasks/{task.pk}/mask/").status_code == 404
    assert api_client.get(f"/api/tasks/{task.pk}/mask/").status_code == 401


def test_the_mask_is_a_404_while_processing_and_after_a_failure(auth_client, make_task, settings):
    from generation.models import WorkerProcess

    task = make_task()
    GenerationTask.claim_next(WorkerProcess.objects.create(name="w"))
    processing = auth_client.get(f"/api/tasks/{task.pk}/mask/")
    assert processing.status_code == 404 and "processing" in processing.json()["detail"]
    flat = make_task(image=flat_photo())
    GenerationTask.objects.filter(pk=flat.pk).update(priority=1)
    run_worker_once(settings, REVIEW)
    flat.refresh_from_db()
    assert flat.status == "failed" and flat.error_code == "no_product_found"
    assert auth_client.get(f"/api/tasks/{flat.pk}/mask/").status_code == 404


def test_a_completed_task_without_a_mask_answers_404_for_the_mask(auth_client, make_task, settings):
    task = make_task()
    run_worker_once(settings, QUICK)
    body = auth_client.get(f"/api/tasks/{task.pk}/").json()
    assert body["status"] == "completed"
    response = auth_client.get(f"/api/tasks/{task.pk}/mask/")
    assert response.status_code == 404 and "mask" in response.json()["detail"]


def test_a_task_that_needs_review_says_so_and_the_list_filters_on_it(auth_client, make_task, settings):
    doubtful = make_task()
    run_worker_once(settings, REVIEW)
    clean = make_task()
    run_worker_once(settings, QUICK)
    waiting = make_task()
    body = auth_client.get(f"/api/tasks/{doubtful.pk}/").json()
    assert body["needs_review"] is True
    assert body["compliance"]["needs_review"] is True
    assert [r["code"] for r in body["compliance"]["review_reasons"]] == ["touches_frame", "low_confidence"]
    assert body["engine"] == {"backend": "review", "segmenter": "classical", "model": None,
                              "model_sha256": None, "version": "test"}
    flagged = auth_client.get("/api/tasks/?needs_review=true").json()
    assert [t["id"] for t in flagged["results"]] == [doubtful.pk] and flagged["count"] == 1
    fine = auth_client.get("/api/tasks/?needs_review=false").json()
    assert [t["id"] for t in fine["results"]] == [waiting.pk, clean.pk]
    both = auth_client.get("/api/tasks/?needs_review=true&status=pending").json()
    assert both["count"] == 0


@pytest.mark.parametrize("value", ["yes", "1", "True", ""])
def test_a_bad_needs_review_filter_is_a_400_naming_it(auth_client, make_task, value):
    make_task()
    response = auth_client.get("/api/tasks/", {"needs_review": value})
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["needs_review"]


def test_a_real_local_run_records_the_engine_that_made_it(auth_client, make_task, settings):
    from generation.engine import ENGINE_VERSION

    # A small photo on the smallest canvas keeps the real engine cheap here.
    task = make_task(image=product_photo(160, 120), options=parse_job({"preset": "ebay", "size": "500"}).to_options())
    run_worker_once(settings, "local")
    body = auth_client.get(f"/api/tasks/{task.pk}/").json()
    assert body["status"] == "completed", body
    engine = body["engine"]
    assert set(engine) == {"backend", "segmenter", "model", "model_sha256", "version"}
    assert engine["backend"] == "local" and engine["version"] == ENGINE_VERSION
    assert engine["segmenter"]
    if engine["model"] is not None:  # a learned model: its file and checksum are named
        assert len(engine["model_sha256"]) == 64
    assert isinstance(body["needs_review"], bool)
    assert body["needs_review"] == body["compliance"]["needs_review"]
    mask = Image.open(io.BytesIO(b"".join(auth_client.get(f"/api/tasks/{task.pk}/mask/").streaming_content)))
    assert (mask.mode, mask.size) == ("L", (160, 120))


def test_the_openapi_schema_describes_the_review_fields_the_filter_and_the_mask(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    mask = schema["paths"]["/api/tasks/{id}/mask/"]["get"]
    assert "image/png" in mask["responses"]["200"]["content"] and "404" in mask["responses"]
    listing = {p["name"]: p for p in schema["paths"]["/api/tasks/"]["get"]["parameters"]}
    assert sorted(listing["needs_review"]["schema"]["enum"]) == ["false", "true"]
    task = schema["components"]["schemas"]["Task"]["properties"]
    assert task["needs_review"]["type"] == "boolean"
    assert task["engine"]["nullable"] is True or "oneOf" in task["engine"] or "allOf" in task["engine"]
    engine = schema["components"]["schemas"]["Engine"]["properties"]
    assert set(engine) == {"backend", "segmenter", "model", "model_sha256", "version"}
    submit = schema["paths"]["/api/tasks/"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    fields = schema["components"]["schemas"][submit["$ref"].rsplit("/", 1)[-1]]["properties"]
    assert {"background", "fit", "shadow", "hint_box"} <= set(fields)
