"""``GET /api/events/``: pages, validation, auth, throttling, and waiting on the channel layer."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from notifications import views

from .support import seed_events, token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def auth(user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


def pubsub_channels() -> dict:
    """Channels the pub/sub layer still holds for this event loop (a leak check)."""
    layer = get_channel_layer()
    return layer._get_layer().channels if hasattr(layer, "_get_layer") else {}


async def test_it_returns_the_callers_events_oldest_first(user: Any, other_user: Any, make_task: Any,
                                                          async_client: Any, auth: dict) -> None:
    task = await sync_to_async(make_task)()
    await sync_to_async(make_task)(user=other_user)
    await sync_to_async(task.cancel)()
    body = (await async_client.get("/api/events/?after=0", headers=auth)).json()
    assert [(e["seq"], e["type"], e["task_id"]) for e in body["events"]] == [
        (1, "task_created", task.pk), (2, "task_canceled", task.pk)]
    assert {k: v for k, v in body.items() if k != "events"} == {"last_seq": 2, "has_more": False, "recovered": True}
    body = (await async_client.get("/api/events/?after=2", headers=auth)).json()
    assert body == {"events": [], "last_seq": 2, "has_more": False, "recovered": True}


async def test_it_pages_by_500_with_has_more(user: Any, async_client: Any, auth: dict) -> None:
    await sync_to_async(seed_events)(user, 1100)
    pages, after = [], 0
    while True:
        body = (await async_client.get(f"/api/events/?after={after}", headers=auth)).json()
        pages.append((len(body["events"]), body["events"][0]["seq"], body["last_seq"], body["has_more"]))
        after = body["last_seq"]
        if not body["has_more"]:
            break
    assert pages == [(500, 1, 500, True), (500, 501, 1000, True), (100, 1001, 1100, False)]


@pytest.mark.parametrize("headers, detail", [
    ({}, "Authentication credentials were not provided."),
    ({"Authorization": "Bearer nope"}, "Given token not valid for any token type"),
])
async def test_it_needs_a_valid_bearer_token(async_client: Any, headers: dict, detail: str) -> None:
    response = await async_client.get("/api/events/?after=0", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize("query, detail", [
    ("after=-1", "after must be a non-negative integer, at most 9223372036854775807."),
    ("after=abc", "after must be a non-negative integer, at most 9223372036854775807."),
    ("after=9223372036854775808", "after must be a non-negative integer, at most 9223372036854775807."),
    ("after=99999999999999999999999", "after must be a non-negative integer, at most 9223372036854775807."),
    ("wait=31", "wait must be a number of seconds from 0 to 30."),
    ("wait=-1", "wait must be a number of seconds from 0 to 30."),
    ("wait=nan", "wait must be a number of seconds from 0 to 30."),
    ("wait=soon", "wait must be a number of seconds from 0 to 30."),
    ("wait=", "wait must be a number of seconds from 0 to 30."),
])
async def test_bad_parameters_are_a_400_with_detail(async_client: Any, auth: dict, query: str, detail: str) -> None:
    response = await async_client.get(f"/api/events/?{query}", headers=auth)
    assert response.status_code == 400
    assert response.json() == {"detail": detail}


async def test_it_accepts_the_largest_64_bit_seq_as_after(async_client: Any, auth: dict) -> None:
    # A cursor ahead of the log is valid input: nothing newer, and "reload" (recovered false).
    response = await async_client.get("/api/events/?after=9223372036854775807", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"events": [], "last_seq": 0, "has_more": False, "recovered": False}


async def test_only_get_is_allowed(async_client: Any, auth: dict) -> None:
    response = await async_client.post("/api/events/", headers=auth)
    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "POST" not allowed.'}


async def test_it_is_throttled_with_the_events_scope(async_client: Any, auth: dict, settings: Any) -> None:
    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], events="2/min")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    for _ in range(2):
        assert (await async_client.get("/api/events/", headers=auth)).status_code == 200
    response = await async_client.get("/api/events/", headers=auth)
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Request was throttled. Expected available in ")
    assert 0 < int(response["Retry-After"]) <= 60


async def test_a_waiting_poll_returns_as_soon_as_an_event_commits(user: Any, make_task: Any, async_client: Any,
                                                                  auth: dict, monkeypatch: Any) -> None:
    task = await sync_to_async(make_task)()
    waiting = asyncio.Event()
    real_wait = views.wait_for_events

    async def spy(*args: Any) -> Any:
        waiting.set()
        return await real_wait(*args)

    monkeypatch.setattr(views, "wait_for_events", spy)
    started = time.monotonic()
    poll = asyncio.ensure_future(async_client.get("/api/events/?after=1&wait=20", headers=auth))
    await asyncio.wait_for(waiting.wait(), 10)  # nothing new: it went to wait
    await sync_to_async(task.cancel)()
    body = (await asyncio.wait_for(poll, 10)).json()
    assert time.monotonic() - started < 5  # well under the 20 s wait
    assert [(e["seq"], e["type"]) for e in body["events"]] == [(2, "task_canceled")]
    assert body["last_seq"] == 2 and body["recovered"] is True
    assert pubsub_channels() == {}


async def test_a_poll_times_out_cleanly_after_reading_the_log_three_times(
        user: Any, make_task: Any, async_client: Any, auth: dict, monkeypatch: Any) -> None:
    await sync_to_async(make_task)()
    reads = []
    real_read = views.aread_page

    async def counting(*args: Any) -> Any:
        reads.append(args)
        return await real_read(*args)

    monkeypatch.setattr(views, "aread_page", counting)
    started = time.monotonic()
    response = await async_client.get("/api/events/?after=1&wait=1", headers=auth)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json() == {"events": [], "last_seq": 1, "has_more": False, "recovered": True}
    assert 1.0 <= elapsed < 5
    assert len(reads) == 3  # before joining the group, after joining it, after the wait: no polling loop
    assert pubsub_channels() == {}


async def test_wait_zero_answers_at_once(user: Any, async_client: Any, auth: dict, monkeypatch: Any) -> None:
    async def never(*args: Any) -> Any:
        raise AssertionError("wait=0 must not wait")

    monkeypatch.setattr(views, "wait_for_events", never)
    body = (await async_client.get("/api/events/?after=0&wait=0", headers=auth)).json()
    assert body == {"events": [], "last_seq": 0, "has_more": False, "recovered": True}


def test_the_schema_describes_the_events_endpoint(api_client: Any) -> None:
    schema = api_client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/events/"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["after", "wait"]
    assert set(operation["responses"]) == {"200", "400", "401", "429"}
    page = schema["components"]["schemas"]["EventsPage"]
    assert page["required"] == ["events", "last_seq", "has_more", "recovered"]
    assert "jwtAuth" in schema["components"]["securitySchemes"]
