"""``/healthz`` for load balancers and orchestrators, ``/metrics`` for Prometheus.

``/healthz`` is public and says only which part failed (details go to the log).
``/metrics`` is for staff sessions, a bearer ``METRICS_TOKEN``, or anyone when
``METRICS_PUBLIC=1``.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _layer_round_trip(timeout: float) -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("healthz.")
    token = time.monotonic_ns()
    await layer.send(channel, {"type": "health.check", "token": token})
    message = await asyncio.wait_for(layer.receive(channel), timeout)
    if message.get("token") != token:
        raise RuntimeError("received a different message than was sent")


def check_channel_layer() -> None:
    """Send to a fresh channel and receive it back. On a private event loop: the
    pub/sub layer keeps a connection (and the test channel's subscription) per loop,
    and closes them when that loop closes, so nothing leaks into the server's loop."""
    timeout = settings.IMAGEGEN_HEALTH_TIMEOUT

    async def bounded() -> None:
        await asyncio.wait_for(_layer_round_trip(timeout), timeout)

    asyncio.run(bounded())


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "channel_layer": check_channel_layer}


def _run(name: str, check: Callable[[], None]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        check()
    except BaseException as exc:  # asyncio timeouts included: any failure is a 503, never a 500
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        logger.warning("Health check %s failed: %r", name, exc)
        reason = "timeout" if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) else type(exc).__name__
        return {"status": "error", "error": reason, "ms": round((time.monotonic() - started) * 1000, 1)}
    return {"status": "ok", "ms": round((time.monotonic() - started) * 1000, 1)}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 ``{"status": "ok", "checks": {...}}``, or 503 naming the failed parts in ``failed``."""
    checks = {name: _run(name, check) for name, check in CHECKS.items()}
    failed = [name for name, result in checks.items() if result["status"] != "ok"]
    if failed:
        return JsonResponse({"status": "error", "failed": failed, "checks": checks}, status=503)
    return JsonResponse({"status": "ok", "checks": checks})


def _metrics_allowed(request: HttpRequest) -> int | None:
    """None if allowed, else the status to answer (401: no credentials, 403: wrong ones)."""
    if settings.METRICS_PUBLIC:
        return None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = settings.METRICS_TOKEN
        offered = header.removeprefix("Bearer ").strip()
        if token and hmac.compare_digest(offered.encode(), token.encode()):
            return None
        return 403
    return 403 if user is not None and user.is_authenticated else 401


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    denied = _metrics_allowed(request)
    if denied is not None:
        response = JsonResponse(
            {"detail": "Metrics need a staff session or the METRICS_TOKEN bearer token."}, status=denied
        )
        if denied == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
