"""A multipart body the parser cannot read is a JSON 400 that names the problem and creates nothing."""
from __future__ import annotations

from typing import Any

import pytest

from generation.models import GenerationTask

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("content_type, detail", [
    ("multipart/form-data", "Multipart form parse error - Invalid boundary in multipart: None"),
    ("multipart/form-data; boundary=", "Multipart form parse error - Invalid boundary in multipart: "),
])
def test_a_multipart_body_without_a_boundary_is_a_json_400(auth_client: Any, content_type: str, detail: str) -> None:
    response = auth_client.generic("POST", "/api/tasks/", b"--x\r\n\r\nabc", content_type=content_type)
    assert response.status_code == 400
    assert response.json() == {"detail": detail}
    assert not GenerationTask.objects.exists()
