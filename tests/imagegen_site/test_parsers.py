"""JSON bodies nested too deeply for Python's decoder are a 400 on every JSON endpoint, never a 500."""
from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000  # json.load raises RecursionError, not ValueError


def test_it_answers_400_to_a_deeply_nested_body_on_the_anonymous_token_endpoint(api_client: Any) -> None:
    response = api_client.post("/api/auth/token/", DEEP, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - the document is nested too deeply."}


@pytest.mark.parametrize("path", ["/api/keys/", "/api/webhooks/", "/api/batches/"])
def test_it_answers_400_to_a_deeply_nested_body_and_creates_nothing(auth_client: Any, path: str) -> None:
    response = auth_client.post(path, DEEP, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - the document is nested too deeply."}
    listed = auth_client.get(path).json()
    assert (listed if isinstance(listed, list) else listed["results"]) == []  # keys are not paged


def test_it_still_parses_an_ordinary_body(api_client: Any, user: Any) -> None:
    response = api_client.post("/api/auth/token/", {"username": user.username, "password": "wrong"}, format="json")
    assert response.status_code == 401
