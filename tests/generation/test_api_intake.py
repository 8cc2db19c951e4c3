"""Submit options of the intake: client_ref, expires_in, Prefer: wait (its header), idempotency reuse,
and image_url's checks at submit. Through the API; the expiry transition through the model and the worker."""
from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections, transaction
from django.utils import timezone

from generation.models import GenerationTask
from generation.worker import Worker
from notifications.models import Event
from tests.conftest import product_photo, require_postgresql

pytestmark = pytest.mark.django_db

QUICK = "tests.generation.backends.QuickBackend"


def upload(data: bytes | None = None, **fields: Any) -> dict[str, Any]:
    return {"image": SimpleUploadedFile("photo.jpg", data or product_photo(), content_type="image/jpeg"), **fields}


def post(client: Any, data: dict[str, Any], **headers: str) -> Any:
    return client.post("/api/tasks/", data, format="multipart", **headers)


def stored_files(settings: Any) -> list[str]:
    return sorted(p.name for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file())


def events_of(task_id: int) -> list[Event]:
    return list(Event.objects.filter(task_id=task_id).order_by("seq"))


# --- client_ref -------------------------------------------------------------------------------
def test_client_ref_is_stored_echoed_in_every_event_and_filters_the_list(auth_client, make_task, settings):
    settings.IMAGEGEN_BACKEND = QUICK
    created = post(auth_client, upload(client_ref="SKU-42/blue"))
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["client_ref"] == "SKU-42/blue"
    post(auth_client, upload(client_ref="SKU-43"))
    make_task()  # no client_ref
    while Worker(worker_id="ref").run_once():
        pass
    events = events_of(body["id"])
    assert [e.type for e in events][0] == "task_created" and events[-1].type == "task_complete"
    assert {e.data["client_ref"] for e in events} == {"SKU-42/blue"}
    listed = auth_client.get("/api/tasks/", {"client_ref": "SKU-42/blue"}).json()
    assert [t["id"] for t in listed["results"]] == [body["id"]]
    assert auth_client.get("/api/tasks/", {"client_ref": "nope"}).json()["results"] == []
    assert auth_client.get(f"/api/tasks/{body['id']}/").json()["client_ref"] == "SKU-42/blue"


def test_a_client_ref_over_200_characters_is_a_400_that_creates_nothing(auth_client):
    assert post(auth_client, upload(client_ref="x" * 200)).status_code == 201
    response = post(auth_client, upload(client_ref="x" * 201))
    assert response.status_code == 400
    assert "client_ref" in response.json()["errors"] and "200" in response.json()["detail"]
    assert GenerationTask.objects.count() == 1


def test_a_client_ref_filter_with_a_null_character_is_a_400_naming_it(auth_client, make_task):
    # No client_ref can hold NUL (submit refuses it), and PostgreSQL refuses it as a parameter.
    make_task()
    response = auth_client.get("/api/tasks/", {"client_ref": "SKU\x00"})
    assert response.status_code == 400
    assert response.json()["detail"] == "client_ref: Null characters are not allowed."


def test_the_admin_finds_a_task_by_its_client_ref(client, staff_user, make_task, user):
    staff_user.is_superuser = True
    staff_user.save()
    task = make_task()
    other = GenerationTask.submit(user=user, image=SimpleUploadedFile("i.jpg", product_photo()),
                                  content_type="image/jpeg", options=task.options, client_ref="SKU-ADMIN-7")[0]
    client.force_login(staff_user)
    page = client.get("/admin/generation/generationtask/", {"q": "SKU-ADMIN"})
    assert page.status_code == 200
    assert f"/admin/generation/generationtask/{other.pk}/change/" in page.content.decode()
    assert f"/admin/generation/generationtask/{task.pk}/change/" not in page.content.decode()


# --- expires_in -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "86401", "-5", "1.5", "soon"])
def test_a_bad_expires_in_is_a_400_naming_it(auth_client, value):
    response = post(auth_client, upload(expires_in=value))
    assert response.status_code == 400, response.json()
    assert "expires_in" in response.json()["errors"]
    assert GenerationTask.objects.count() == 0


def test_expires_in_sets_the_deadline_in_the_task_json(auth_client):
    body = post(auth_client, upload(expires_in="600")).json()
    task = GenerationTask.objects.get(pk=body["id"])
    assert task.expires_at == task.created_at + timedelta(seconds=600)
    assert body["expires_at"] == task.expires_at.isoformat().replace("+00:00", "Z")


def test_an_expired_task_is_never_claimed_and_ends_canceled_expired_with_its_event(make_task, settings):
    settings.IMAGEGEN_BACKEND = QUICK
    keep = make_task()
    late = make_task()
    GenerationTask.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    worker = Worker(worker_id="expiry")
    while worker.run_once():
        pass
    late.refresh_from_db()
    keep.refresh_from_db()
    assert keep.status == "completed"
    assert (late.status, late.attempts, late.started_at) == ("pending", 0, None)  # skipped, not started
    assert GenerationTask.expire_due() == [late.pk]
    late.refresh_from_db()
    assert (late.status, late.error_code) == ("canceled", "expired")
    assert "deadline" in late.error_message
    last = events_of(late.pk)[-1]
    assert last.type == "task_canceled" and last.data["error_code"] == "expired"
    assert GenerationTask.expire_due() == []  # once only
    assert len(events_of(late.pk)) == 2


