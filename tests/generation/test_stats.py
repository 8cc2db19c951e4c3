"""Queue statistics: the dashboard, GET /api/queue/stats/ and queue_stats agree with a known queue."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from generation import stats
from generation.models import GenerationTask
from tests.conftest import bearer

from .builders import advance, ago, place, worker_row

pytestmark = pytest.mark.django_db

S = GenerationTask.Status


@pytest.fixture
def three_open_sockets() -> Iterator[None]:
    """The realtime side registers the socket count; here it is a known one."""
    stats.count_connections_with(lambda: 3)
    yield
    from notifications.presence import open_connections

    stats.count_connections_with(open_connections)  # as notifications registers it at start-up


@pytest.fixture
def known_queue(make_task: Callable[..., GenerationTask], user: Any, three_open_sockets: None) -> dict[str, Any]:
    """4 pending (one in backoff), 2 processing, 4 completed (one two hours ago), 1 failed, 1 canceled;
    one live worker running the two processing tasks, one stopped and one silent worker."""
    live = worker_row("live-1", heartbeat_age=2.0, concurrency=2)
    worker_row("stopped-1", stopped=True)
    worker_row("silent-1", heartbeat_age=120.0)

    # One clock reading for every timestamp: the waits and run times are then exact (read apart,
    # a loaded machine's milliseconds between two readings showed in p95 = 5.751 for 5.75).
    now = timezone.now()

    def task(status: str, run_after: float, started: float | None = None, finished: float | None = None,
             **kw: Any) -> GenerationTask:
        t = advance(make_task(), status, live, **kw)
        return place(t, created_at=ago(run_after, now=now), run_after=ago(run_after, now=now),
                     started_at=None if started is None else ago(started, now=now),
                     finished_at=None if finished is None else ago(finished, now=now))

    oldest = task(S.PENDING, 120)
    task(S.PENDING, 10)
    task(S.PENDING, 5)
    backoff = task(S.PENDING, 600)
    place(backoff, run_after=ago(-300, now=now))  # retrying later: not waiting on capacity
    processing = [task(S.PROCESSING, 9, started=4), task(S.PROCESSING, 10, started=4)]  # waits 5 s, 6 s
    task(S.COMPLETED, 600, 599, 589)  # wait 1 s, run 10 s
    task(S.COMPLETED, 500, 498, 478)  # wait 2 s, run 20 s
    task(S.COMPLETED, 400, 397, 367)  # wait 3 s, run 30 s
    task(S.FAILED, 300, 296, 256)  # wait 4 s, run 40 s
    task(S.COMPLETED, 7300, 7290, 7200)  # outside the hour
    task(S.CANCELED, 70, None, 60)
    return {"oldest": oldest, "processing": sorted(t.pk for t in processing), "live": live}


def expected_numbers(queue: dict[str, Any]) -> dict[str, Any]:
    return {
        "counts": {"pending": 4, "processing": 2, "completed": 4, "failed": 1, "canceled": 1},
        "oldest_pending_task_id": queue["oldest"].pk,
        "open_websocket_connections": 3,
        "last_hour": {
            "window_seconds": 3600, "completed": 3, "failed": 1, "canceled": 1,
            "throughput_per_minute": 0.05, "failure_rate": 0.25,
            "wait_seconds": {"p50": 3.5, "p95": 5.75},  # claims: 1, 2, 3, 4, 5, 6 s
            "run_seconds": {"p50": 25.0, "p95": 38.5},  # 10, 20, 30, 40 s
        },
        "workers": [("live-1", queue["processing"])],
        "worker_capacity": 2,
        "intake_paused": False,
    }


def assert_matches(data: dict[str, Any], queue: dict[str, Any]) -> None:
    expected = expected_numbers(queue)
    assert data["counts"] == expected["counts"]
    assert data["oldest_pending_task_id"] == expected["oldest_pending_task_id"]
    assert 120 <= data["oldest_pending_age_seconds"] < 150
    assert data["last_hour"] == expected["last_hour"]
    assert [(w["name"], w["current_tasks"]) for w in data["live_workers"]] == expected["workers"]
    assert 2 <= data["live_workers"][0]["heartbeat_age_seconds"] < 30
    assert data["worker_capacity"] == expected["worker_capacity"]
    assert data["intake_paused"] is expected["intake_paused"]
    assert data["open_websocket_connections"] == expected["open_websocket_connections"]


def test_it_computes_the_numbers_of_a_known_queue(known_queue: dict[str, Any]) -> None:
    assert_matches(stats.queue_stats(), known_queue)


def test_it_serves_the_same_numbers_at_api_queue_stats_to_staff(known_queue: dict[str, Any], staff_user: Any) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=bearer(staff_user))
    response = client.get("/api/queue/stats/")
    assert response.status_code == 200
    assert_matches(response.json(), known_queue)


def test_it_refuses_queue_stats_with_403_to_anyone_but_staff(auth_client: APIClient, api_client: APIClient) -> None:
    for client in (auth_client, api_client):
        response = client.get("/api/queue/stats/")
        assert response.status_code == 403
        assert response.json() == {"detail": "Queue statistics are for staff users only."}


def test_it_shows_the_same_numbers_on_the_admin_dashboard(known_queue: dict[str, Any], admin_client: Any) -> None:
    response = admin_client.get(reverse("admin:generation_dashboard"))
    assert response.status_code == 200
    assert_matches(response.context["stats"], known_queue)
    html = response.content.decode()
    assert "<th>pending</th><td class=\"num\">4</td>" in html
    assert "live-1" in html and "silent-1" not in html
    assert "3.5 / 5.75 s" in html and "25.0 / 38.5 s" in html
    assert "25 %" in html  # failure rate


def test_it_prints_the_same_numbers_with_queue_stats(known_queue: dict[str, Any], capsys: Any) -> None:
    call_command("queue_stats", "--json")
    assert_matches(json.loads(capsys.readouterr().out), known_queue)
    call_command("queue_stats")
    text = capsys.readouterr().out
    assert "pending 4  processing 2  completed 4  failed 1  canceled 1" in text
    assert "failure rate 25.0%" in text
    assert "live-1" in text and "current: " + ", ".join(map(str, known_queue["processing"])) in text


def test_it_reports_an_empty_queue_without_percentiles() -> None:
    data = stats.queue_stats()
    assert data["counts"] == dict.fromkeys(S.values, 0)
    assert data["oldest_pending_age_seconds"] is None
    assert data["last_hour"]["failure_rate"] is None
    assert data["last_hour"]["run_seconds"] == {"p50": None, "p95": None}
    assert data["live_workers"] == []


def test_it_interpolates_percentiles_like_postgresql() -> None:
    assert stats.percentile([], 0.5) is None
    assert stats.percentile([7.0], 0.95) == 7.0
    assert stats.percentile([10.0, 20.0, 30.0, 40.0], 0.5) == 25.0
    assert stats.percentile([10.0, 20.0, 30.0, 40.0], 0.95) == pytest.approx(38.5)
