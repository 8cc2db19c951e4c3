"""The delivery rows' rules: materializing from the cursor, claims with leases and fences, giving up."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from notifications.models import Event
from webhooks import models as webhook_models
from webhooks.delivery import attempt
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.retention import purge_with_events
from tests.conftest import require_postgresql

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loopback")]
URL = "http://127.0.0.1:9/hook"


def claim(limit: int = 10, per_endpoint: int = 10, lease: float = 30) -> list:
    """Lanes of one delivery each, flattened: (delivery, token) pairs."""
    lanes = WebhookDelivery.claim_due(limit, per_endpoint=per_endpoint, lease=lease)
    return [(lane[0], token) for lane, token in lanes]


def test_materialize_follows_each_endpoints_filter_and_cursor_in_batches(user: Any, make_task: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_models, "MATERIALIZE_BATCH", 2)
    everything = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    make_task().cancel()  # seq 1 created, seq 2 canceled
    late = WebhookEndpoint.create_for(user, url=URL, events=["task_canceled", "task_created"])
    make_task().cancel()  # seq 3, 4
    while WebhookEndpoint.materialize():
        pass
    assert list(everything.deliveries.order_by("seq").values_list("seq", flat=True)) == [1, 2, 3, 4]
    assert list(late.deliveries.order_by("seq").values_list("seq", "event_type")) == [
        (3, "task_created"), (4, "task_canceled")]
    assert set(WebhookEndpoint.objects.values_list("cursor", flat=True)) == {4}
    assert WebhookEndpoint.materialize() == 0  # nothing twice


def test_a_claim_holds_a_delivery_until_its_lease_ends_and_a_stale_attempt_records_nothing(
        user: Any, make_task: Any) -> None:
    WebhookEndpoint.create_for(user, url=URL, events=["*"])
    make_task()
    WebhookEndpoint.materialize()
    [(delivery, first_token)] = claim()
    assert claim() == []  # held by the first claim
    WebhookDelivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))  # its worker died
    [(again, second_token)] = claim()
    assert again.attempts == 2
    assert delivery.mark_delivered(first_token, 200, timezone.now()) is False  # the presumed-dead worker
    assert again.mark_delivered(second_token, 204, timezone.now()) is True
    stored = WebhookDelivery.objects.get()
    assert (stored.status, stored.last_status_code, stored.attempts) == ("delivered", 204, 2)


def test_claims_leave_an_endpoint_no_more_than_its_share_counting_every_claim_in_the_database(
        user: Any, other_user: Any, make_task: Any) -> None:
    slow = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    fast = WebhookEndpoint.create_for(other_user, url=URL, events=["*"])
    for _ in range(4):
        make_task()
    WebhookEndpoint.materialize()
    [(running, _)] = claim(limit=1, per_endpoint=2)  # a lane another worker runs, say
    assert running.endpoint_id == slow.pk
    for _ in range(3):
        make_task(user=other_user)
    WebhookEndpoint.materialize()
    taken = claim(limit=5, per_endpoint=2)
    assert sorted(d.endpoint_id for d, _ in taken) == [slow.pk, fast.pk, fast.pk]
    assert claim(limit=5, per_endpoint=2) == []  # two live lanes each, whoever runs them
    (delivery, token), *_ = [c for c in taken if c[0].endpoint_id == fast.pk]
    assert delivery.mark_delivered(token, 204, timezone.now())
    assert [d.endpoint_id for d, _ in claim(limit=5, per_endpoint=2)] == [fast.pk]  # its lane ended
    WebhookDelivery.objects.filter(endpoint=slow, claim_token__isnull=False).update(
        claimed_until=timezone.now() - timedelta(seconds=1))  # their worker died: the slots come back
    assert sorted(d.endpoint_id for d, _ in claim(limit=5, per_endpoint=2)) == [slow.pk, slow.pk]


def test_a_delivery_gives_up_after_the_retry_window_and_one_whose_event_was_purged_at_once(
        settings: Any, user: Any, make_task: Any) -> None:
    settings.IMAGEGEN_WEBHOOK_DISABLE_AFTER = 3600  # shorter than the 24 h floor
    endpoint = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    make_task()
    make_task()
    WebhookEndpoint.materialize()
    (old, old_token), (purged, purged_token) = sorted(claim(), key=lambda c: c[0].seq)
    old.created_at = timezone.now() - timedelta(hours=23)
    assert old.mark_failed(old_token, 500, "HTTP 500", timezone.now()) == "failed"  # under 24 h: again
    old.created_at = timezone.now() - timedelta(hours=24, seconds=1)
    WebhookDelivery.objects.filter(pk=old.pk).update(claim_token=old_token)  # as if claimed again
    assert old.mark_failed(old_token, 500, "HTTP 500", timezone.now()) == "gave_up"

    Event.objects.filter(seq=purged.seq, user=user).delete()
    purged.event = None
    with httpx.Client() as client:
        assert attempt(purged, purged_token, client) == "gave_up"
    stored = WebhookDelivery.objects.get(pk=purged.pk)
    assert stored.status == "failed" and "no longer in the log" in stored.last_error
    endpoint.refresh_from_db()
    assert endpoint.enabled


def test_finished_deliveries_are_purged_with_their_events_pending_ones_kept(user: Any, make_task: Any) -> None:
    WebhookEndpoint.create_for(user, url=URL, events=["*"])
    make_task()
    make_task()
    WebhookEndpoint.materialize()
    done, waiting = WebhookDelivery.objects.order_by("seq")
    WebhookDelivery.objects.filter(pk=done.pk).update(status="delivered")
    assert purge_with_events(None, older_than=timedelta(0), dry_run=False, now=timezone.now() + timedelta(seconds=1),
                             batch_size=10) == 0
    assert list(WebhookDelivery.objects.values_list("pk", flat=True)) == [waiting.pk]


def test_a_lane_takes_one_endpoints_deliveries_in_order_under_one_claim(user: Any, other_user: Any,
                                                                      make_task: Any) -> None:
    busy_one = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    WebhookEndpoint.create_for(other_user, url=URL, events=["*"])
    for _ in range(5):
        make_task()
    make_task(user=other_user)
    WebhookEndpoint.materialize()
    lanes = WebhookDelivery.claim_due(3, per_endpoint=2, lease=30, lane_size=2)
    by_endpoint = [(lane[0].endpoint_id, [d.seq for d in lane]) for lane, _ in lanes]
    assert sorted(by_endpoint) == sorted([(busy_one.pk, [1, 2]), (busy_one.pk, [3, 4]),
                                          (WebhookEndpoint.objects.get(user=other_user).pk, [1])])
    (lane, token) = lanes[0]
    lane[1].release(token)
    stored = WebhookDelivery.objects.get(pk=lane[1].pk)
    assert (stored.attempts, stored.claim_token) == (0, None)


def test_a_claim_skips_an_endpoint_whose_claim_lock_another_process_holds(user: Any, make_task: Any) -> None:
    require_postgresql("the claim lock (an advisory lock; SQLite runs one writer at a time)")
    endpoint = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    make_task()
    WebhookEndpoint.materialize()
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other:  # another worker, mid-claim
        other.execute("SELECT pg_advisory_lock(%s, %s)", [webhook_models.CLAIM_LOCK, endpoint.pk])
        assert claim() == []  # not waited for: the next loop comes back to it
        other.execute("SELECT pg_advisory_unlock(%s, %s)", [webhook_models.CLAIM_LOCK, endpoint.pk])
    assert [d.endpoint_id for d, _ in claim()] == [endpoint.pk]


def test_a_claim_locks_only_the_endpoints_it_has_threads_for(user: Any, other_user: Any, make_task: Any) -> None:
    require_postgresql("the claim lock (an advisory lock)")
    first = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    WebhookEndpoint.create_for(other_user, url=URL, events=["*"])
    make_task()
    make_task(user=other_user)
    WebhookEndpoint.materialize()
    assert [d.endpoint_id for d, _ in claim(limit=1)] == [first.pk]
    with connection.cursor() as cursor:  # the test's transaction still holds what the claim took
        cursor.execute("SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND pid = pg_backend_pid()",
                       [webhook_models.CLAIM_LOCK])
        # the other endpoint stays free for a claim in another worker meanwhile
        assert [row[0] for row in cursor.fetchall()] == [first.pk]


def reopen_now(endpoint: WebhookEndpoint) -> None:
    """The breaker's wait is over (as if its retry_at had passed)."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(retry_at=timezone.now() - timedelta(milliseconds=1))


