"""The fleet-wide Gemini rate (IMAGEGEN_GEMINI_RPM): the limiter, the 429 pause, postponed tasks."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from generation import engine
from generation.engine.base import BackendConfig, EngineError, UpstreamBusy
from generation.engine.gemini import GeminiBackend
from generation.engine.spec import parse_job
from generation.models import GenerationTask, UpstreamLimit
from generation.upstream import GeminiRateGate
from generation.worker import Worker
from notifications.models import Event
from tests.generation import scenes
from tests.generation.fake_gemini import FakeGemini

pytestmark = pytest.mark.django_db
JOB = parse_job({"preset": "amazon", "size": 1000})


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture
def gemini(fake: FakeGemini, settings: Any) -> Iterator[FakeGemini]:
    """The worker's own backend (get_backend) pointed at the fake, with the installed gate."""
    settings.IMAGEGEN_BACKEND = "gemini"
    settings.GEMINI_API_KEY = "test-key"
    settings.GEMINI_BASE_URL = fake.base_url
    settings.IMAGEGEN_SEGMENTER = "classical"
    engine._local.backend = None  # built afresh from these settings
    yield fake
    engine._local.backend = None


def backend_with_gate(fake: FakeGemini) -> GeminiBackend:
    return GeminiBackend(BackendConfig(gemini_api_key="k", gemini_base_url=fake.base_url, gemini_api_version="v1beta",
                                       segmenter="classical", gemini_rate_gate=GeminiRateGate()))


def test_the_limiter_allows_n_calls_per_window_then_tells_each_waiter_an_honest_slot():
    assert [UpstreamLimit.acquire("t", 2, 60.0)[0] for _ in range(2)] == [0.0, 0.0]
    waits = [UpstreamLimit.acquire("t", 2, 60.0)[0] for _ in range(3)]
    # Two slots free when the first two calls leave the window; the third waiter is a window later.
    assert 59 < waits[0] <= 60.5 and 59 < waits[1] <= 60.5
    assert 119 < waits[2] <= 120.5


def test_without_a_rate_only_a_pause_holds_calls_back():
    assert UpstreamLimit.acquire("u", None, 60.0)[0] == 0.0
    told = UpstreamLimit.pause("u", 30.0, None, 60.0)
    assert 29 < told <= 30.5
    assert 29 < UpstreamLimit.acquire("u", None, 60.0)[0] <= 30.5


def test_a_call_keeps_its_slot_for_a_window_after_it_ended():
    wait, stamp = UpstreamLimit.acquire("v", 1, 60.0)
    assert wait == 0.0 and stamp is not None
    UpstreamLimit.objects.filter(name="v").update(calls=[stamp - 50])  # admitted 50 s ago, a slow call
    UpstreamLimit.finish("v", stamp - 50)  # ...that ends now
    assert 59 < UpstreamLimit.acquire("v", 1, 60.0)[0] <= 60.5


def test_a_429_naming_a_delay_pauses_every_caller_and_is_not_a_failure(fake: FakeGemini, settings: Any):
    settings.IMAGEGEN_GEMINI_RPM = None
    fake.scenario, fake.retry_delay = "http_429", "7s"
    with pytest.raises(UpstreamBusy) as info:
        backend_with_gate(fake).generate(scenes.plain().encode("JPEG", quality=95), JOB, lambda pct: None)
    assert 6.5 < info.value.retry_after <= 7.5
    # Another worker's next call is held back for the same pause, without sending anything.
    sent = len(fake.requests)
    with pytest.raises(UpstreamBusy):
        backend_with_gate(fake).generate(scenes.plain().encode("JPEG", quality=95), JOB, lambda pct: None)
    assert len(fake.requests) == sent


def test_a_429_without_a_delay_stays_a_transient_upstream_error(fake: FakeGemini):
    fake.scenario = "http_429"
    with pytest.raises(EngineError) as info:
        backend_with_gate(fake).generate(scenes.plain().encode("JPEG", quality=95), JOB, lambda pct: None)
    assert info.value.code == "upstream_error" and info.value.transient


def test_a_task_without_a_slot_waits_pending_with_no_attempt_spent_and_an_eta_that_counts_the_wait(
        gemini: FakeGemini, settings: Any, make_task: Any, django_capture_on_commit_callbacks: Any):
    settings.IMAGEGEN_GEMINI_RPM = 1
    settings.IMAGEGEN_GEMINI_RATE_WINDOW = 120.0
    first = make_task(image=scenes.plain().encode("JPEG", quality=95))
    second = make_task(image=scenes.plain().encode("JPEG", quality=95))
    worker = Worker(worker_id="rate")
    assert worker.run_once() and worker.run_once()

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == "completed"
    assert len(gemini.requests) == 1  # the second task never called
    assert (second.status, second.attempts, second.error_code, second.worker_id) == ("pending", 0, None, None)
    wait = (second.run_after - timezone.now()).total_seconds()
    assert 100 < wait <= 121
    body = second.live_state()
    assert body["estimated_remaining_seconds"] >= wait - 1  # read a moment later, rounded
    # Its event (the REST body at that moment) says the same.
    event = Event.objects.filter(task_id=second.pk).latest("seq")
    assert event.data["status"] == "pending" and event.data["estimated_remaining_seconds"] >= 100
    assert worker.run_once() is False  # not claimable before run_after


def test_the_postponed_task_runs_once_its_slot_comes(gemini: FakeGemini, settings: Any, make_task: Any):
    settings.IMAGEGEN_GEMINI_RPM = 1
    settings.IMAGEGEN_GEMINI_RATE_WINDOW = 120.0
    task = make_task(image=scenes.plain().encode("JPEG", quality=95))
    UpstreamLimit.acquire("gemini", 1, 120.0)  # another machine took the slot
    worker = Worker(worker_id="rate")
    assert worker.run_once()
    task.refresh_from_db()
    assert task.status == "pending"
    # The window passes (moved back in time rather than waited for).
    UpstreamLimit.objects.filter(name="gemini").update(calls=[], waiters=[])
    GenerationTask.objects.filter(pk=task.pk).update(run_after=timezone.now() - timedelta(seconds=1))
    assert worker.run_once()
    task.refresh_from_db()
    assert (task.status, task.attempts) == ("completed", 1)
