"""The webhook endpoints' REST API: create (secret once), list, change, delete, rotate, the URL guard."""
from __future__ import annotations

import base64
import socket
from typing import Any

import pytest

from notifications.models import Event
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/imagegen"


@pytest.fixture(autouse=True)
def _example_resolves_publicly(monkeypatch: pytest.MonkeyPatch) -> None:
    """hooks.example.com answers with a public address; other names resolve for real (no network here)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def create(client: Any, **body: Any) -> Any:
    return client.post("/api/webhooks/", {"url": URL, "events": ["task_complete"], **body}, format="json")


def test_it_creates_an_endpoint_and_shows_its_secret_only_in_that_answer(auth_client: Any, user: Any) -> None:
    response = create(auth_client, events=["task_complete", "task_failed"], description="shop")
    assert response.status_code == 201, response.json()
    body = response.json()
    endpoint = WebhookEndpoint.objects.get()
    assert body == {
        "id": endpoint.pk, "url": URL, "events": ["task_complete", "task_failed"], "description": "shop",
        "enabled": True, "disabled_reason": "", "failing_since": None, "secret": endpoint.secret,
        "created_at": body["created_at"], "updated_at": body["updated_at"],
    }
    assert body["secret"].startswith("whsec_") and len(base64.b64decode(body["secret"][6:])) >= 24
    assert response["Location"] == f"/api/webhooks/{endpoint.pk}/"
    listed = auth_client.get("/api/webhooks/").json()
    assert [e["id"] for e in listed["results"]] == [endpoint.pk]
    assert "secret" not in listed["results"][0]
    assert "secret" not in auth_client.get(f"/api/webhooks/{endpoint.pk}/").json()


def test_an_endpoint_receives_events_from_its_creation_on(auth_client: Any, user: Any, make_task: Any) -> None:
    make_task()  # task_created #1, before the endpoint
    endpoint = WebhookEndpoint.objects.get(pk=create(auth_client, events=["*"]).json()["id"])
    assert endpoint.cursor == 1


def test_another_users_endpoint_is_a_404_for_every_operation(auth_client: Any, other_client: Any) -> None:
    pk = create(auth_client).json()["id"]
    assert other_client.get(f"/api/webhooks/{pk}/").status_code == 404
    assert other_client.patch(f"/api/webhooks/{pk}/", {"description": "x"}, format="json").status_code == 404
    assert other_client.delete(f"/api/webhooks/{pk}/").status_code == 404
    assert other_client.post(f"/api/webhooks/{pk}/rotate-secret/").status_code == 404
    assert other_client.get(f"/api/webhooks/{pk}/deliveries/").status_code == 404
    assert other_client.get("/api/webhooks/").json()["results"] == []
    assert WebhookEndpoint.objects.get(pk=pk).description == ""


@pytest.mark.parametrize("events, named", [
    (["task_complete", "task_done"], "'task_done'"),
    ([], "events"),
    (["*", "task_failed"], "'*'"),
    ("task_complete", "events"),
])
def test_unknown_or_malformed_event_filters_are_a_400_naming_them(auth_client: Any, events: Any, named: str) -> None:
    response = create(auth_client, events=events)
    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith("events:") and named in str(body), body
    assert set(body["errors"]) == {"events"}
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url, why", [
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://127.0.0.1/hook", "loopback"),
    ("https://localhost/hook", "loopback"),  # a name that resolves to loopback
    ("https://10.1.2.3/hook", "private"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://hooks.example.com/hook", "https://"),
    ("https://user:pw@hooks.example.com/hook", "password"),
    ("not a url", "https://"),
])
def test_a_url_the_guard_refuses_is_a_400_naming_url_and_why(auth_client: Any, url: str, why: str) -> None:
    response = create(auth_client, url=url)
    assert response.status_code == 400, response.json()
    body = response.json()
    assert list(body["errors"]) == ["url"] and body["detail"].startswith("url: ")
    assert why in body["detail"], body["detail"]
    assert not WebhookEndpoint.objects.exists()


def test_patch_checks_the_new_url_too_and_changes_nothing_when_refused(auth_client: Any) -> None:
    pk = create(auth_client).json()["id"]
    response = auth_client.patch(f"/api/webhooks/{pk}/", {"url": "https://169.254.169.254/"}, format="json")
    assert response.status_code == 400 and "link-local" in response.json()["detail"]
    assert WebhookEndpoint.objects.get(pk=pk).url == URL


def test_loopback_is_allowed_only_with_the_test_switches(auth_client: Any, loopback: None) -> None:
    assert create(auth_client, url="http://127.0.0.1:9/hook").status_code == 201


def test_patch_changes_fields_and_enabling_resumes_a_disabled_endpoint(auth_client: Any) -> None:
    pk = create(auth_client).json()["id"]
    response = auth_client.patch(f"/api/webhooks/{pk}/", {"events": ["*"], "enabled": False}, format="json")
    assert response.status_code == 200
    assert response.json()["events"] == ["*"] and response.json()["enabled"] is False
    assert response.json()["disabled_reason"] == "Disabled by its owner."
    response = auth_client.patch(f"/api/webhooks/{pk}/", {"enabled": True}, format="json")
    assert response.json()["enabled"] is True and response.json()["disabled_reason"] == ""
    assert "secret" not in response.json()


def test_rotate_shows_a_new_secret_once_and_keeps_the_old_one_signing_for_the_grace(auth_client: Any) -> None:
    created = create(auth_client).json()
    response = auth_client.post(f"/api/webhooks/{created['id']}/rotate-secret/")
    assert response.status_code == 200
    body = response.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != created["secret"]
    assert body["previous_secret_expires_at"] is not None
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.signing_secrets() == [body["secret"], created["secret"]]


def test_delete_removes_the_endpoint(auth_client: Any) -> None:
    pk = create(auth_client).json()["id"]
    assert auth_client.delete(f"/api/webhooks/{pk}/").status_code == 204
    assert auth_client.get(f"/api/webhooks/{pk}/").status_code == 404


def test_the_delivery_log_lists_newest_first_and_redeliver_makes_one_due_now(auth_client: Any, make_task: Any) -> None:
    pk = create(auth_client, events=["*"]).json()["id"]
    make_task()
    make_task()
    assert WebhookEndpoint.materialize() == 2
    page = auth_client.get(f"/api/webhooks/{pk}/deliveries/").json()
    assert [d["seq"] for d in page["results"]] == [2, 1]
    first = page["results"][1]
    assert first == {
        "id": first["id"], "webhook_id": f"msg_{pk}_1", "seq": 1, "event_type": "task_created", "status": "pending",
        "attempts": 0, "last_status_code": None, "last_error": "", "last_attempt_at": None,
        "next_attempt_at": first["next_attempt_at"], "delivered_at": None, "created_at": first["created_at"],
    }
    WebhookDelivery.objects.filter(pk=first["id"]).update(status="failed", next_attempt_at=None)
    response = auth_client.post(f"/api/webhooks/{pk}/deliveries/{first['id']}/redeliver/")
    assert response.status_code == 202
    assert response.json()["status"] == "pending" and response.json()["next_attempt_at"] is not None


def test_redeliver_of_a_disabled_endpoint_is_a_409(auth_client: Any, make_task: Any) -> None:
    pk = create(auth_client, events=["*"]).json()["id"]
    make_task()
    WebhookEndpoint.materialize()
    delivery = WebhookDelivery.objects.get()
    auth_client.patch(f"/api/webhooks/{pk}/", {"enabled": False}, format="json")
    response = auth_client.post(f"/api/webhooks/{pk}/deliveries/{delivery.pk}/redeliver/")
    assert response.status_code == 409 and "disabled" in response.json()["detail"]
    assert auth_client.post(f"/api/webhooks/{pk}/deliveries/999999/redeliver/").status_code == 404


def test_an_endpoint_only_gets_deliveries_for_the_events_it_asked_for(auth_client: Any, make_task: Any) -> None:
    create(auth_client, events=["task_canceled"])
    task = make_task()
    task.cancel()
    WebhookEndpoint.materialize()
    assert list(WebhookDelivery.objects.values_list("event_type", flat=True)) == ["task_canceled"]
    assert Event.objects.count() == 2
