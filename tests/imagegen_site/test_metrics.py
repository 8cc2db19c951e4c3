"""/metrics: who may read it, and the series it exposes (web process and worker port)."""
from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from django.conf import settings as django_settings

from generation.models import GenerationTask
from generation.worker import Worker
from imagegen_site.metrics import start_metrics_server
from tests.conftest import free_port, wait_until

from tests.generation.builders import advance, worker_row

pytestmark = pytest.mark.django_db
BACKENDS = "tests.generation.backends"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None if absent."""
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{label_text}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


# --- protection ---------------------------------------------------------------------------
def test_it_asks_for_credentials_without_any(client: Any) -> None:
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "detail" in response.json()


def test_it_refuses_a_wrong_token_and_users_who_are_not_staff(client: Any, user: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    client.force_login(user)
    assert client.get("/metrics").status_code == 403


def test_it_refuses_any_bearer_token_when_none_is_configured(client: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_it_serves_a_staff_session_the_token_holder_and_anyone_when_public(
    client: Any, staff_user: Any, settings: Any
) -> None:
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    settings.METRICS_PUBLIC = True
    assert client.get("/metrics").status_code == 200
    settings.METRICS_PUBLIC = False
    client.force_login(staff_user)
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")


# --- series --------------------------------------------------------------------------------
@pytest.fixture
def scrape(client: Any, staff_user: Any) -> Callable[[], str]:
    client.force_login(staff_user)
    return lambda: client.get("/metrics").content.decode()


def test_it_reads_queue_depth_from_the_database_at_scrape(
    scrape: Callable[[], str], make_task: Callable[..., GenerationTask]
) -> None:
    worker = worker_row("metrics-worker", concurrency=3)
    make_task(), make_task()
    advance(make_task(), "processing", worker)

    text = scrape()

    assert sample(text, "imagegen_queue_tasks", status="pending") == 2
    assert sample(text, "imagegen_queue_tasks", status="processing") == 1
    assert sample(text, "imagegen_queue_tasks", status="failed") == 0
    assert sample(text, "imagegen_queue_oldest_pending_seconds") >= 0
    assert sample(text, "imagegen_workers_live") == 1 and sample(text, "imagegen_workers_capacity") == 3
    assert sample(text, "imagegen_queue_intake_paused") == 0
    assert sample(text, "imagegen_queue_stats_up") == 1


def test_it_counts_outcomes_and_observes_wait_and_run_times_of_attempts(
    scrape: Callable[[], str], make_task: Callable[..., GenerationTask], settings: Any
) -> None:
    before = scrape()
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.QuickBackend"
    make_task()
    assert Worker(worker_id="m1").run_once()
    settings.IMAGEGEN_BACKEND = f"{BACKENDS}.CrashingBackend"
    make_task()
    assert Worker(worker_id="m2").run_once()

    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return (sample(after, name, **labels) or 0) - (sample(before, name, **labels) or 0)

    assert delta("imagegen_task_outcomes_total", outcome="completed", error_code="") == 1
    assert delta("imagegen_task_outcomes_total", outcome="retrying", error_code="internal_error") == 1
    assert delta("imagegen_task_run_seconds_count") == 2
    assert delta("imagegen_task_wait_seconds_count") == 2


def test_it_exposes_the_realtime_and_publish_series(scrape: Callable[[], str]) -> None:
    text = scrape()
    for name in (
        "imagegen_push_latency_seconds_bucket", "imagegen_websocket_connections", "imagegen_websocket_resumes_total",
        "imagegen_replay_events_bucket", "imagegen_gap_fills_total",
    ):
        assert re.search(rf"^{name}[ {{]", text, re.MULTILINE), name
    assert "# TYPE imagegen_websocket_connects_total counter" in text
    for result in ("published", "dropped", "failed"):
        assert sample(text, "imagegen_publishes_total", result=result) is not None


def test_it_serves_worker_metrics_on_their_own_port() -> None:
    server = start_metrics_server(0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "imagegen_task_run_seconds_bucket" in text
    assert sample(text, "imagegen_queue_stats_up") == 1  # its own database connection, closed after the scrape


@pytest.mark.django_db(transaction=True)
def test_it_starts_the_metrics_server_with_runworker_metrics_port(subprocess_env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runworker", "--metrics-port", str(port), "--worker-id", "metrics-port"],
        cwd=Path(django_settings.BASE_DIR), env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )

    def scraped() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                return response.read().decode()
        except OSError:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            return None

    def scraped_with_the_worker_live() -> str | None:
        # The server is up before the worker has registered its row: an early scrape sees 0.
        text = scraped()
        return text if text is not None and sample(text, "imagegen_workers_live") == 1 else None

    try:
        text = wait_until(scraped_with_the_worker_live, timeout=30, interval=0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    assert "imagegen_task_outcomes_total" in text


def test_it_rejects_a_bad_metrics_port() -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="must be a TCP port"):
        call_command("runworker", "--metrics-port", "70000")
