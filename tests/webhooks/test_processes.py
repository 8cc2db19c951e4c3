"""Webhook delivery by real ``runworker`` processes: retries, kill -9, a hanging receiver, the fleet-wide cap."""
from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from generation.models import GenerationTask
from notifications.models import Event
from tests.conftest import wait_until
from webhooks.models import BREAKER_OPENS_AFTER, WebhookDelivery, WebhookEndpoint

from .receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOK_ENV = {
    "IMAGEGEN_FETCH_ALLOW_HTTP": "1", "IMAGEGEN_FETCH_ALLOW_PRIVATE": "1",
    "IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS": "0.1", "IMAGEGEN_WEBHOOK_RETRY_MAX_SECONDS": "0.5",
    "IMAGEGEN_WEBHOOK_POLL_INTERVAL": "0.05",
}


def logged_seqs(user: Any) -> list[int]:
    return list(Event.objects.filter(user=user).order_by("seq").values_list("seq", flat=True))


def delivering(cluster: Any, *names: str) -> None:
    """Wait until each worker's delivery loop runs (so each could claim as soon as events come)."""
    wait_until(lambda: all("Webhook delivery started" in cluster.log(n) for n in names), timeout=30)


def test_two_workers_together_never_run_more_than_the_per_endpoint_cap_against_one_receiver(
        cluster: Any, make_user: Any, receiver: Receiver, loopback: None) -> None:
    # Each worker alone may run 4 lanes, and there are 10 lanes of work: a per-process cap
    # would let the two workers hold 4 requests open at once against this receiver.
    receiver.delay = 0.03
    user = make_user()
    endpoint = WebhookEndpoint.create_for(user, url=receiver.url(), events=["*"])
    env = {**WEBHOOK_ENV, "IMAGEGEN_WEBHOOK_CONCURRENCY": "4", "IMAGEGEN_WEBHOOK_ENDPOINT_CONCURRENCY": "2"}
    for name in ("worker-1", "worker-2"):
        cluster.worker(name, **env)
    delivering(cluster, "worker-1", "worker-2")
    with transaction.atomic():
        for i in range(200):
            Event.append(user_id=user.pk, task_id=None, type="task_update", data={"i": i}, created_at=timezone.now())
    wait_until(lambda: WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered").count() == 200,
               timeout=90)
    assert {int(r.headers["webhook-id"].rsplit("_", 1)[1]) for r in receiver.received} == set(range(1, 201))
    assert receiver.peak["/hook"] == 2  # the cap reached, never passed, across both processes


def test_two_workers_deliver_every_event_through_a_receiver_that_fails_the_first_attempts(
        cluster: Any, make_user: Any, make_task: Any, receiver: Receiver, loopback: None) -> None:
    tries: Counter[str] = Counter()

    def answer(request: Any) -> int:
        tries[request.headers["webhook-id"]] += 1
        return 500 if tries[request.headers["webhook-id"]] <= 2 else 200

    receiver.answer = answer
    user = make_user()
    endpoint = WebhookEndpoint.create_for(user, url=receiver.url(), events=["*"])
    for name in ("worker-1", "worker-2"):
        cluster.worker(name, **WEBHOOK_ENV)
    tasks = [make_task(user=user) for _ in range(4)]
    wait_until(lambda: GenerationTask.objects.filter(pk__in=[t.pk for t in tasks], status="completed").count() == 4,
               timeout=60)
    seqs = logged_seqs(user)
    wait_until(lambda: WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered").count() == len(seqs),
               timeout=60)
    assert sorted(int(i.rsplit("_", 1)[1]) for i in tries) == seqs  # every event, no other
    assert set(tries.values()) == {3}  # two failures then the success, one attempt at a time
    assert set(WebhookDelivery.objects.values_list("attempts", "last_status_code")) == {(3, 200)}
    # The log line follows the delivery's commit: a worker may write the last one just after the
    # row says delivered (one of 12 was not in the log yet when read at once, on a loaded machine).
    def delivered_by() -> list[int]:
        return [cluster.log(n).count("delivered (attempt 3") for n in ("worker-1", "worker-2")]

    wait_until(lambda: sum(delivered_by()) >= len(seqs), timeout=10)
    assert sum(delivered_by()) == len(seqs)


def test_deliveries_pending_on_a_worker_killed_with_sigkill_are_delivered_by_another(
        cluster: Any, make_user: Any, make_task: Any, receiver: Receiver, loopback: None) -> None:
    receiver.hang_paths.add("/hook")  # the first worker's attempts are in flight when it dies
    user = make_user()
    endpoint = WebhookEndpoint.create_for(user, url=receiver.url(), events=["*"])
    env = {**WEBHOOK_ENV, "IMAGEGEN_WEBHOOK_TIMEOUT": "1"}  # a lease of 8 s
    doomed = cluster.worker("doomed", **env)
    tasks = [make_task(user=user) for _ in range(5)]
    wait_until(lambda: GenerationTask.objects.filter(pk__in=[t.pk for t in tasks], status="completed").count() == 5,
               timeout=60)
    wait_until(lambda: len(receiver.received) >= 2)  # attempts in flight, held by the receiver
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(10)
    receiver.release.set()
    seqs = logged_seqs(user)
    assert not WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered").exists()
    cluster.worker("survivor", **env)
    wait_until(lambda: WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered").count() == len(seqs),
               timeout=60)
    delivered = {int(r.headers["webhook-id"].rsplit("_", 1)[1]) for r in receiver.received}
    assert sorted(delivered) == seqs  # at least once each: nothing lost
    assert "delivered" in cluster.log("survivor")


