"""image_url: the worker fetches the photo through the URL guard, from a real HTTP server on loopback
that the test starts, checks it like an upload and stores it as the task's input."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from generation.models import GenerationTask
from generation.worker import Worker
from imagegen_site import urlguard
from notifications.models import Event
from tests.conftest import product_photo
from tests.loopback_http import Script, serve

pytestmark = pytest.mark.django_db

QUICK = "tests.generation.backends.QuickBackend"
PHOTO = product_photo()


Photos = Script()  # the photo server's routes and the paths it was asked for


@pytest.fixture
def photos(settings: Any) -> Iterator[str]:
    settings.IMAGEGEN_BACKEND = QUICK
    settings.IMAGEGEN_FETCH_ALLOW_HTTP = True
    settings.IMAGEGEN_FETCH_ALLOW_PRIVATE = True
    settings.IMAGEGEN_MAX_ATTEMPTS = 3
    Photos.routes, Photos.hits = {}, []
    yield from serve("127.0.0.1", Photos)


def submit(client: Any, url: str, **fields: str) -> dict[str, Any]:
    response = client.post("/api/tasks/", {"image_url": url, **fields}, format="multipart")
    assert response.status_code == 201, response.json()
    return response.json()


def drain() -> None:
    worker = Worker(worker_id="fetch")
    while worker.run_once():
        pass


def test_a_photo_at_an_image_url_is_fetched_stored_as_the_input_and_processed(auth_client, photos):
    Photos.routes["/shoe.jpg"] = [(200, {"Content-Type": "image/jpeg"}, PHOTO)]
    body = submit(auth_client, f"{photos}/shoe.jpg", client_ref="SKU-1")
    drain()
    task = auth_client.get(f"/api/tasks/{body['id']}/").json()
    assert (task["status"], task["attempts"], task["error_code"]) == ("completed", 1, None)
    assert task["input_image_url"] == f"/api/tasks/{body['id']}/input/"
    stored = auth_client.get(task["input_image_url"])
    assert stored.status_code == 200 and stored["Content-Type"] == "image/jpeg"
    assert b"".join(stored.streaming_content) == PHOTO
    assert Photos.hits == ["/shoe.jpg"]
    # the event that recorded the input carries its URL, as the REST body does
    updates = [e.data for e in Event.objects.filter(task_id=body["id"]).order_by("seq")]
    assert any(d["status"] == "processing" and d["input_image_url"] for d in updates)


def test_a_server_error_is_retried_and_the_second_attempt_completes(auth_client, photos):
    Photos.routes["/flaky.jpg"] = [(503, {}, b"busy"), (200, {}, PHOTO)]
    body = submit(auth_client, f"{photos}/flaky.jpg")
    drain()
    task = GenerationTask.objects.get(pk=body["id"])
    assert (task.status, task.attempts) == ("completed", 2)
    statuses = [e.data["status"] for e in Event.objects.filter(task_id=task.pk).order_by("seq")]
    assert statuses.count("processing") >= 2 and statuses[-1] == "completed"
    failed_attempt = next(e.data for e in Event.objects.filter(task_id=task.pk).order_by("seq")
                          if e.data["error_code"] == "fetch_failed")
    assert "503" in failed_attempt["error_message"]


@pytest.mark.parametrize(("route", "words"), [
    ((404, {}, b"gone"), "the server answered 404"),
    ((200, {"Content-Type": "text/html"}, b"<html>a shop page, not a photo</html>"), "not an image"),
    ((200, {}, b"\xff\xd8\xff" + b"\0" * 64), "damaged or incomplete"),
    ((302, {"Location": "file:///etc/passwd"}, b""), "file"),
], ids=["404", "not-an-image", "truncated-jpeg", "redirect-to-file"])
def test_a_fetch_that_cannot_succeed_fails_at_once_with_fetch_failed_saying_why(auth_client, photos, route, words):
    Photos.routes["/x"] = [route]
    body = submit(auth_client, f"{photos}/x")
    drain()
    task = GenerationTask.objects.get(pk=body["id"])
    assert (task.status, task.attempts, task.error_code) == ("failed", 1, "fetch_failed")
    assert words in task.error_message, task.error_message
    assert not task.input_image  # nothing stored for a bad fetch


def test_a_photo_over_the_upload_limit_fails_as_too_large(auth_client, photos, settings):
    settings.IMAGEGEN_MAX_UPLOAD_BYTES = len(PHOTO) - 1
    Photos.routes["/big.jpg"] = [(200, {}, PHOTO)]
    body = submit(auth_client, f"{photos}/big.jpg")
    drain()
    task = GenerationTask.objects.get(pk=body["id"])
    assert (task.status, task.error_code) == ("failed", "fetch_failed")
    assert f"more than the limit of {len(PHOTO) - 1}" in task.error_message


def test_a_hint_box_outside_the_fetched_photo_fails_as_invalid_options(auth_client, photos):
    Photos.routes["/shoe.jpg"] = [(200, {}, PHOTO)]  # 640 x 480
    body = submit(auth_client, f"{photos}/shoe.jpg", hint_box="10,10,700,400")
    drain()
    task = GenerationTask.objects.get(pk=body["id"])
    assert (task.status, task.error_code) == ("failed", "invalid_options")
    assert "640x480" in task.error_message


def test_a_redirect_to_a_forbidden_address_fails_the_task(auth_client, photos, settings, monkeypatch):
    # 127.0.0.1 stands in for a public server; its redirect points at another loopback
    # address, which the guard refuses as it would refuse any private one.
    def loopback_one_is_public(address: urlguard.IPAddress) -> str | None:
        return None if address == ipaddress.ip_address("127.0.0.1") else urlguard.public_only(address)

    other = serve("127.0.0.2", Photos)  # the same routes, and hits counted across both
    other_base = next(other)
    try:
        Photos.routes["/hop"] = [(302, {"Location": f"{other_base}/shoe.jpg"}, b"")]
        Photos.routes["/shoe.jpg"] = [(200, {}, PHOTO)]
        body = submit(auth_client, f"{photos}/hop")
        settings.IMAGEGEN_FETCH_ALLOW_PRIVATE = False
        monkeypatch.setattr(urlguard, "default_policy", lambda: loopback_one_is_public)
        drain()
    finally:
        next(other, None)
    task = GenerationTask.objects.get(pk=body["id"])
    assert (task.status, task.attempts, task.error_code) == ("failed", 1, "fetch_failed")
    assert "127.0.0.2 is a loopback address" in task.error_message
    assert Photos.hits == ["/hop"]  # the forbidden hop was never requested


def test_with_private_addresses_off_localhost_is_a_400_at_submit(auth_client, photos, settings):
    settings.IMAGEGEN_FETCH_ALLOW_PRIVATE = False
    port = photos.rsplit(":", 1)[1]
    response = auth_client.post("/api/tasks/", {"image_url": f"http://localhost:{port}/shoe.jpg"}, format="multipart")
    assert response.status_code == 400
    assert "image_url" in response.json()["errors"]
    assert "localhost resolves to" in response.json()["detail"] and "loopback" in response.json()["detail"]
    assert GenerationTask.objects.count() == 0 and Photos.hits == []


def test_a_retry_after_the_fetch_reuses_the_stored_input(auth_client, photos, settings):
    settings.IMAGEGEN_BACKEND = "tests.generation.backends.FlakyBackend"
    from tests.generation.backends import FlakyBackend

    FlakyBackend.calls, FlakyBackend.failures = 0, 1
    Photos.routes["/shoe.jpg"] = [(200, {}, PHOTO)]
    body = submit(auth_client, f"{photos}/shoe.jpg")
    drain()
    task = GenerationTask.objects.get(pk=body["id"])
    assert (task.status, task.attempts) == ("completed", 2)
    assert Photos.hits == ["/shoe.jpg"]  # fetched once
