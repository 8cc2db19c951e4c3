"""The delivery engine against a real HTTP receiver on loopback (the loop's own threads, real sockets)."""
from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any, Iterator

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY
from standardwebhooks import Webhook, WebhookVerificationError

from notifications.models import Event
from tests.conftest import wait_until
from webhooks.delivery import Dispatcher
from webhooks.models import WebhookDelivery, WebhookEndpoint, retry_delay

from .receiver import Receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback")]


@pytest.fixture
def fast_retries(settings: Any) -> None:
    settings.IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS = 0.05
    settings.IMAGEGEN_WEBHOOK_RETRY_MAX_SECONDS = 0.2
    settings.IMAGEGEN_WEBHOOK_POLL_INTERVAL = 0.02
    settings.IMAGEGEN_WEBHOOK_TIMEOUT = 2.0


@pytest.fixture
def dispatcher(fast_retries: None) -> Iterator[Dispatcher]:
    running = Dispatcher("test")
    running.start()
    yield running
    running.stop()


def endpoint_for(user: Any, url: str, events: list[str] | None = None) -> WebhookEndpoint:
    return WebhookEndpoint.create_for(user, url=url, events=events or ["*"])


def test_a_receiver_failing_the_first_attempts_gets_the_event_with_the_same_id_and_a_valid_signature(
        user: Any, make_task: Any, receiver: Receiver, dispatcher: Dispatcher) -> None:
    receiver.answer = lambda request: 500 if len(receiver.received) <= 2 else 204
    endpoint = endpoint_for(user, receiver.url(), ["task_created"])
    before = {r: REGISTRY.get_sample_value("imagegen_webhook_attempts_total", {"result": r}) for r in ("delivered", "failed")}
    lags_before = REGISTRY.get_sample_value("imagegen_webhook_delivery_lag_seconds_count")
    task = make_task()
    delivery = wait_until(lambda: WebhookDelivery.objects.filter(status="delivered").first(), timeout=20)
    assert len(receiver.received) == 3
    assert {r.headers["webhook-id"] for r in receiver.received} == {f"msg_{endpoint.pk}_1"}
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (3, 204, "")
    last = receiver.received[-1]
    event = Event.objects.get(user=user, seq=1)
    assert Webhook(endpoint.secret).verify(last.body, last.headers) == json.loads(json.dumps(event.as_message()))
    assert last.json["task_id"] == task.pk and last.json["type"] == "task_created"
    assert endpoint.__class__.objects.get(pk=endpoint.pk).failing_since is None  # a success ends the failure run
    # Counted by the delivery thread just after it recorded the outcome.
    wait_until(lambda: REGISTRY.get_sample_value("imagegen_webhook_delivery_lag_seconds_count") == lags_before + 1)
    after = {r: REGISTRY.get_sample_value("imagegen_webhook_attempts_total", {"result": r}) for r in before}
    assert (after["delivered"] - before["delivered"], after["failed"] - before["failed"]) == (1, 2)