def test_a_hanging_receiver_holds_back_neither_other_endpoints_nor_the_task_queue(
        cluster: Any, make_user: Any, make_task: Any, receiver: Receiver, loopback: None) -> None:
    receiver.hang_paths.add("/slow")
    slow_user, fast_user = make_user(), make_user()
    WebhookEndpoint.create_for(slow_user, url=receiver.url("/slow"), events=["*"])
    WebhookEndpoint.create_for(fast_user, url=receiver.url("/fast"), events=["*"])
    for name in ("worker-1", "worker-2"):  # each has room for 3 lanes; the hanging endpoint gets 2 in all
        cluster.worker(name, **WEBHOOK_ENV, IMAGEGEN_WEBHOOK_TIMEOUT="60", IMAGEGEN_WEBHOOK_CONCURRENCY="3")
    delivering(cluster, "worker-1", "worker-2")
    tasks = [make_task(user=slow_user) for _ in range(5)] + [make_task(user=fast_user) for _ in range(5)]
    wait_until(lambda: GenerationTask.objects.filter(pk__in=[t.pk for t in tasks], status="completed").count() == 10,
               timeout=60)
    fast_seqs = logged_seqs(fast_user)
    wait_until(lambda: sorted(int(r.headers["webhook-id"].rsplit("_", 1)[1]) for r in receiver.at("/fast")) == fast_seqs,
               timeout=30)
    assert len(receiver.at("/slow")) == 2  # IMAGEGEN_WEBHOOK_ENDPOINT_CONCURRENCY, fleet-wide: still hanging
    assert not receiver.release.is_set()


def test_a_receiver_down_with_a_backlog_is_probed_on_one_deliverys_schedule_then_gets_every_event_once_in_order(
        cluster: Any, make_user: Any, receiver: Receiver, loopback: None) -> None:
    down = threading.Event()
    down.set()
    answered: list[tuple[int, int]] = []  # (seq, status) of every request to the dead receiver

    def answer(request: Any) -> int:
        status = 503 if down.is_set() else 200
        if request.path == "/dead":
            answered.append((request.json["seq"], status))
        return status if request.path == "/dead" else 200

    receiver.answer = answer
    user, other = make_user(), make_user()
    dead = WebhookEndpoint.create_for(user, url=receiver.url("/dead"), events=["*"])
    healthy = WebhookEndpoint.create_for(other, url=receiver.url("/ok"), events=["*"])
    # One lane per endpoint: the whole flow after recovery is then one sequence to check.
    cluster.worker("worker-1", **{**WEBHOOK_ENV, "IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
                                  "IMAGEGEN_WEBHOOK_RETRY_MAX_SECONDS": "1",
                                  "IMAGEGEN_WEBHOOK_ENDPOINT_CONCURRENCY": "1"})
    delivering(cluster, "worker-1")
    backlog = 40
    for owner in (user, other):  # the dead receiver's backlog is the older one
        with transaction.atomic():
            for i in range(backlog):
                Event.append(user_id=owner.pk, task_id=None, type="task_update", data={"i": i},
                             created_at=timezone.now())
    # The dead endpoint's backlog holds back no one else.
    wait_until(lambda: WebhookDelivery.objects.filter(endpoint=healthy, status="delivered").count() == backlog,
               timeout=30)
    opens = BREAKER_OPENS_AFTER  # failures in a row, back to back, then the breaker is open
    seen = opens + 4
    wait_until(lambda: len(receiver.at("/dead")) >= seen, timeout=30)
    down.clear()  # the receiver comes back
    probes = receiver.at("/dead")[opens - 1:seen]
    # Then one request per backoff step (0.2, 0.4, 0.8, 1, ... s): one delivery's schedule, not
    # one attempt per pending event back to back (40 requests within the first moment).
    assert probes[-1].at - probes[0].at >= 0.2 + 0.4 + 0.8 + 1.0
    wait_until(lambda: WebhookDelivery.objects.filter(endpoint=dead, status="delivered").count() == backlog,
               timeout=60)
    failed = [seq for seq, status in answered if status == 503]
    assert seen <= len(failed) <= seen + 1  # those seen, and at most one more in flight as it came back
    # Each probe after the breaker opened a different event: none singled out. (Before it opened, a
    # slow machine may retry the first event on its own schedule before the third failure.)
    probed = failed[opens:]
    assert len(set(probed)) == len(probed)
    delivered = [seq for seq, status in answered if status == 200]
    assert sorted(delivered) == list(range(1, backlog + 1))  # every event, once
    assert delivered[1:] == sorted(delivered[1:])  # after the successful probe, in seq order
    dead.refresh_from_db()
    assert (dead.failures, dead.retry_at, dead.failing_since, dead.enabled) == (0, None, None, True)
