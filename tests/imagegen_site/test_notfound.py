"""Unknown paths under /api/ answer the API's JSON error, never Django's HTML 404 page."""
from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("debug", [True, False])
def test_it_answers_json_404_for_an_unknown_api_path(auth_client: Any, settings: Any, debug: bool) -> None:
    settings.DEBUG = debug  # with DEBUG on, Django's own 404 page lists every URL pattern
    response = auth_client.get("/api/nothing/here/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found: no API endpoint at /api/nothing/here/."}


def test_it_answers_json_404_without_credentials_and_for_any_method(api_client: Any) -> None:
    response = api_client.post("/api/nothing/", {"a": 1}, format="json")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found: no API endpoint at /api/nothing/."})


def test_it_still_redirects_a_get_without_the_trailing_slash(auth_client: Any) -> None:
    response = auth_client.get("/api/tasks?status=pending")
    assert response.status_code == 301
    assert response["Location"] == "/api/tasks/?status=pending"


def test_it_names_the_slash_when_a_post_misses_it(auth_client: Any) -> None:
    response = auth_client.post("/api/tasks", {}, format="json")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found: API paths end with a slash (/api/tasks/)."})


def test_it_leaves_paths_outside_the_api_alone(client: Any) -> None:
    assert client.get("/healthz").status_code in (200, 503)
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_a_post_without_csrf_token_to_an_unknown_path_is_a_json_404(user: Any) -> None:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)  # a session, as the page has: Django would answer an HTML 403 for CSRF
    response = client.post("/api/tasks/x.y/cancel/")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found: no API endpoint at /api/tasks/x.y/cancel/."})


@pytest.mark.django_db
def test_a_path_with_an_encoded_newline_is_a_json_404_too(auth_client: Any) -> None:
    response = auth_client.post("/api/webhooks/1/deliveries/%0A/redeliver/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