def test_failures_below_the_breakers_line_slow_no_one_down(settings: Any, user: Any, make_task: Any) -> None:
    settings.IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS = 10
    endpoint = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    for _ in range(3):
        make_task()
    WebhookEndpoint.materialize()
    for failures in range(1, webhook_models.BREAKER_OPENS_AFTER):
        [(lane, token)] = WebhookDelivery.claim_due(4, per_endpoint=1, lease=30, lane_size=10)
        assert lane[0].mark_failed(token, 503, "HTTP 503", timezone.now()) == "failed"
        for rest in lane[1:]:
            rest.release(token)
        endpoint.refresh_from_db()
        # Closed still: the failed event waits its own backoff, the others are claimed at once.
        assert (endpoint.failures, endpoint.retry_at, endpoint.is_open) == (failures, None, False)
    [(lane, _)] = WebhookDelivery.claim_due(4, per_endpoint=1, lease=30, lane_size=10)
    assert len(lane) == 3 - (webhook_models.BREAKER_OPENS_AFTER - 1)


def test_failures_in_a_row_open_the_endpoints_breaker_then_one_probe_at_a_time_and_a_success_lets_the_backlog_flow_in_order(
        settings: Any, user: Any, make_task: Any) -> None:
    settings.IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS = 10
    endpoint = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    for _ in range(6):
        make_task()
    WebhookEndpoint.materialize()
    # The failures in a row before this one (other deliveries' attempts, say).
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failures=webhook_models.BREAKER_OPENS_AFTER - 1)
    [(lane, token)] = WebhookDelivery.claim_due(4, per_endpoint=1, lease=30, lane_size=3)
    assert [d.seq for d in lane] == [1, 2, 3]
    failed_at = timezone.now()
    assert lane[0].mark_failed(token, 503, "HTTP 503", failed_at) == "failed"
    for rest in lane[1:]:
        rest.release(token)  # as the lane does after a failure
    endpoint.refresh_from_db()
    assert endpoint.is_open and 10 <= (endpoint.retry_at - failed_at).total_seconds() <= 12.5
    # Open: deliveries 2..6 are due on their own, but the endpoint waits its backoff.
    assert WebhookDelivery.claim_due(4, per_endpoint=2, lease=30, lane_size=3) == []
    reopen_now(endpoint)
    WebhookDelivery.objects.filter(seq=1).update(next_attempt_at=timezone.now())  # its own wait over too
    [(probe, probe_token)] = [(lane[0], t) for lane, t in WebhookDelivery.claim_due(4, per_endpoint=2, lease=30,
                                                                                    lane_size=3)]
    assert probe.seq == 2  # the least-tried: an event the receiver refuses is not probed again and again
    assert WebhookDelivery.claim_due(4, per_endpoint=2, lease=30, lane_size=3) == []  # one probe at a time
    assert probe.mark_delivered(probe_token, 200, timezone.now())
    endpoint.refresh_from_db()
    assert (endpoint.failures, endpoint.retry_at, endpoint.failing_since) == (0, None, None)
    lanes = WebhookDelivery.claim_due(4, per_endpoint=2, lease=30, lane_size=3)
    assert [[d.seq for d in lane] for lane, _ in lanes] == [[1, 3, 4], [5, 6]]  # closed: in seq order again


