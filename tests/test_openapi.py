"""The OpenAPI schema against the running application: schemathesis sends every operation
generated requests (valid and invalid) and checks each answer against the schema."""
from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings

from schemathesis.specs.openapi.checks import positive_data_acceptance

from django.conf import settings as settings_module

from notifications import views as event_views
from notifications.stream import EventFeed, frame

from .conftest import bearer

# Fixed and small: every operation gets this many generated cases per mode.
EXAMPLES = 5


@pytest.fixture
def api_schema(transactional_db: Any, user: Any, make_task: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    make_task()  # something to list, cancel and retry
    real_wait = event_views.wait_for_events

    async def short_wait(user_id: int, after: int, wait: float) -> Any:
        # Generated waits go up to 30 s: keep the validation, not the waiting.
        return await real_wait(user_id, after, min(wait, 0.05))

    monkeypatch.setattr(event_views, "wait_for_events", short_wait)
    # The event stream never ends by itself: end each generated one right after its
    # replay (the answer's status, headers and first events are what the schema describes).
    monkeypatch.setattr(settings_module, "IMAGEGEN_SSE_KEEPALIVE_SECONDS", 0.01)
    monkeypatch.setattr(EventFeed, "_run", _replay_only)
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
    schema.config.update(headers={"Authorization": bearer(user)})
    # Every operation is also sent methods it does not have (a 405 each): two are enough.
    schema.config.phases.coverage.unexpected_methods = {"delete", "patch"}
    return schema


async def _replay_only(self: EventFeed) -> Any:
    from notifications.follower import LogFollower

    out: list[str] = []

    async def send(message: dict) -> None:
        out.append(frame(message))

    await LogFollower(self.caller.user.pk, send).sync(self.after)
    yield "".join(out)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
# The schema is exercised through Django's WSGI handler (schemathesis drives WSGI apps in process), which
# drains the event stream's async iterator synchronously and says so; the stream is served by daphne (ASGI).
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case: Any) -> None:
    excluded = []
    if (case.method, case.path) in (("POST", "/api/tasks/"), ("POST", "/api/batches/")):
        # The schema cannot say what makes bytes a product photo (a decodable
        # image, 64 px a side at least): a "valid" random file is rightly a 400.
        excluded.append(positive_data_acceptance)
    if (case.method, case.path) in (("POST", "/api/webhooks/"), ("PATCH", "/api/webhooks/{id}/")):
        # Nor which URLs the guard lets through (a host must resolve to public addresses only).
        excluded.append(positive_data_acceptance)
    case.call_and_validate(excluded_checks=excluded)


@pytest.mark.django_db
def test_the_schema_lists_each_operations_errors_and_limits(api_client: Any) -> None:
    document = api_client.get("/api/schema/?format=json").json()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    assert document["components"]["schemas"]["Error"]["required"] == ["detail"]
    statuses = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses[f"{method.upper()} {path}"] = sorted(s for s in operation["responses"] if s >= "4")
            assert all(r["content"] == error for s, r in operation["responses"].items() if s >= "4"), path
    assert statuses["POST /api/tasks/"] == ["400", "401", "403", "415", "422", "429", "503"]
    assert statuses["POST /api/tasks/{id}/cancel/"] == ["401", "403", "404", "409", "429"]
    assert statuses["GET /api/tasks/"] == ["400", "401", "404", "429"]
    assert statuses["GET /api/events/"] == ["400", "401", "429"]
    assert statuses["GET /api/queue/stats/"] == ["401", "403", "429"]
    assert statuses["POST /api/batches/"] == ["400", "401", "403", "415", "422", "429", "503"]
    assert statuses["POST /api/batches/{id}/cancel/"] == ["401", "403", "404", "409", "429"]
    assert statuses["GET /api/batches/{id}/archive/"] == ["401", "404", "429"]
    assert "Retry-After" in document["paths"]["/api/tasks/"]["post"]["responses"]["503"]["headers"]
    events = {p["name"]: p["schema"] for p in document["paths"]["/api/events/"]["get"]["parameters"]}
    assert events["after"]["maximum"] == 2**63 - 1 and (events["wait"]["minimum"], events["wait"]["maximum"]) == (0, 30)
    page_size = next(p for p in document["paths"]["/api/tasks/"]["get"]["parameters"] if p["name"] == "page_size")
    assert (page_size["schema"]["minimum"], page_size["schema"]["maximum"]) == (1, 200)
    image = document["components"]["schemas"]["TaskCreateRequest"]["properties"]["image"]
    assert "at least 64 pixels" in image["description"]


@pytest.mark.django_db
def test_a_bad_page_size_is_a_400_not_the_default_page(auth_client: Any) -> None:
    for raw in ("0", "201", "ten", ""):
        response = auth_client.get(f"/api/tasks/?page_size={raw}")
        assert (response.status_code, response.json()["detail"]) == (400, "page_size: An integer from 1 to 200."), raw
    assert auth_client.get("/api/tasks/?page_size=200").status_code == 200
