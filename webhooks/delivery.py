"""The delivery loop: one per worker process (``runworker`` and the embedded worker).

A ``Dispatcher`` thread turns new events into deliveries and claims due ones; a
bounded pool of its own threads makes the HTTP calls. A receiver that hangs
holds at most IMAGEGEN_WEBHOOK_ENDPOINT_CONCURRENCY lanes in the whole fleet
(counted in the database at each claim), never the task runners nor other
endpoints' slots. Everything it knows is in the database:
a worker killed with -9 leaves claims whose lease runs out, and any other
worker's loop takes those deliveries again.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections, connection
from django.utils import timezone

from imagegen_site.urlguard import ForbiddenURL, guarded_client
from notifications.models import Event

from . import signing
from .metrics import ATTEMPT_SECONDS, ATTEMPTS, DELIVERY_LAG_SECONDS
from .models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

# Deliveries of one endpoint one claim hands to one thread, in order: a busy endpoint then
# costs a claim transaction per this many events instead of one per event.
LANE_SIZE = 20


def lease_seconds() -> float:
    """How long a claim holds a delivery: past any attempt's end (connect, send and read each
    have the timeout), so only a dead worker's claim ever runs out."""
    return 3 * settings.IMAGEGEN_WEBHOOK_TIMEOUT + 5


def body_of(event: Event) -> bytes:
    """The event exactly as the WebSocket sends it."""
    return json.dumps(event.as_message(), cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def headers_for(endpoint: WebhookEndpoint, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.signature_header(endpoint.signing_secrets(), msg_id, timestamp, body),
    }


class Dispatcher:
    def __init__(self, name: str, halted: threading.Event | None = None) -> None:
        self.name = name
        self._halted = halted or threading.Event()
        self._stopping = threading.Event()
        self.concurrency = settings.IMAGEGEN_WEBHOOK_CONCURRENCY
        self.per_endpoint = settings.IMAGEGEN_WEBHOOK_ENDPOINT_CONCURRENCY
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="imagegen-webhook")
        self._lock = threading.Lock()
        self._running = 0  # lanes this process runs (each holds one pool thread)
        self._wake = threading.Event()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._thread: threading.Thread | None = None

    @property
    def stopped(self) -> bool:
        return self._halted.is_set() or self._stopping.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="imagegen-webhook-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; attempts in flight finish (bounded by the timeout) and record their outcome."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else 5)
        self._pool.shutdown(wait=True)
        for client in self._clients:
            client.close()

    def _loop(self) -> None:
        try:
            while not self.stopped:
                close_old_connections()
                try:
                    busy = self.run_once()
                except Exception:
                    logger.exception("Webhook delivery loop failed; retrying")
                    busy = False
                if not busy:
                    self._wake.wait(settings.IMAGEGEN_WEBHOOK_POLL_INTERVAL)
                    self._wake.clear()
        finally:
            connection.close()

    def run_once(self) -> bool:
        """Materialize new events and start due lanes. True: lanes were started and threads
        are left, look again now. False: wait for a lane to end or the poll interval. With
        every thread busy it does nothing at all: new events wait in the log (the cursor keeps
        them), and materializing once per new event while nothing could be claimed was a spin."""
        with self._lock:
            free = self.concurrency - self._running
        if free <= 0:
            return False
        WebhookEndpoint.materialize()
        # The per-endpoint cap is the fleet's: claim_due counts every process's live lanes.
        claimed = WebhookDelivery.claim_due(free, per_endpoint=self.per_endpoint, lease=lease_seconds(),
                                            lane_size=LANE_SIZE)
        for lane, token in claimed:
            with self._lock:
                self._running += 1
            self._pool.submit(self._run_lane, lane, token)
        # Deliveries made but not claimable (their endpoints at their cap, or waiting on their
        # breaker) are no reason to loop: a lane's end or the poll brings the next look.
        return bool(claimed) and len(claimed) < free

    def _run_lane(self, lane: list[WebhookDelivery], token: uuid.UUID) -> None:
        # Each pool thread keeps its connection (at most IMAGEGEN_WEBHOOK_CONCURRENCY per
        # process): reconnecting per delivery costs more than the delivery.
        close_old_connections()
        endpoint_id = lane[0].endpoint_id
        lease = lease_seconds()
        until = lane[0].claimed_until
        outcome = "delivered"
        try:
            for index, delivery in enumerate(lane):
                if self.stopped or outcome != "delivered":
                    # Stopping, or the receiver just failed: the rest go back unattempted. After a
                    # failure the endpoint's breaker is open: they wait for its probe to succeed.
                    for rest in lane[index:]:
                        rest.release(token)
                    break
                if until is not None and (until - timezone.now()).total_seconds() < lease / 2:
                    until = WebhookDelivery.renew(token, lease)  # rarely: attempts take milliseconds
                outcome = attempt(delivery, token, self._client())
        except Exception:
            # Claims left behind run out with their lease; never lose the thread.
            logger.exception("Webhook lane of endpoint %d crashed", endpoint_id)
        finally:
            with self._lock:
                self._running -= 1
            self._wake.set()  # a lane is free: the endpoint's next deliveries may go now

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            # One per pool thread, kept: connections to a receiver are reused (each new one is
            # resolved and checked by the guard); redirects are not followed (a 3xx fails).
            client = guarded_client(timeout=settings.IMAGEGEN_WEBHOOK_TIMEOUT, follow_redirects=False)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client


