"""Webhook endpoints and their deliveries, read from the owner's durable event log.

Design (docs/webhooks.md, "Why a cursor"): the event's own transaction writes
nothing for webhooks. Each endpoint keeps a ``cursor``, the last seq of its
owner's log it has turned into ``WebhookDelivery`` rows; the workers' delivery
loop advances it (``WebhookEndpoint.materialize``) and claims due deliveries
with ``SKIP LOCKED`` (``WebhookDelivery.claim_due``). Because a user's seqs
commit in order (the counter row lock), reading ``seq > cursor`` never skips
an event that commits later with a smaller seq.

Every outcome write presents the claim token, so an attempt whose lease ran
out (its worker was presumed dead and another took over) cannot overwrite the
newer attempt's result.
"""
from __future__ import annotations

import logging
import random
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, Value, When, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from notifications import events as notification_events
from notifications.models import Event, EventCounter

from . import signing
from .metrics import ENDPOINTS_DISABLED

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

ALL_EVENTS = "*"
#: Retries go on for at least a day, whatever the disable window (the contract's floor).
MIN_RETRY_WINDOW = timedelta(hours=24)
MATERIALIZE_BATCH = 500
#: First key of the PostgreSQL advisory lock that serialises delivery claims per endpoint (the
#: second key is the endpoint id), so the per-endpoint lane cap holds across worker processes.
CLAIM_LOCK = 7_301_014
#: Failed attempts in a row (since the endpoint's last success) that open its circuit breaker.
#: Not one: a receiver that refuses some requests but answers the rest (a flaky one, or one event
#: it chokes on) must keep its throughput; a dead one fails this many at once and then waits.
BREAKER_OPENS_AFTER = 3


class Unavailable(Exception):
    """The delivery cannot be redelivered now (in flight, or its endpoint is disabled)."""


class EndpointQuerySet(models.QuerySet["WebhookEndpoint"]):
    def for_user(self, user: AbstractBaseUser) -> EndpointQuerySet:
        return self.filter(user=user)

    def with_backlog(self) -> EndpointQuerySet:
        """Enabled endpoints whose owner's log has events past their cursor."""
        last_seq = EventCounter.objects.filter(user_id=OuterRef("user_id")).values("last_seq")[:1]
        return self.filter(enabled=True, cursor__lt=Subquery(last_seq))