def test_retries_back_off_exponentially_with_jitter_from_the_base(settings: Any) -> None:
    settings.IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS = 10
    settings.IMAGEGEN_WEBHOOK_RETRY_MAX_SECONDS = 3600
    for attempts, floor in ((1, 10), (2, 20), (3, 40), (9, 2560), (12, 3600)):
        delays = [retry_delay(attempts) for _ in range(50)]
        assert all(floor <= d <= floor * 1.25 for d in delays), (attempts, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered


def test_after_a_rotation_deliveries_carry_both_signatures_until_the_grace_ends(
        user: Any, make_task: Any, receiver: Receiver, dispatcher: Dispatcher) -> None:
    endpoint = endpoint_for(user, receiver.url(), ["task_created"])
    old = endpoint.secret
    new = endpoint.rotate_secret()
    make_task()
    wait_until(lambda: len(receiver.received) == 1)
    first = receiver.received[0]
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(first.body, first.headers)
    Webhook(new).verify(first.body, first.headers)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_expires_at=timezone.now() - timedelta(seconds=1))
    make_task()
    wait_until(lambda: len(receiver.received) == 2)
    second = receiver.received[1]
    Webhook(new).verify(second.body, second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(second.body, second.headers)


def test_an_endpoint_failing_for_the_whole_window_is_disabled_and_its_owner_told(
        settings: Any, user: Any, make_task: Any, receiver: Receiver, dispatcher: Dispatcher) -> None:
    settings.IMAGEGEN_WEBHOOK_DISABLE_AFTER = 1.0
    receiver.answer = lambda request: 503
    endpoint = endpoint_for(user, receiver.url(), ["task_created"])
    make_task()
    wait_until(lambda: not WebhookEndpoint.objects.get(pk=endpoint.pk).enabled, timeout=20)
    endpoint.refresh_from_db()
    assert endpoint.disabled_reason.startswith("Every delivery failed for 1 seconds") and "HTTP 503" in endpoint.disabled_reason
    disabled = Event.objects.get(user=user, type="webhook_disabled")
    assert disabled.task_id is None and disabled.seq == 2
    assert disabled.data["webhook"] == {"id": endpoint.pk, "url": receiver.url(), "events": ["task_created"],
                                        "description": "", "enabled": False,
                                        "disabled_reason": endpoint.disabled_reason}
    seen = len(receiver.received)
    assert seen >= 2
    make_task()  # a disabled endpoint gets nothing more (its pending delivery waits for re-enabling)
    wait_until(lambda: Event.objects.filter(user=user).count() == 3)
    dispatcher.run_once()
    assert len(receiver.received) == seen
    assert WebhookDelivery.objects.get().status == "pending"


def test_a_hanging_receiver_does_not_hold_back_other_endpoints(
        settings: Any, user: Any, other_user: Any, make_task: Any, receiver: Receiver, dispatcher: Dispatcher) -> None:
    receiver.hang_paths.add("/slow")
    endpoint_for(user, receiver.url("/slow"), ["task_created"])
    endpoint_for(other_user, receiver.url("/fast"), ["task_created"])
    for _ in range(5):
        make_task()
    for _ in range(5):
        make_task(user=other_user)
    cap = settings.IMAGEGEN_WEBHOOK_ENDPOINT_CONCURRENCY
    # The other endpoint gets everything while the slow one fills its share of the threads (its
    # second lane may start after the fast lane is done: each endpoint gets one lane first).
    wait_until(lambda: len(receiver.at("/fast")) == 5 and len(receiver.at("/slow")) >= cap, timeout=10)
    # ... and no more than its share: its other three deliveries wait behind the hanging two.
    assert len(receiver.at("/slow")) == cap
    receiver.release.set()


def test_a_redirect_is_a_failure_not_followed(user: Any, make_task: Any, receiver: Receiver,
                                              dispatcher: Dispatcher) -> None:
    receiver.answer = lambda request: 307
    endpoint_for(user, receiver.url(), ["task_created"])
    make_task()
    delivery = wait_until(lambda: WebhookDelivery.objects.filter(last_status_code=307).first())
    assert delivery.status == "pending" and "redirects are not followed" in delivery.last_error


def test_a_url_that_became_forbidden_fails_at_delivery_time(settings: Any, user: Any, make_task: Any,
                                                            receiver: Receiver, dispatcher: Dispatcher) -> None:
    endpoint_for(user, receiver.url(), ["task_created"])
    settings.IMAGEGEN_FETCH_ALLOW_PRIVATE = False  # the name now points at loopback, say
    make_task()
    delivery = wait_until(lambda: WebhookDelivery.objects.filter(attempts__gte=1, last_error__gt="").first())
    assert "loopback" in delivery.last_error and delivery.last_status_code is None
    assert receiver.received == []


def test_a_dispatcher_with_every_thread_busy_waits_instead_of_materializing_each_new_event(
        settings: Any, user: Any, receiver: Receiver, fast_retries: None, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.IMAGEGEN_WEBHOOK_CONCURRENCY = 1
    settings.IMAGEGEN_WEBHOOK_POLL_INTERVAL = 0.2
    settings.IMAGEGEN_WEBHOOK_TIMEOUT = 30.0
    calls: list[float] = []
    materialize = WebhookEndpoint.materialize

    def counted(cls: type[WebhookEndpoint], limit: int = 100) -> int:
        calls.append(time.monotonic())
        return materialize(limit)

    monkeypatch.setattr(WebhookEndpoint, "materialize", classmethod(counted))
    receiver.hang_paths.add("/hook")
    endpoint = endpoint_for(user, receiver.url())
    running = Dispatcher("test")
    running.start()
    try:
        Event.append(user_id=user.pk, task_id=None, type="task_update", data={}, created_at=timezone.now())
        wait_until(lambda: len(receiver.received) == 1)  # the only thread hangs on it
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # new events commit one by one meanwhile
            Event.append(user_id=user.pk, task_id=None, type="task_update", data={}, created_at=timezone.now())
        elapsed = time.monotonic() - started
        busy_calls = len([t for t in calls if started <= t <= started + elapsed])
        logged = Event.objects.filter(user=user).count()
        # A look per poll interval at most (the spin made one per new event: hundreds here).
        assert busy_calls <= elapsed / 0.2 + 2, (busy_calls, logged)
        receiver.release.set()
        wait_until(lambda: WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered").count() == logged,
                   timeout=30)
    finally:
        receiver.release.set()
        running.stop()


def test_a_receiver_that_refuses_one_event_still_gets_all_the_others(
        user: Any, receiver: Receiver, dispatcher: Dispatcher) -> None:
    receiver.answer = lambda request: 400 if request.json["seq"] == 1 else 200  # a payload it chokes on
    endpoint = endpoint_for(user, receiver.url())
    for i in range(10):
        Event.append(user_id=user.pk, task_id=None, type="task_update", data={"i": i}, created_at=timezone.now())
    # One refusal does not open the breaker, and once open its probe is another event: nothing
    # waits behind seq 1.
    wait_until(lambda: WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered").count() == 9, timeout=20)
    refused = WebhookDelivery.objects.get(endpoint=endpoint, seq=1)
    assert refused.status == "pending" and refused.attempts >= 1 and refused.last_status_code == 400
    assert sorted({r.json["seq"] for r in receiver.received if r.json["seq"] != 1}) == list(range(2, 11))
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).enabled
