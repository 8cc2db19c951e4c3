"""Several outputs per task, through the API: one upload, one cut, a file and a report per output."""
from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from generation.models import GenerationTask, TaskOutput
from generation.worker import Worker
from notifications.models import Event
from tests.conftest import product_photo

pytestmark = pytest.mark.django_db

THREE = json.dumps([
    {"preset": "amazon", "size": 1000},
    {"preset": "taobao"},
    {"name": "shop", "preset": "shopify", "size": 800, "background": "transparent"},
])


def submit(client: Any, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/tasks/", {"image": SimpleUploadedFile("photo.jpg", product_photo()), **fields},
                           format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def run_local(settings: Any) -> None:
    # Rendering per output does not depend on which segmenter cut the product; the classical
    # one is ~10x cheaper than the model (a thread that built the model backend first keeps it).
    settings.IMAGEGEN_BACKEND = "local"
    settings.IMAGEGEN_SEGMENTER = "classical"
    assert Worker(worker_id="outputs").run_once() is True


def download(client: Any, url: str) -> tuple[Any, bytes]:
    response = client.get(url, HTTP_ACCEPT="image/*")
    return response, b"".join(response.streaming_content) if response.status_code == 200 else response.content


def stored_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_three_outputs_are_three_files_with_their_own_size_format_and_report(auth_client, settings):
    created = submit(auth_client, outputs=THREE)
    run_local(settings)
    body = auth_client.get(f"/api/tasks/{created['id']}/").json()
    assert body["status"] == "completed", body
    outputs = body["outputs"]
    assert [(o["name"], o["preset"], o["format"], o["width"], o["height"]) for o in outputs] == [
        ("amazon", "amazon", "jpeg", 1000, 1000),
        ("taobao", "taobao", "jpeg", 800, 800),
        ("shop", "shopify", "png", 800, 800),
    ]
    files = []
    for output in outputs:
        response, data = download(auth_client, output["url"])
        assert response.status_code == 200
        assert response["Content-Type"] == {"jpeg": "image/jpeg", "png": "image/png"}[output["format"]]
        assert len(data) == output["bytes"]
        image = Image.open(io.BytesIO(data))
        assert image.size == (output["width"], output["height"])
        assert image.format == output["format"].upper()
        # Each report is about its own file: its preset, its canvas, its bytes.
        report = output["compliance"]
        assert report["preset"] == output["preset"] and report["passed"] is True, report
        assert report["checks"]["dimensions"]["value"] == [output["width"], output["height"]]
        assert report["checks"]["bytes"]["value"] == output["bytes"]
        files.append(data)
    assert len(set(files)) == 3
    assert Image.open(io.BytesIO(files[2])).mode == "RGBA"  # the transparent one
    assert "no_shadow" in outputs[1]["compliance"]["checks"]  # Taobao's own rule, only in its report
    # The first output is still the task's result and report.
    assert body["result_image_url"] == f"/api/tasks/{body['id']}/result/"
    assert body["compliance"] == outputs[0]["compliance"]
    assert body["needs_review"] is any(o["compliance"]["needs_review"] for o in outputs)
    assert body["options"]["outputs"][2]["name"] == "shop"

    # ?output= by name or index; the default is the first; an unknown one is a 404 naming it.
    base = f"/api/tasks/{body['id']}/result/"
    assert download(auth_client, base)[1] == download(auth_client, base + "?output=0")[1] == files[0]
    assert download(auth_client, base + "?output=amazon")[1] == files[0]
    assert download(auth_client, base + "?output=shop")[1] == download(auth_client, base + "?output=2")[1] == files[2]
    response, _ = download(auth_client, base + "?output=shop")
    assert f'filename="task-{body["id"]}-shop.png"' in response["Content-Disposition"]
    for wanted in ("walmart", "3", "Shop"):
        missing = auth_client.get(base + f"?output={wanted}")
        assert missing.status_code == 404 and missing["Content-Type"] == "application/json"
        assert repr(wanted) in missing.json()["detail"] and "amazon, taobao, shop" in missing.json()["detail"]

    # The completing event carries the outputs exactly as the REST body; earlier events list none.
    complete = Event.objects.get(task_id=body["id"], type="task_complete")
    assert complete.data["outputs"] == outputs
    earlier = Event.objects.filter(task_id=body["id"]).exclude(type="task_complete")
    assert earlier.exists() and all(e.data["outputs"] == [] for e in earlier)
    assert auth_client.get("/api/tasks/").json()["results"][0]["outputs"] == outputs


def test_presets_is_one_output_per_preset_sharing_the_top_level_fields(auth_client, settings):
    created = submit(auth_client, presets="amazon, shopify", size="1000", shadow="soft")
    assert [(o["name"], o["size"], o["shadow"]) for o in created["options"]["outputs"]] == [
        ("amazon", 1000, "soft"), ("shopify", 1000, "soft")]
    run_local(settings)
    body = auth_client.get(f"/api/tasks/{created['id']}/").json()
    assert [(o["name"], o["width"], o["height"]) for o in body["outputs"]] == [
        ("amazon", 1000, 1000), ("shopify", 1000, 1000)]
    assert {o["compliance"]["passed"] for o in body["outputs"]} == {True}


def test_a_portrait_preset_renders_portrait_and_passes_its_own_checks(auth_client, settings):
    created = submit(auth_client, preset="zalando")
    run_local(settings)
    body = auth_client.get(f"/api/tasks/{created['id']}/").json()
    assert body["status"] == "completed", body
    report = body["compliance"]
    assert report["passed"] is True, report
    assert report["checks"]["aspect"]["status"] == "passed" and "square" not in report["checks"]
    assert report["checks"]["dimensions"]["value"] == [1801, 2600]
    _, data = download(auth_client, body["result_image_url"])
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert pixels.shape == (2600, 1801, 3)
    # The wide product is bound by the canvas width: 85 % of it, centred, white around.
    dark = np.argwhere(pixels.min(axis=2) < 250)
    (top, left), (bottom, right) = dark.min(axis=0), dark.max(axis=0)
    assert abs((right - left + 1) / 1801 - 0.85) < 0.01
    assert abs((top + bottom) / 2 - 1299.5) < 26 and abs((left + right) / 2 - 900) < 19
    assert (pixels[:40] == 255).all() and (pixels[-40:] == 255).all()


def test_a_single_output_task_lists_its_result_as_its_one_output(auth_client, settings):
    created = submit(auth_client, preset="taobao")
    assert "outputs" not in created["options"]  # the stored form is as before
    run_local(settings)
    body = auth_client.get(f"/api/tasks/{created['id']}/").json()
    assert [(o["name"], o["width"], o["url"]) for o in body["outputs"]] == [
        ("taobao", 800, f"/api/tasks/{created['id']}/result/?output=taobao")]
    assert body["outputs"][0]["compliance"] == body["compliance"]


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"outputs": "not json"}, "outputs"),
        ({"outputs": '{"preset": "amazon"}'}, "outputs"),
        ({"outputs": "[]"}, "outputs"),
        ({"outputs": json.dumps([{"preset": "amazon"}] * 9)}, "outputs"),
        ({"outputs": '[{"preset": "amazon"}, "taobao"]'}, "outputs[1]"),
        ({"outputs": '[{"preset": "amazon"}, {"preset": "ebay", "format": "png"}]'}, "outputs[1].format"),
        ({"outputs": '[{"preset": "nowhere"}]'}, "outputs[0].preset"),
        ({"outputs": '[{"preset": "taobao", "size": 900}]'}, "outputs[0].size"),
        ({"outputs": '[{"colour": "red"}]'}, "outputs[0].colour"),
        ({"outputs": '[{"hint_box": "1,1,50,50"}]'}, "outputs[0].hint_box"),
        ({"outputs": '[{"name": "a"}, {"name": "A"}]'}, "outputs[1].name"),
        ({"outputs": '[{"name": "12"}]'}, "outputs[0].name"),
        ({"outputs": '[{"name": "../x"}]'}, "outputs[0].name"),
        ({"outputs": '[{"preset": "taobao"}]', "size": "2000"}, "outputs[0].size"),
        ({"presets": "amazon,nowhere"}, "presets[1]"),
        ({"presets": "amazon,amazon"}, "presets[1]"),
        ({"presets": "amazon", "outputs": '[{"preset": "amazon"}]'}, "presets"),
        ({"presets": "amazon,taobao", "preset": "ebay"}, "preset"),
    ],
    ids=["not-json", "object", "empty", "nine", "not-an-object", "format-for-preset", "preset", "size",
         "unknown-field", "hint-box-per-output", "duplicate-name", "numeric-name", "unsafe-name",
         "top-level-size", "presets-unknown", "presets-twice", "both", "preset-and-presets"],
)
def test_bad_outputs_are_a_400_naming_the_part_that_creates_nothing(auth_client, settings, fields, field):
    response = auth_client.post(
        "/api/tasks/", {"image": SimpleUploadedFile("photo.jpg", product_photo()), **fields}, format="multipart")
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body["errors"]) == [field], body
    assert body["detail"].startswith(f"{field}: ")
    assert GenerationTask.objects.count() == 0 and Event.objects.count() == 0
    assert stored_files(settings) == []


def test_retention_deletes_every_output_file(auth_client, settings, django_capture_on_commit_callbacks):
    from generation import retention

    created = submit(auth_client, presets="taobao,pinduoduo,lazada", size="800")
    run_local(settings)
    task = GenerationTask.objects.get(pk=created["id"])
    names = [o.file.name for o in task.rendered_outputs()]
    assert len(names) == 3 and all((Path(settings.MEDIA_ROOT) / n).exists() for n in names)
    found = retention.purge_tasks(older_than=timedelta(0), dry_run=True)
    assert (found.tasks, found.files) == (1, 5)  # input, mask and three outputs
    with django_capture_on_commit_callbacks(execute=True):
        assert retention.delete_tasks([task.pk]) == [task.pk]
    assert TaskOutput.objects.count() == 0
    assert stored_files(settings) == []