class WebhookEndpoint(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2048)
    events = models.JSONField(help_text='Event types delivered, or ["*"] for all')
    description = models.CharField(max_length=500, blank=True, default="")
    # Kept in the clear: an HMAC needs the key itself (a hash could not sign).
    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True, default="")
    # The first failure since the last success: continuous failure for DISABLE_AFTER disables.
    failing_since = models.DateTimeField(null=True, blank=True)
    # The last seq of the owner's log already turned into deliveries (or skipped by the filter).
    cursor = models.BigIntegerField(default=0)
    # The circuit breaker: failed attempts in a row since the last success (open from
    # BREAKER_OPENS_AFTER on), and while open no attempt of this endpoint before ``retry_at``.
    failures = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = EndpointQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"webhook {self.pk} -> {self.url}"

    # --- what it receives and how it is signed ---------------------------------------------
    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.events or event_type in self.events

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        """The current secret, plus the previous one during its grace period after a rotation."""
        now = now or timezone.now()
        if self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > now:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def summary(self) -> dict[str, Any]:
        """The endpoint as the owner's ``webhook_disabled`` event carries it (never the secret)."""
        return {"id": self.pk, "url": self.url, "events": self.events, "description": self.description,
                "enabled": self.enabled, "disabled_reason": self.disabled_reason}

    # --- changes by the owner -------------------------------------------------------------
    @classmethod
    def create_for(cls, user: AbstractBaseUser, *, url: str, events: list[str], description: str = "") -> WebhookEndpoint:
        """A new endpoint that receives the owner's events from now on (not the log's past)."""
        with transaction.atomic():
            return cls.objects.create(user=user, url=url, events=events, description=description,
                                      secret=signing.new_secret(), cursor=EventCounter.last_seq_for(user.pk))

    def change(self, **fields: Any) -> None:
        """Owner's PATCH: url, events, description, enabled. Enabling a disabled endpoint
        resumes it where it stopped: due retries at once, then the events logged meanwhile
        (those still in the log, see IMAGEGEN_EVENT_RETENTION_SECONDS)."""
        with transaction.atomic():
            locked = WebhookEndpoint.objects.select_for_update().get(pk=self.pk)
            for name in ("url", "events", "description"):
                if name in fields:
                    setattr(locked, name, fields[name])
            if fields.get("enabled") is True and not locked.enabled:
                locked.enabled, locked.disabled_at, locked.disabled_reason, locked.failing_since = True, None, "", None
                locked.failures, locked.retry_at = 0, None  # a fresh start: the backlog flows at once
                locked.deliveries.filter(status=WebhookDelivery.Status.PENDING).update(next_attempt_at=timezone.now())
            elif fields.get("enabled") is False and locked.enabled:
                locked.enabled, locked.disabled_at, locked.disabled_reason = False, timezone.now(), "Disabled by its owner."
            locked.save()
        self.refresh_from_db()

    def rotate_secret(self) -> str:
        """A new secret; the old one keeps signing (beside it) for IMAGEGEN_WEBHOOK_SECRET_GRACE."""
        with transaction.atomic():
            locked = WebhookEndpoint.objects.select_for_update().get(pk=self.pk)
            locked.previous_secret = locked.secret
            locked.previous_secret_expires_at = timezone.now() + timedelta(seconds=settings.IMAGEGEN_WEBHOOK_SECRET_GRACE)
            locked.secret = signing.new_secret()
            locked.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
        self.refresh_from_db()
        return self.secret

    # --- the delivery loop's side ---------------------------------------------------------
    @classmethod
    def materialize(cls, limit: int = 100) -> int:
        """Turn events past the cursors of up to ``limit`` endpoints into pending deliveries.
        Endpoints another process is materializing are skipped (SKIP LOCKED), not waited for.
        Returns how many deliveries were created."""
        now = timezone.now()
        with transaction.atomic():
            endpoints = list(cls.objects.with_backlog().order_by("id").select_for_update(skip_locked=True)[:limit])
            by_user: dict[int, list[WebhookEndpoint]] = defaultdict(list)
            for endpoint in endpoints:
                by_user[endpoint.user_id].append(endpoint)
            if not by_user:
                return 0
            # Every owner's events past its endpoints' lowest cursor, at most MATERIALIZE_BATCH each,
            # in one query: a query per owner made a loop over 100 busy endpoints 300 round trips.
            after = Q()
            for user_id, owned in by_user.items():
                after |= Q(user_id=user_id, seq__gt=min(e.cursor for e in owned))
            ranked = Event.objects.filter(after).annotate(
                rank=Window(RowNumber(), partition_by=[F("user_id")], order_by=F("seq").asc()))
            logged: dict[int, list[tuple[int, int, str, datetime]]] = defaultdict(list)
            for user_id, pk, seq, type_, at in (ranked.filter(rank__lte=MATERIALIZE_BATCH).order_by("user_id", "seq")
                                                .values_list("user_id", "id", "seq", "type", "created_at")):
                logged[user_id].append((pk, seq, type_, at))
            rows = [
                WebhookDelivery(endpoint=e, event_id=pk, seq=seq, event_type=type_, event_created_at=at,
                                next_attempt_at=now)
                for user_id, events in logged.items() for e in by_user[user_id]
                for pk, seq, type_, at in events if seq > e.cursor and e.wants(type_)
            ]
            WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True)
            moved = {e.pk: events[-1][1] for user_id, events in logged.items() for e in by_user[user_id]
                     if e.cursor < events[-1][1]}
            if moved:
                cls.objects.filter(pk__in=moved).update(
                    cursor=Case(*(When(pk=pk, then=Value(last)) for pk, last in moved.items()),
                                output_field=models.BigIntegerField()))
        return len(rows)

    @property
    def is_open(self) -> bool:
        """The breaker is open: one probe at a time, none before ``retry_at``."""
        return self.failures >= BREAKER_OPENS_AFTER

    def note_success(self) -> None:
        """A 2xx closes the breaker and ends the failure run."""
        if self.failing_since is None and not self.failures:
            return  # as read with the claim: nothing to close (saves a write per delivery)
        WebhookEndpoint.objects.filter(pk=self.pk).filter(Q(failing_since__isnull=False) | Q(failures__gt=0)).update(
            failing_since=None, failures=0, retry_at=None)

    def note_failure(self, error: str, now: datetime) -> bool:
        """Record a failed attempt: the breaker opens (or stays open) and the endpoint's next
        attempt waits the backoff of this many failures in a row, whichever delivery fails, so
        a dead receiver with a backlog is tried on one delivery's schedule, not each one's.
        Disable the endpoint when it has failed without a success for
        IMAGEGEN_WEBHOOK_DISABLE_AFTER. True if this call disabled it."""
        window = timedelta(seconds=settings.IMAGEGEN_WEBHOOK_DISABLE_AFTER)
        with transaction.atomic():
            locked = WebhookEndpoint.objects.select_for_update().filter(pk=self.pk).first()
            if locked is None:
                return False  # deleted meanwhile
            locked.failures += 1
            locked.failing_since = locked.failing_since or now
            fields = ["failures", "failing_since"]
            if locked.is_open:
                # Later than what is already set, never earlier: two lanes failing at once must
                # not shorten the wait the other one set.
                retry_at = now + timedelta(seconds=retry_delay(locked.failures - BREAKER_OPENS_AFTER + 1))
                locked.retry_at = max(retry_at, locked.retry_at) if locked.retry_at else retry_at
                fields.append("retry_at")
            disabled = locked.enabled and now - locked.failing_since >= window
            if disabled:
                locked.enabled, locked.disabled_at = False, now
                locked.disabled_reason = (f"Every delivery failed for {_duration(window)} "
                                          f"(since {locked.failing_since.isoformat()}); last error: {error}")[:500]
                fields += ["enabled", "disabled_at", "disabled_reason"]
            locked.save(update_fields=[*fields, "updated_at"])
            if not disabled:
                return False
            event = Event.append(user_id=locked.user_id, task_id=None, type=Event.Type.WEBHOOK_DISABLED,
                                 data={"webhook": locked.summary(), "failing_since": locked.failing_since.isoformat()},
                                 created_at=now)
            # Durable already; the push is only the fast path (as for task events).
            transaction.on_commit(partial(notification_events.publish, event.user_id, event.as_message()), robust=True)
        ENDPOINTS_DISABLED.inc()
        logger.warning("Webhook %d of user %d disabled: %s", locked.pk, locked.user_id, locked.disabled_reason)
        return True


