"""``GET /api/events/?after=N&wait=S``: the event log over HTTP, for clients without WebSocket.

An async Django view, not a DRF one: under ASGI a sync view that waits 30 s
would hold Django's single sync thread for all of it. Authentication (a
bearer token or an API key) and throttling reuse simplejwt's ``JWTAuthentication``,
``ApiKeyAuthentication`` and DRF's
``ScopedRateThrottle`` (scope ``events``), run in a worker thread, and errors
are the API's JSON ``{"detail": ...}``.

When nothing is new the request waits on the channel layer, not on the
database: a fresh channel joins the user's group, the log is read once more
(an event that committed before the join would otherwise be missed until the
timeout), then one push or the timeout ends the wait. The push only wakes
us; the page is always read from the log.
"""
from __future__ import annotations

import asyncio
import logging
import math
from contextlib import suppress
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, JsonResponse
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication

from apikeys.authentication import INVALID as INVALID_KEY
from apikeys.authentication import ApiKeyAuthentication, key_from_header
from apikeys.models import ApiKey
from imagegen_site.throttling import ScopedThrottle

from .events import group_name
from .replay import SEQ_RANGE, Page, aread_page, parse_seq

logger = logging.getLogger(__name__)

MAX_WAIT = 30.0
# With the channel layer unreachable there is nothing to wait on: look at the
# log once more after this pause (bounded; the client polls again anyway).
LAYER_DOWN_PAUSE = 2.0


class EventsThrottle(ScopedThrottle):
    scope = "events"


def error(status: int, detail: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


@dataclass
class Caller:
    """Who sent a request, and until when their credential holds."""

    user: Any
    expires: float | None = None  # the access token's expiry; None for an API key (never expires)
    api_key_id: int | None = None


def unauthorized(detail: str) -> JsonResponse:
    return error(401, detail, WWW_Authenticate='Bearer realm="api"')


def authenticate(request: HttpRequest, *, query: bool = False) -> tuple[Caller | None, JsonResponse | None]:
    """The caller by ``Authorization: Bearer`` or ``Api-Key`` (and, with ``query``, by
    ``?token=`` or ``?api_key=``: EventSource cannot set headers), or the 401 to answer."""
    jwt = JWTAuthentication()
    raw_header = request.headers.get("Authorization", "")
    try:
        if key_from_header(raw_header) is not None:
            user, key = ApiKeyAuthentication().authenticate(Request(request, authenticators=()))  # type: ignore[misc]
            return Caller(user, None, key.pk), None
        result = jwt.authenticate(request)  # type: ignore[arg-type]
        if result is None and query and request.GET.get("token"):
            token = jwt.get_validated_token(request.GET["token"].encode())
            result = jwt.get_user(token), token
        if result is not None:
            return Caller(result[0], float(result[1]["exp"])), None
    except AuthenticationFailed as exc:
        detail = exc.detail.get("detail", exc.detail) if isinstance(exc.detail, dict) else exc.detail
        return None, unauthorized(str(detail))
    if query and request.GET.get("api_key"):
        found = ApiKey.objects.authenticate(request.GET["api_key"])
        if found is None:
            return None, unauthorized(INVALID_KEY)
        return Caller(found.user, None, found.pk), None
    return None, unauthorized("Authentication credentials were not provided.")


def authenticate_and_throttle(request: HttpRequest) -> tuple[Any, JsonResponse | None]:
    """The caller, or the 401/429 to answer with (runs in a thread: it reads the DB and cache)."""
    caller, denied = authenticate(request)
    if caller is None:
        return None, denied
    user = caller.user
    drf_request = Request(request, authenticators=())
    drf_request.user = user
    throttle = EventsThrottle()
    if not throttle.allow_request(drf_request, SimpleNamespace(throttle_scope="events")):
        wait = math.ceil(throttle.wait() or 1)
        return None, error(429, f"Request was throttled. Expected available in {wait} seconds.", Retry_After=str(wait))
    return user, None


aauthenticate_and_throttle = sync_to_async(authenticate_and_throttle, thread_sensitive=False)


def parse_wait(raw: str | None) -> float | None:
    """Seconds to wait, or None for a bad value. An empty ``wait=`` is bad, not 0:
    the schema says a number, and a client that sent nothing meant to leave it out."""
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= MAX_WAIT else None


async def events(request: HttpRequest) -> JsonResponse:
    if request.method != "GET":
        return error(405, f'Method "{request.method}" not allowed.', Allow="GET")
    user, denied = await aauthenticate_and_throttle(request)
    if denied is not None:
        return denied
    raw_after = request.GET.get("after", "0")
    after = parse_seq(raw_after or "0")
    if after is None:
        return error(400, f"after must be {SEQ_RANGE}.")
    wait = parse_wait(request.GET.get("wait"))
    if wait is None:
        return error(400, f"wait must be a number of seconds from 0 to {MAX_WAIT:.0f}.")
    page = await aread_page(user.pk, after)
    if not page.events and page.recovered and wait > 0:
        page = await wait_for_events(user.pk, after, wait)
    return JsonResponse(page.as_dict())


async def wait_for_events(user_id: int, after: int, wait: float) -> Page:
    layer = get_channel_layer()
    group = group_name(user_id)
    channel: str | None = None
    dropped = False  # a cancelled receive() already released the channel
    try:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
    except Exception as exc:
        logger.warning("Long-poll cannot wait on the channel layer (%s); checking the log once more", exc)
        await asyncio.sleep(min(wait, LAYER_DOWN_PAUSE))
        if channel is not None:
            await leave(layer, group, channel, dropped)
        return await aread_page(user_id, after)
    try:
        page = await aread_page(user_id, after)
        if page.events or not page.recovered:
            return page
        try:
            async with asyncio.timeout(wait):  # cancels the receive, which releases the channel
                await layer.receive(channel)
        except TimeoutError:
            dropped = True
        return await aread_page(user_id, after)
    finally:
        await leave(layer, group, channel, dropped)


async def leave(layer: Any, group: str, channel: str, dropped: bool) -> None:
    """Leave the group and release the channel.

    The pub/sub layer unsubscribes and forgets a channel only when a pending
    ``receive()`` on it is cancelled (that is how a stopping consumer releases
    its channel); after a receive that returned, start one and cancel it.
    """
    with suppress(Exception):
        await layer.group_discard(group, channel)
    for _ in range(0 if dropped else 10):
        waiter = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)
        if waiter.done():  # another push was already queued: take it and try again
            continue
        waiter.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await waiter
        return
