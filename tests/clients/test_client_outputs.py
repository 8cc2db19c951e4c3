"""The Python client's several outputs, against the real Django app in process (httpx's WSGI transport)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from PIL import Image
from rest_framework_simplejwt.tokens import AccessToken

from generation.worker import Worker
from imagegen_client import Client, ImagegenError
from tests.conftest import product_photo

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(user: Any) -> Iterator[Client]:
    # As Django's own test client does: a request must not close the test's connection (its
    # transaction holds the test's rows).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield Client("http://testserver", token=str(AccessToken.for_user(user)),
                     transport=httpx.WSGITransport(app=WSGIHandler()))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def test_submit_with_presets_and_outputs_and_download_each_output(client: Client, settings: Any,
                                                                   tmp_path: Path) -> None:
    settings.IMAGEGEN_BACKEND = "local"
    settings.IMAGEGEN_SEGMENTER = "classical"
    by_presets = client.submit(product_photo(), filename="shoe.jpg", presets=["taobao", "pinduoduo"])
    assert [o["name"] for o in by_presets["options"]["outputs"]] == ["taobao", "pinduoduo"]
    task = client.submit(product_photo(), filename="shoe.jpg", size=800,
                         outputs=[{"preset": "taobao"}, {"preset": "shopify", "format": "png", "name": "shop"}])
    while Worker(worker_id="client").run_once():
        pass
    done = client.get(task["id"])
    assert [(o["name"], o["format"], o["width"]) for o in done["outputs"]] == [("taobao", "jpeg", 800),
                                                                              ("shop", "png", 800)]
    shop = client.download(task["id"], tmp_path, output="shop")
    assert shop.name == f"task-{task['id']}-shop.png" and Image.open(shop).format == "PNG"
    second = client.download(task["id"], tmp_path / "second", output=1)
    assert second.read_bytes() == shop.read_bytes()
    first = client.download(task["id"], tmp_path)
    assert first.name == f"task-{task['id']}.jpg" and Image.open(first).size == (800, 800)
    with pytest.raises(ImagegenError) as missing:
        client.download(task["id"], tmp_path, output="amazon")
    assert missing.value.status_code == 404 and "'amazon'" in str(missing.value)
    assert list(tmp_path.glob("*.part")) == []


def test_submit_batch_encodes_outputs_presets_and_hint_box_as_submit_does(client: Client, tmp_path: Path) -> None:
    # str() of a list is Python's repr ("[{'preset': ...}]"), which the server refused as JSON.
    photo = tmp_path / "shoe.jpg"
    photo.write_bytes(product_photo())
    batch = client.submit_batch([photo], outputs=[{"preset": "taobao"}, {"preset": "shopify", "name": "shop"}],
                                hint_box=(100, 80, 540, 400))
    assert [(o["name"], o["preset"]) for o in batch["options"]["outputs"]] == [("taobao", "taobao"), ("shop", "shopify")]
    assert batch["options"]["hint_box"] == [100, 80, 540, 400]
    by_presets = client.submit_batch([photo], presets=["etsy", "ebay"])
    assert [o["name"] for o in by_presets["options"]["outputs"]] == ["etsy", "ebay"]