def attempt(delivery: WebhookDelivery, token: uuid.UUID, client: httpx.Client) -> str:
    """One HTTP attempt of a claimed delivery, its outcome recorded (fenced by ``token``).
    Returns "delivered", "failed", "gave_up" or "lost"."""
    endpoint = delivery.endpoint
    event = getattr(delivery, "event", None) or Event.objects.filter(pk=delivery.event_id).first()
    if event is None:
        outcome = delivery.mark_failed(token, None, "The event is no longer in the log (retention).",
                                       timezone.now(), final=True)
        ATTEMPTS.labels("gave_up").inc()
        return outcome
    body = body_of(event)
    started = time.monotonic()
    status: int | None = None
    error = ""
    try:
        with client.stream("POST", endpoint.url, content=body, headers=headers_for(endpoint, delivery.msg_id, body)) as response:
            status = response.status_code  # the body is not read: a receiver cannot make us buffer it
            if not 200 <= status < 300:
                error = f"HTTP {status} {response.reason_phrase}".strip()
                if 300 <= status < 400:
                    error += " (redirects are not followed)"
    except httpx.TimeoutException:
        error = f"No answer within {settings.IMAGEGEN_WEBHOOK_TIMEOUT:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except ForbiddenURL as exc:  # the name now resolves somewhere private, say
        error = f"Refused: {exc}"
    except Exception as exc:  # the guard's resolver: a name that does not resolve (any other bug: the same)
        error = str(exc) or type(exc).__name__
    ATTEMPT_SECONDS.observe(time.monotonic() - started)
    now = timezone.now()
    if not error:
        if not delivery.mark_delivered(token, status or 0, now):
            return "lost"
        ATTEMPTS.labels("delivered").inc()  # before the lag: a reader that sees the lag sees this too
        DELIVERY_LAG_SECONDS.observe(max((now - event.created_at).total_seconds(), 0))
        logger.info("Webhook %d: %s #%d delivered (attempt %d, HTTP %s)", endpoint.pk, event.type, event.seq,
                    delivery.attempts, status)
        return "delivered"
    outcome = delivery.mark_failed(token, status, error, now)
    if outcome != "lost":
        ATTEMPTS.labels(outcome).inc()
        logger.info("Webhook %d: %s #%d attempt %d failed: %s", endpoint.pk, event.type, event.seq,
                    delivery.attempts, error)
    return outcome


# --- started and stopped with the worker (WebhooksConfig.ready connects these) ------------------
_running: dict[int, Dispatcher] = {}
_running_lock = threading.Lock()


def start_with_worker(sender: Any, *, worker: Any, **kwargs: Any) -> None:
    if worker.burst:
        return  # a burst worker exits when the queue is empty: it would cut deliveries short
    dispatcher = Dispatcher(worker.name)
    with _running_lock:
        _running[id(worker)] = dispatcher
    dispatcher.start()
    logger.info("Webhook delivery started in worker %s (%d threads, %d per endpoint)", worker.name,
                dispatcher.concurrency, dispatcher.per_endpoint)


def stop_with_worker(sender: Any, *, worker: Any, **kwargs: Any) -> None:
    with _running_lock:
        dispatcher = _running.pop(id(worker), None)
    if dispatcher is not None:
        dispatcher.stop()
