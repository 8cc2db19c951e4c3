"""The fleet-wide Gemini rate with real processes: two workers, the real google-genai client,
the fake Gemini server, one PostgreSQL they share. The backend is the gemini backend's call
alone (tests/generation/backends.py), so the rate, not the image work, bounds the pace."""
from __future__ import annotations

import sys
from typing import Any

import pytest

from generation.models import GenerationTask, WorkerProcess
from tests.conftest import wait_until
from tests.generation.fake_gemini import FakeGemini

pytestmark = pytest.mark.django_db(transaction=True)
WINDOW = 4.0


def gemini_env(fake: FakeGemini, **extra: str) -> dict[str, str]:
    return {"IMAGEGEN_BACKEND": "tests.generation.backends.GeminiCallBackend", "GEMINI_API_KEY": "test-key",
            "GEMINI_BASE_URL": fake.base_url, "IMAGEGEN_SEGMENTER": "classical",
            "IMAGEGEN_GEMINI_RATE_WINDOW": str(WINDOW), **extra}


def start_worker(cluster: Any, name: str, **env: str) -> None:
    cluster.spawn(name, [sys.executable, "manage.py", "runworker", "--worker-id", name, "--concurrency", "2"], **env)


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_two_workers_share_one_rate_and_every_task_completes_without_spending_attempts(
        cluster: Any, make_user: Any, make_task: Any) -> None:
    with FakeGemini() as fake:
        for name in ("worker-a", "worker-b"):
            start_worker(cluster, name, **gemini_env(fake, IMAGEGEN_GEMINI_RPM="4"))
        # Both must be claiming before the work arrives, or the first one up takes it all.
        assert wait_until(lambda: set(WorkerProcess.objects.filter(stopped_at__isnull=True)
                                      .values_list("name", flat=True)) >= {"worker-a", "worker-b"}, timeout=60)
        user = make_user()
        tasks = [make_task(user=user) for _ in range(8)]
        wait_until(lambda: GenerationTask.objects.filter(pk__in=[t.pk for t in tasks], status="completed").count() == 8,
                   timeout=60, interval=0.1)
        arrivals = [r.at for r in fake.requests]

    assert len(arrivals) == 8  # one call per task: nobody was refused by Gemini, nothing ran twice
    assert most_in_any_window(arrivals, WINDOW) <= 4
    assert max(arrivals) - min(arrivals) >= WINDOW  # eight calls at four per window need a second window
    rows = GenerationTask.objects.filter(pk__in=[t.pk for t in tasks])
    assert set(rows.values_list("attempts", flat=True)) == {1}  # waiting for a slot spent no attempt
    assert set(rows.values_list("error_code", flat=True)) == {None}
    # Both machines took part: each claimed work (a task one of them postponed may end on the other).
    assert all("processing" in cluster.log(name) for name in ("worker-a", "worker-b"))


def test_a_429_with_retry_info_holds_back_every_worker_for_the_delay_it_names(
        cluster: Any, make_user: Any, make_task: Any) -> None:
    delay = 5.0
    with FakeGemini(retry_delay=f"{delay:g}s") as fake:  # the 429 is scripted after the warm-up
        for name in ("worker-a", "worker-b"):
            start_worker(cluster, name, **gemini_env(fake))
        user = make_user()
        # Warm up until both workers have a thread with a live client (the first call of a
        # thread builds it, which takes seconds here): those must meet the pause, not miss it.
        for _ in range(5):
            warm = [make_task(user=user) for _ in range(4)]
            wait_until(lambda: GenerationTask.objects.filter(pk__in=[t.pk for t in warm], status="completed").count() == 4,
                       timeout=60, interval=0.1)
            if all("completed" in cluster.log(name) for name in ("worker-a", "worker-b")):
                break
        fake.script.append("http_429")
        calls_before = len(fake.requests)
        first = make_task(user=user)
        # Gemini refuses the first call naming its delay: the task waits, it is not failed.
        postponed = wait_until(lambda: "postponed" in cluster.log("worker-a") + cluster.log("worker-b"), timeout=30)
        assert postponed
        others = [make_task(user=user) for _ in range(6)]
        tasks = [first, *others]
        wait_until(lambda: GenerationTask.objects.filter(pk__in=[t.pk for t in tasks], status="completed").count() == 7,
                   timeout=60, interval=0.1)
        requests = list(fake.requests)[calls_before:]

    refused = requests[0].at
    later = sorted(r.at - refused for r in requests[1:])
    assert len(later) == 7  # the refused task was called once more, each other task once
    assert later[0] >= delay  # nobody called during the pause
    # Both workers claimed tasks during the pause and put them back to wait for it.
    assert "Gemini asked to wait" in cluster.log("worker-a") + cluster.log("worker-b")
    assert all("for a slot" in cluster.log(name) or "Gemini asked" in cluster.log(name)
               for name in ("worker-a", "worker-b"))
    rows = GenerationTask.objects.filter(pk__in=[t.pk for t in tasks])
    assert set(rows.values_list("attempts", flat=True)) == {1}
    assert set(rows.values_list("error_code", flat=True)) == {None}