def test_a_retry_of_an_expired_task_gets_its_expires_in_again(auth_client):
    body = post(auth_client, upload(expires_in="60")).json()
    task = GenerationTask.objects.get(pk=body["id"])
    GenerationTask.objects.filter(pk=task.pk).update(
        created_at=timezone.now() - timedelta(seconds=120), expires_at=timezone.now() - timedelta(seconds=60))
    assert GenerationTask.expire_due() == [task.pk]
    retried = auth_client.post(f"/api/tasks/{task.pk}/retry/").json()
    task.refresh_from_db()
    assert retried["status"] == "pending" and retried["error_code"] is None
    assert timedelta(seconds=59) < task.expires_at - timezone.now() <= timedelta(seconds=60)


@pytest.mark.django_db(transaction=True)
def test_a_task_another_sweeper_holds_is_skipped_not_expired_twice(make_task):
    require_postgresql("row locks")
    task = make_task()
    GenerationTask.objects.filter(pk=task.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    locked, release = threading.Event(), threading.Event()

    def other_sweeper() -> None:
        try:
            with transaction.atomic():
                list(GenerationTask.objects.select_for_update().filter(pk=task.pk))
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=other_sweeper)
    holder.start()
    assert locked.wait(10)
    try:
        assert GenerationTask.expire_due() == []  # skipped, not waited on
    finally:
        release.set()
        holder.join(10)
    assert GenerationTask.expire_due() == [task.pk]
    assert [e.type for e in events_of(task.pk)] == ["task_created", "task_canceled"]


# --- Prefer: wait (the header; the waiting itself is tested with real servers) --------------------
@pytest.mark.parametrize("value", ["wait=0", "wait=61", "wait=soon", "wait=", "wait=1.5", "respond-async, wait=-1"])
def test_a_bad_prefer_wait_is_a_400_naming_the_header_that_creates_nothing(auth_client, value):
    response = post(auth_client, upload(), HTTP_PREFER=value)
    assert response.status_code == 400, response.json()
    assert "Prefer" in response.json()["errors"] and "1 to 60" in response.json()["detail"]
    assert GenerationTask.objects.count() == 0


def test_other_preferences_are_ignored(auth_client):
    response = post(auth_client, upload(), HTTP_PREFER="return=minimal, respond-async")
    assert response.status_code == 201 and "Preference-Applied" not in response


# --- idempotency reuse ----------------------------------------------------------------------------
def test_an_idempotency_key_reused_with_another_file_or_options_is_a_422_that_creates_nothing(auth_client, settings):
    first = post(auth_client, upload(preset="amazon", client_ref="A"), HTTP_IDEMPOTENCY_KEY="k-9")
    assert first.status_code == 201
    files_before = stored_files(settings)
    for changed in (
        upload(product_photo(background=200), preset="amazon", client_ref="A"),  # another file
        upload(preset="taobao", client_ref="A"),  # other options
        upload(preset="amazon", client_ref="B"),  # another reference
        upload(preset="amazon", client_ref="A", expires_in="30"),
    ):
        response = post(auth_client, changed, HTTP_IDEMPOTENCY_KEY="k-9")
        assert response.status_code == 422, response.json()
        assert response.json()["code"] == "idempotency_key_reused"
        assert str(first.json()["id"]) in response.json()["detail"]
    same = post(auth_client, upload(preset="amazon", client_ref="A"), HTTP_IDEMPOTENCY_KEY="k-9")
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    assert GenerationTask.objects.count() == 1
    assert stored_files(settings) == files_before


def test_a_task_from_before_fingerprints_still_answers_a_repeat_with_200(auth_client):
    first = post(auth_client, upload(), HTTP_IDEMPOTENCY_KEY="old")
    GenerationTask.objects.filter(pk=first.json()["id"]).update(request_fingerprint="")
    again = post(auth_client, upload(preset="taobao"), HTTP_IDEMPOTENCY_KEY="old")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


# --- image_url at submit ----------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "words"), [
    ({"image_url": "https://93.184.215.14/a.jpg", "image": True}, "exactly one of image and image_url (both"),
    ({}, "exactly one of image and image_url (neither"),
])
def test_exactly_one_of_image_and_image_url_is_required(auth_client, fields, words):
    data = upload() if fields.pop("image", False) else {}
    response = post(auth_client, {**data, **fields})
    assert response.status_code == 400
    assert words in response.json()["detail"]
    assert GenerationTask.objects.count() == 0


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://93.184.215.14/a.jpg", "must start with https://"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://[::ffff:127.0.0.1]/a.jpg", "loopback"),
    ("https://localhost/a.jpg", "localhost resolves to"),
    ("not a url", "must start with https://"),
])
def test_a_forbidden_image_url_is_a_400_naming_it_and_why(auth_client, url, why):
    response = post(auth_client, {"image_url": url})
    assert response.status_code == 400, response.json()
    assert "image_url" in response.json()["errors"]
    assert why in response.json()["detail"], response.json()
    assert GenerationTask.objects.count() == 0


def test_an_image_url_task_is_pending_with_no_input_until_fetched(auth_client, settings):
    settings.IMAGEGEN_FETCH_ALLOW_HTTP = settings.IMAGEGEN_FETCH_ALLOW_PRIVATE = True
    response = post(auth_client, {"image_url": "http://127.0.0.1:9/shoe.jpg", "preset": "taobao"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["image_url"], body["input_image_url"]) == (
        "pending", "http://127.0.0.1:9/shoe.jpg", None)
    assert auth_client.get(f"/api/tasks/{body['id']}/input/").status_code == 404