def _duration(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"


class DeliveryQuerySet(models.QuerySet["WebhookDelivery"]):
    def waiting(self, now: datetime) -> DeliveryQuerySet:
        """Pending, due, and not held by a live attempt (whatever its endpoint's state)."""
        return self.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now).filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # gave up: retried for the whole window, or the event left the log

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    # Plain values, not a foreign key: the event log is purged by raw batch deletes.
    event_id = models.BigIntegerField()
    seq = models.BigIntegerField()
    event_type = models.CharField(max_length=32)
    event_created_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The running attempt's claim: the lease bounds how long a dead worker's claim blocks a retry.
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DeliveryQuerySet.as_manager()
    #: The event, loaded by ``claim_due`` (None: purged from the log meanwhile).
    event: Event | None

    class Meta:
        ordering = ["-seq", "-id"]
        constraints = [models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_delivery_once_per_event")]
        indexes = [
            # The claim's two reads per endpoint (``claim_due``): its longest-waiting delivery, and
            # its pending ones in seq order. Pending rows only: a busy endpoint's delivered rows
            # (kept for the event retention) are never scanned.
            models.Index(fields=["endpoint", "next_attempt_at"], name="webhook_delivery_waiting",
                         condition=Q(status="pending")),
            models.Index(fields=["endpoint", "seq"], name="webhook_delivery_pending",
                         condition=Q(status="pending")),
            models.Index(fields=["endpoint", "-seq"], name="webhook_delivery_log"),
            # The live lanes counted at every claim (``live_lanes``): only rows in flight, a handful.
            models.Index(fields=["endpoint", "claimed_until"], name="webhook_delivery_claimed",
                         condition=Q(claim_token__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} #{self.seq} -> webhook {self.endpoint_id}"

    @property
    def msg_id(self) -> str:
        """``webhook-id``: the same for every attempt of this event to this endpoint."""
        return f"msg_{self.endpoint_id}_{self.seq}"

    @property
    def in_flight(self) -> bool:
        return self.claim_token is not None and self.claimed_until is not None and self.claimed_until > timezone.now()

    @classmethod
    def claim_due(cls, lanes: int, *, per_endpoint: int, lease: float,
                  lane_size: int = 1) -> list[tuple[list[WebhookDelivery], uuid.UUID]]:
        """Claim due deliveries as up to ``lanes`` lanes: each lane is up to ``lane_size``
        deliveries of one endpoint in seq order, attempted one after the other by one thread.

        Endpoints are served the longest-waiting first, one lane each before any gets a second.
        One endpoint has at most ``per_endpoint`` lanes running at once across the whole fleet:
        a lane is live while a delivery holds its token under an unexpired lease, and the live
        lanes are counted in the database under a per-endpoint lock (``_lock_endpoints``), so
        two workers claiming at once cannot both take an endpoint's last slot. An endpoint whose
        breaker is open (``failures`` > 0) gets nothing before its ``retry_at``, and then one
        probe at a time: a lane of one delivery, the least-tried one (lowest seq among equals),
        so a receiver that refuses one event is probed with another and a receiver that is down
        sees one request per backoff step. Endpoints at their cap or waiting on their breaker
        are not candidates at all: a dead receiver's backlog never crowds the others out.

        Lanes share one claim transaction, so a busy endpoint costs one claim per ``lane_size``
        events, not one per event. Each claim counts an attempt at once: a worker killed
        mid-attempt still leaves it counted, and its lanes keep their slots until their lease
        runs out. The lease covers one attempt; a lane renews it for its remaining deliveries
        as it goes (``renew``)."""
        if lanes <= 0:
            return []
        now = timezone.now()
        with transaction.atomic():
            # Unlocked first look: endpoints already at their cap are not candidates, nor are open
            # ones whose probe is running (in any worker): they would take a place in ``ready``
            # and get no lane, and a few dead receivers could then fill it.
            live = cls.live_lanes(now)
            saturated = [endpoint for endpoint, n in live.items() if n >= per_endpoint]
            first_waiting = (cls.objects.waiting(now).filter(endpoint_id=OuterRef("pk"))
                             .order_by("next_attempt_at").values("next_attempt_at")[:1])
            ready = list(
                WebhookEndpoint.objects.filter(enabled=True).exclude(pk__in=saturated)
                .exclude(failures__gte=BREAKER_OPENS_AFTER, pk__in=list(live))
                .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
                .annotate(first_waiting=Subquery(first_waiting)).filter(first_waiting__isnull=False)
                .order_by("first_waiting", "pk")[:lanes]
            )
            # Lock only the endpoints this claim can serve, so a concurrent claim in another
            # worker finds the rest free.
            held = cls._lock_endpoints({e.pk for e in ready})
            # Counted again under the locks: authoritative, whichever process runs the lanes.
            running = cls.live_lanes(now, held)
            endpoints = [e for e in ready if e.pk in held]
            plan: dict[int, int] = {}
            budget = lanes
            for top_up in (False, True):  # one lane each first, then the rest of each one's room
                for endpoint in endpoints:
                    room = (1 if endpoint.is_open else per_endpoint) - running.get(endpoint.pk, 0)
                    add = min((room if top_up else min(room, 1)) - plan.get(endpoint.pk, 0), budget)
                    if add > 0:
                        plan[endpoint.pk] = plan.get(endpoint.pk, 0) + add
                        budget -= add
            taken: list[list[WebhookDelivery]] = []
            for endpoint in endpoints:
                if not plan.get(endpoint.pk):
                    continue
                waiting = cls.objects.waiting(now).filter(endpoint_id=endpoint.pk)
                if endpoint.is_open:  # the breaker's probe
                    rows = list(waiting.order_by("attempts", "seq").select_for_update(skip_locked=True)[:1])
                else:
                    rows = list(waiting.order_by("seq").select_for_update(skip_locked=True)[: plan[endpoint.pk] * lane_size])
                for delivery in rows:
                    delivery.endpoint = endpoint
                taken += [rows[i:i + lane_size] for i in range(0, len(rows), lane_size)]
            claimed = []
            for lane in taken:
                token, until = uuid.uuid4(), now + timedelta(seconds=lease)
                cls.objects.filter(pk__in=[d.pk for d in lane]).update(
                    attempts=models.F("attempts") + 1, claim_token=token, claimed_until=until, last_attempt_at=now)
                for delivery in lane:
                    delivery.attempts += 1
                    delivery.claim_token, delivery.claimed_until, delivery.last_attempt_at = token, until, now
                claimed.append((lane, token))
        # The events they carry, in one query (a plain id, not a foreign key: see event_id).
        events = Event.objects.in_bulk([d.event_id for lane, _ in claimed for d in lane])
        for lane, _ in claimed:
            for delivery in lane:
                delivery.event = events.get(delivery.event_id)
        return claimed

    @classmethod
    def live_lanes(cls, now: datetime, endpoints: set[int] | None = None) -> dict[int, int]:
        """Running lanes by endpoint, fleet-wide: distinct claim tokens under an unexpired lease
        (a lane's token stays on its deliveries not yet finished, so it counts until the lane
        ends, or until the lease runs out if its worker died)."""
        live = cls.objects.filter(claim_token__isnull=False, claimed_until__gt=now)
        if endpoints is not None:
            live = live.filter(endpoint_id__in=endpoints)
        counted = live.values("endpoint_id").annotate(lanes=models.Count("claim_token", distinct=True))
        return {row["endpoint_id"]: row["lanes"] for row in counted}

    @staticmethod
    def _lock_endpoints(endpoints: set[int]) -> set[int]:
        """Those of ``endpoints`` this transaction now holds the claim lock of. PostgreSQL:
        a transaction-scoped advisory lock per endpoint, tried, never waited for (the claim
        skips an endpoint another claim holds, and try-locks cannot deadlock). Not the
        endpoint's row lock: materializing holds that on every busy endpoint at every loop, and
        claims would skip exactly the endpoints with work. SQLite runs one write transaction
        at a time (BEGIN IMMEDIATE), so every endpoint is already held."""
        if not endpoints or connection.vendor != "postgresql":
            return set(endpoints)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM unnest(%s::bigint[]) AS id "
                "WHERE pg_try_advisory_xact_lock(%s, (id %% 2147483647)::int)",
                [sorted(endpoints), CLAIM_LOCK])
            return {row[0] for row in cursor.fetchall()}

    @classmethod
    def renew(cls, token: uuid.UUID, lease: float) -> datetime:
        """Extend the lease of a lane's deliveries not yet attempted; returns the new end."""
        until = timezone.now() + timedelta(seconds=lease)
        cls.objects.filter(claim_token=token).update(claimed_until=until)
        return until

    def release(self, token: uuid.UUID) -> None:
        """Give a claimed delivery back unattempted (the lane stopped before it): due again at once."""
        self._fenced(token).update(claim_token=None, claimed_until=None, attempts=models.F("attempts") - 1)

    def _fenced(self, token: uuid.UUID) -> DeliveryQuerySet:
        return WebhookDelivery.objects.filter(pk=self.pk, claim_token=token)

    def mark_delivered(self, token: uuid.UUID, status_code: int, now: datetime) -> bool:
        """False: the claim was lost (lease expired and retaken, or the endpoint deleted)."""
        # The breaker closes first: a 2xx proves the receiver alive whoever owns the claim now,
        # and whoever then sees this delivered sees the endpoint closed.
        self.endpoint.note_success()
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # No wait for the WAL flush: a crash can lose only this "delivered" mark, and then the
                # event is sent once more, which at-least-once delivery allows (receivers dedupe by
                # webhook-id). The flush wait was most of a delivery's time on a busy disk.
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            done = self._fenced(token).update(status=self.Status.DELIVERED, delivered_at=now,
                                              last_status_code=status_code, last_error="", next_attempt_at=None,
                                              claim_token=None, claimed_until=None)
        return bool(done)

    def mark_failed(self, token: uuid.UUID, status_code: int | None, error: str, now: datetime,
                    final: bool = False) -> str:
        """Schedule the next attempt (backoff with jitter) or give up once the delivery has been
        retried for the whole window (or at once with ``final``: its event left the log).
        Returns "failed", "gave_up" or "lost" (claim lost)."""
        window = max(MIN_RETRY_WINDOW, timedelta(seconds=settings.IMAGEGEN_WEBHOOK_DISABLE_AFTER))
        give_up = final or now - self.created_at >= window
        update: dict[str, Any] = {"last_status_code": status_code, "last_error": error[:500],
                                  "claim_token": None, "claimed_until": None}
        if give_up:
            update.update(status=self.Status.FAILED, next_attempt_at=None)
        else:
            update["next_attempt_at"] = now + timedelta(seconds=retry_delay(self.attempts))
        if not final:  # a purged event is not the receiver's failure
            # Before the claim is let go: in between, the endpoint would look free to probe at
            # once. The attempt failed whoever owns the claim now, so it counts either way.
            self.endpoint.note_failure(error, now)
        if not self._fenced(token).update(**update):
            return "lost"
        return "gave_up" if give_up else "failed"

    def redeliver(self) -> None:
        """The owner's or an admin's "send it again": due now, same ``webhook-id``."""
        with transaction.atomic():
            locked = WebhookDelivery.objects.select_for_update().select_related("endpoint").get(pk=self.pk)
            if locked.in_flight:
                raise Unavailable("An attempt of this delivery is running; try again when it has finished.")
            if not locked.endpoint.enabled:
                raise Unavailable("The endpoint is disabled; enable it first (PATCH enabled=true).")
            now = timezone.now()
            WebhookDelivery.objects.filter(pk=self.pk).update(status=self.Status.PENDING, next_attempt_at=now,
                                                              delivered_at=None)
            # The owner asked for an attempt now: an open breaker probes at once instead of at its
            # next step (the probe is its least-tried delivery, not necessarily this one).
            WebhookEndpoint.objects.filter(pk=locked.endpoint_id, retry_at__gt=now).update(retry_at=now)
        self.refresh_from_db()


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: BASE, 2xBASE, 4xBASE ...
    capped at IMAGEGEN_WEBHOOK_RETRY_MAX_SECONDS, plus up to 25 % jitter so the retries of a
    receiver that came back do not arrive all at once."""
    base = settings.IMAGEGEN_WEBHOOK_RETRY_BASE_SECONDS
    delay = min(settings.IMAGEGEN_WEBHOOK_RETRY_MAX_SECONDS, base * 2 ** min(max(attempts - 1, 0), 30))
    return delay * (1 + 0.25 * random.random())
