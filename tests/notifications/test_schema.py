"""The OpenAPI description of events matches the events the log really holds."""
from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from generation.worker import Worker
from notifications.models import Event
from tests.conftest import product_photo

pytestmark = pytest.mark.django_db

JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/components/schemas/"), ref
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]  # a KeyError: a dangling reference


def test_a_completed_events_outputs_have_exactly_the_fields_and_types_the_schema_lists(
    auth_client: Any, settings: Any
) -> None:
    settings.IMAGEGEN_BACKEND = "local"
    settings.IMAGEGEN_SEGMENTER = "classical"
    created = auth_client.post("/api/tasks/", {"image": SimpleUploadedFile("mug.jpg", product_photo()),
                                               "presets": "amazon,taobao"}, format="multipart")
    assert created.status_code == 201, created.content
    assert Worker(worker_id="schema").run_once() is True
    event = Event.objects.get(task_id=created.json()["id"], type="task_complete")

    schema = auth_client.get("/api/schema/?format=json").json()
    outputs = schema["components"]["schemas"]["Event"]["properties"]["data"]["properties"]["outputs"]
    item = resolve(schema, outputs["items"])

    assert set(item["required"]) == set(item["properties"]) == {
        "name", "preset", "format", "width", "height", "bytes", "url", "compliance"}
    assert [o["name"] for o in event.data["outputs"]] == ["amazon", "taobao"]
    for output in event.data["outputs"]:
        assert set(output) == set(item["properties"])
        for name, field in item["properties"].items():
            if output[name] is None:
                assert field.get("nullable"), name
            elif "type" in field:
                assert isinstance(output[name], JSON_TYPES[field["type"]]), (name, output[name])
    # The task JSON's outputs are the same objects under the same schema.
    task = schema["components"]["schemas"]["Task"]["properties"]["outputs"]
    assert resolve(schema, task["items"]) is item
