"""``/api/keys/``: create (shown once), list, revoke; ``Authorization: Api-Key`` on REST."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from apikeys.models import ApiKey

pytestmark = pytest.mark.django_db


def with_key(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


def create(auth_client: APIClient, name: str = "shop sync") -> dict:
    response = auth_client.post("/api/keys/", {"name": name}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_new_key_is_shown_once_and_listed_without_it(auth_client: APIClient) -> None:
    body = create(auth_client)
    key = ApiKey.objects.get()
    assert body == {"id": key.pk, "name": "shop sync", "key": body["key"], "prefix": body["key"][:12],
                    "created_at": body["created_at"], "last_used_at": None}
    assert body["key"].startswith("igk_") and len(body["key"]) > 40
    assert auth_client.get("/api/keys/").json() == [
        {"id": key.pk, "name": "shop sync", "prefix": body["key"][:12], "created_at": body["created_at"],
         "last_used_at": None}]


def test_the_key_itself_is_nowhere_in_the_database(auth_client: APIClient) -> None:
    raw = create(auth_client)["key"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM apikeys_apikey")
        rows = cursor.fetchall()
    assert len(rows) == 1
    assert not any(raw in str(value) or raw[4:] in str(value) for value in rows[0])


def test_a_key_acts_as_its_owner_on_rest(auth_client: APIClient, make_task: Any, user: Any, other_user: Any) -> None:
    mine = make_task()
    make_task(user=other_user)
    client = with_key(create(auth_client)["key"])
    response = client.get("/api/tasks/")
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["results"]] == [mine.pk]


def test_its_use_is_recorded_at_most_once_a_minute(auth_client: APIClient) -> None:
    client = with_key(create(auth_client)["key"])
    client.get("/api/tasks/")
    first = ApiKey.objects.get().last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=5)
    client.get("/api/tasks/")
    assert ApiKey.objects.get().last_used_at == first
    ApiKey.objects.update(last_used_at=first - timedelta(minutes=2))
    client.get("/api/tasks/")
    assert ApiKey.objects.get().last_used_at > first


def test_a_revoked_key_is_a_401_at_once_and_disappears_from_the_list(auth_client: APIClient) -> None:
    body = create(auth_client)
    client = with_key(body["key"])
    assert client.get("/api/tasks/").status_code == 200
    assert auth_client.delete(f"/api/keys/{body['id']}/").status_code == 204
    response = client.get("/api/tasks/")
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid or revoked API key."})
    assert auth_client.get("/api/keys/").json() == []
    assert ApiKey.objects.get().revoked_at is not None  # kept for the admin
    assert auth_client.delete(f"/api/keys/{body['id']}/").status_code == 404


@pytest.mark.parametrize("header", ["Api-Key igk_unknown", "Api-Key ", "api-key nope"])
def test_an_unknown_key_is_a_401(header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/tasks/")
    assert (response.status_code, response.json()["detail"]) == (401, "Invalid or revoked API key.")


def test_an_inactive_owners_key_is_a_401(auth_client: APIClient, user: Any) -> None:
    client = with_key(create(auth_client)["key"])
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert client.get("/api/tasks/").status_code == 401


def test_a_key_cannot_manage_keys(auth_client: APIClient) -> None:
    body = create(auth_client)
    client = with_key(body["key"])
    detail = "API keys cannot manage API keys; sign in with a token or a session."
    for response in (client.post("/api/keys/", {"name": "more"}, format="json"), client.get("/api/keys/"),
                     client.delete(f"/api/keys/{body['id']}/")):
        assert (response.status_code, response.json()["detail"]) == (403, detail)
    assert ApiKey.objects.count() == 1 and ApiKey.objects.get().revoked_at is None


def test_another_users_key_cannot_be_seen_or_revoked(auth_client: APIClient, other_client: APIClient) -> None:
    body = create(auth_client)
    assert other_client.get("/api/keys/").json() == []
    assert other_client.delete(f"/api/keys/{body['id']}/").status_code == 404
    assert ApiKey.objects.get().revoked_at is None


@pytest.mark.parametrize("payload, detail", [
    ({}, "name: This field is required."),
    ({"name": ""}, "name: This field may not be blank."),
    ({"name": "x" * 101}, "name: Ensure this field has no more than 100 characters."),
    ({"name": 0}, "name: Not a valid string."),
])
def test_a_bad_name_is_a_400_and_creates_nothing(auth_client: APIClient, payload: dict, detail: str) -> None:
    response = auth_client.post("/api/keys/", payload, format="json")
    assert (response.status_code, response.json()["detail"]) == (400, detail)
    assert ApiKey.objects.count() == 0


def test_keys_need_a_login(api_client: APIClient) -> None:
    assert api_client.get("/api/keys/").status_code == 401
    assert api_client.post("/api/keys/", {"name": "x"}, format="json").status_code == 401