def test_the_endpoints_wait_grows_with_failures_in_a_row_whichever_delivery_failed(
        settings: Any, user: Any, make_task: Any) -> None:
    settings.IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS = 10
    settings.IMAGEGEN_WEBHOOK_RETRY_MAX_SECONDS = 3600
    endpoint = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    for _ in range(4):
        make_task()
    WebhookEndpoint.materialize()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failures=webhook_models.BREAKER_OPENS_AFTER - 1)
    waits = []
    for _ in range(4):
        reopen_now(endpoint)
        [(probe, token)] = claim(limit=1 if not waits else 10)  # then open: a probe, however many threads
        now = timezone.now()
        probe.mark_failed(token, None, "ConnectError", now)
        endpoint.refresh_from_db()
        waits.append((probe.seq, (endpoint.retry_at - now).total_seconds()))
    assert [seq for seq, _ in waits] == [1, 2, 3, 4]  # each delivery tried once ...
    for (_, wait), floor in zip(waits, (10, 20, 40, 80)):  # ... on one delivery's schedule
        assert floor <= wait <= floor * 1.25
    assert set(WebhookDelivery.objects.values_list("attempts", flat=True)) == {1}


def test_an_endpoint_waiting_on_its_breaker_leaves_the_claim_to_the_others(user: Any, other_user: Any,
                                                                          make_task: Any) -> None:
    dead = WebhookEndpoint.create_for(user, url=URL, events=["*"])
    alive = WebhookEndpoint.create_for(other_user, url=URL, events=["*"])
    for _ in range(30):
        make_task()  # the dead endpoint's backlog is the longest waiting
    make_task(user=other_user)
    WebhookEndpoint.materialize()
    WebhookEndpoint.objects.filter(pk=dead.pk).update(failures=webhook_models.BREAKER_OPENS_AFTER,
                                                      retry_at=timezone.now() + timedelta(minutes=5))
    assert [d.endpoint_id for d, _ in claim(limit=1)] == [alive.pk]
    WebhookDelivery.objects.filter(endpoint=dead).first().redeliver()  # the owner asks: a probe now
    assert [d.endpoint_id for d, _ in claim(limit=5)] == [dead.pk]  # one probe, not the backlog
    make_task(user=other_user)
    WebhookEndpoint.materialize()
    # The probe runs (another worker's, say): the dead endpoint's older backlog takes no thread's place.
    assert [d.endpoint_id for d, _ in claim(limit=1)] == [alive.pk]
