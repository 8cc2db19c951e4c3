"""Bodies Django refuses to read (too big, too many fields or files) are the API's JSON 400, not Django's HTML page."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apikeys.models import ApiKey
from generation.models import GenerationTask
from tests.conftest import product_photo

pytestmark = pytest.mark.django_db


def test_a_json_body_over_the_memory_limit_is_a_json_400_that_creates_nothing(auth_client: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = auth_client.post("/api/keys/", json.dumps({"name": "x" * 2000}), content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "The request body is larger than the limit of 1000 bytes."}
    assert ApiKey.objects.count() == 0


def test_a_submit_with_too_many_fields_is_a_json_400_that_creates_nothing(auth_client: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    data = {"image": SimpleUploadedFile("a.jpg", product_photo()), **{f"f{i}": "x" for i in range(11)}}
    response = auth_client.post("/api/tasks/", data, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"detail": "The request has more than 10 fields."}
    assert GenerationTask.objects.count() == 0


def test_a_submit_with_too_many_files_is_a_json_400_that_creates_nothing(auth_client: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    images = [SimpleUploadedFile(f"{i}.jpg", product_photo()) for i in range(3)]
    response = auth_client.post("/api/tasks/", {"image": images}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"detail": "The request has more than 2 files."}
    assert GenerationTask.objects.count() == 0
