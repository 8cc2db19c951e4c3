"""``Client.submit_batch`` by URL against a real daphne + worker fetching from a loopback photo server."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from generation.models import Batch, GenerationTask
from imagegen_client import Client, ImagegenError

from .conftest import photo_variant
from .photo_server import FETCH_ENV, serve_photos

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_of_urls_is_fetched_by_the_server_and_a_repeat_with_its_key_returns_it(
        live_server_factory: Any, seller: Any, tmp_path: Path) -> None:
    server = live_server_factory(**FETCH_ENV)
    photos = {f"/catalogue/sku-{i}.jpg": photo_variant(i) for i in range(3)}
    with serve_photos(photos) as (base, hits), Client(server.url, username=seller.username,
                                                        password="seller-pass-123") as client:
        urls = [base + path for path in photos]
        batch = client.submit_batch(image_urls=urls, preset="etsy", client_ref="spring", idempotency_key="urls-1")
        again = client.submit_batch(image_urls=urls, preset="etsy", client_ref="spring", idempotency_key="urls-1")
        finished = [client.wait(task_id, timeout=60) for task_id in batch["tasks"]]
        client.download_archive(batch["id"], tmp_path / "spring.zip")
        latest = client.get_batch(batch["id"])

    assert (again["id"], len(batch["tasks"]), batch["client_ref"]) == (batch["id"], 3, "spring")
    assert [t["image_url"] for t in finished] == urls  # in the given order, one task each
    assert {t["status"] for t in finished} == {"completed"}
    assert {t["options"]["preset"] for t in finished} == {"etsy"}
    assert (latest["status"], latest["counts"]["completed"]) == ("completed", 3)
    assert sorted(hits) == sorted(photos)  # fetched once each, by the worker
    with zipfile.ZipFile(tmp_path / "spring.zip") as archive:
        assert sorted(n for n in archive.namelist() if n != "manifest.csv") == ["sku-0.jpg", "sku-1.jpg", "sku-2.jpg"]
    assert Batch.objects.filter(user=seller).count() == 1


def test_a_refused_url_names_its_place_and_creates_nothing(live_server_factory: Any, seller: Any) -> None:
    server = live_server_factory(**FETCH_ENV)
    with Client(server.url, username=seller.username, password="seller-pass-123") as client:
        with pytest.raises(ImagegenError) as refused:
            client.submit_batch(image_urls=["https://shop.example/a.jpg", "ftp://shop.example/b.jpg"])
        with pytest.raises(ValueError, match="exactly one of photos and image_urls"):
            client.submit_batch()
        with pytest.raises(TypeError, match="not one URL"):
            client.submit_batch(image_urls="https://shop.example/a.jpg")

    assert refused.value.status_code == 400
    assert list(refused.value.errors) == ["image_urls[1]"]
    assert not Batch.objects.filter(user=seller).exists()
    assert not GenerationTask.objects.filter(user=seller).exists()
