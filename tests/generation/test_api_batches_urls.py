"""Batches from photo URLs (JSON ``image_urls``): fetched by the worker like any ``image_url`` task."""
from __future__ import annotations

import io
import zipfile

import pytest

from generation.engine.spec import JobSpec
from generation.models import Batch, GenerationTask
from notifications.models import Event

from .test_worker_fetch import PHOTO, Photos, drain, photos  # noqa: F401  (the loopback photo server)

pytestmark = pytest.mark.django_db


def test_a_batch_of_urls_is_fetched_processed_and_archived_under_the_urls_file_names(auth_client, photos):
    for name in ("red-shoe.jpg", "blue-shoe.jpg"):
        Photos.routes[f"/cat/{name}"] = [(200, {"Content-Type": "image/jpeg"}, PHOTO)]
    urls = [f"{photos}/cat/red-shoe.jpg", f"{photos}/cat/blue-shoe.jpg"]

    response = auth_client.post("/api/batches/", {"image_urls": urls, "preset": "etsy", "expires_in": 600},
                                format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    tasks = [GenerationTask.objects.get(pk=pk) for pk in body["tasks"]]
    assert [t.image_url for t in tasks] == urls and all(t.expires_at is not None for t in tasks)
    drain()
    assert auth_client.get(f"/api/batches/{body['id']}/").json()["status"] == "completed"
    archive = auth_client.get(f"/api/batches/{body['id']}/archive/")
    names = zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).namelist()
    assert names == ["red-shoe.jpg", "blue-shoe.jpg", "manifest.csv"]


def test_a_forbidden_or_malformed_url_is_a_400_naming_it_and_nothing_is_created(auth_client, photos):
    urls = [f"{photos}/ok.jpg", "ftp://example.com/a.jpg", 42]

    response = auth_client.post("/api/batches/", {"image_urls": urls}, format="json")

    assert response.status_code == 400
    assert sorted(response.json()["errors"]) == ["image_urls[1]", "image_urls[2]"]
    assert Batch.objects.count() == GenerationTask.objects.count() == Event.objects.count() == 0


def test_image_parts_and_urls_are_not_mixed(auth_client):
    response = auth_client.post("/api/batches/", {"image_urls": [], "image": "x"}, format="json")

    assert response.status_code == 400 and "image" in response.json()["errors"]


def test_a_batch_that_expires_unstarted_ends_canceled_with_its_events(auth_client, photos, user):
    from datetime import timedelta

    from django.utils import timezone

    response = auth_client.post("/api/batches/", {"image_urls": [f"{photos}/a.jpg", f"{photos}/b.jpg"],
                                                  "expires_in": 60}, format="json")
    body = response.json()
    GenerationTask.objects.filter(batch_id=body["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert sorted(GenerationTask.expire_due()) == body["tasks"]

    batch = auth_client.get(f"/api/batches/{body['id']}/").json()
    assert batch["status"] == "completed" and batch["counts"]["canceled"] == 2  # expired, not canceled by its owner
    assert Event.objects.filter(user=user).order_by("-seq").first().type == "batch_complete"


@pytest.mark.parametrize("options, names", [
    ({"outputs": [{"preset": "amazon"}, {"preset": "etsy", "name": "shop"}]}, ["amazon", "shop"]),
    ({"outputs": '[{"preset": "amazon"}, {"preset": "etsy", "name": "shop"}]'}, ["amazon", "shop"]),
    ({"presets": ["amazon", "etsy"]}, ["amazon", "etsy"]),
])
def test_a_json_batch_takes_outputs_and_presets_as_lists_or_as_their_text(auth_client, photos, options, names):
    Photos.routes["/cat/shoe.jpg"] = [(200, {"Content-Type": "image/jpeg"}, PHOTO)]

    response = auth_client.post("/api/batches/", {"image_urls": [f"{photos}/cat/shoe.jpg"], **options}, format="json")

    assert response.status_code == 201, response.json()
    task = GenerationTask.objects.get(pk=response.json()["tasks"][0])
    assert [o.name for o in JobSpec.from_options(task.options).outputs] == names


def test_a_json_batch_refuses_outputs_that_are_no_list_naming_the_field(auth_client, photos):
    response = auth_client.post("/api/batches/", {"image_urls": [f"{photos}/a.jpg"], "outputs": {"preset": "amazon"}},
                                format="json")

    assert response.status_code == 400 and "outputs" in response.json()["errors"]
    assert Batch.objects.count() == GenerationTask.objects.count() == 0
