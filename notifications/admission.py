"""Who may keep a WebSocket: Origin, attempt rate, token, and the per-user socket cap.

The consumer accepts every handshake and then closes with one of these codes,
so a client always learns why (an HTTP 403 during the handshake tells it nothing).
"""
from __future__ import annotations

import itertools
import logging
from typing import Any

from django.conf import settings
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

from imagegen_site.cache import process_cache

from .batching import Batcher
from .presence import presence
from .ratelimit import WINDOW_SECONDS, connect_buckets, hit, window_key

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4001  # bad, missing or expired token: reconnect with a fresh one
CLOSE_FORBIDDEN_ORIGIN = 4003
CLOSE_TOO_SLOW = 4008  # unsent frames piled up: reconnect and resume at your own pace
CLOSE_UNAVAILABLE = 4013  # channel layer unreachable: retry with backoff, then resume
CLOSE_RATE_LIMITED = 4029  # too many attempts, or too many open sockets for this user


async def accept_on_arrival(scope: dict, receive: Any, send: Any) -> dict:
    """Accept the handshake as soon as it arrives, before the token, the database or the channel
    layer is asked anything; returns that first message (the caller dispatches it).

    Daphne closes a handshake that is not accepted within its connect timeout (5 s), and the client
    then sees no HTTP answer at all. Under a reconnect storm, or on a server that has just started
    (its first connections warm its pools), everything before the accept queues: accepting first
    keeps that wait inside an open socket, and admission answers it with a close code.
    """
    first = await receive()
    if first["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
        scope["accepted"] = True
    return first


# (address, user id or None, a serial that keeps two attempts of one client apart in a batch)
Attempt = tuple["str | None", "int | None", int]
# (within the attempt rate, the user's sockets in other processes, when the user's last socket closed)
Reading = tuple[bool, int, "float | None"]
_serial = itertools.count()


def admission_readings(attempts: list[Attempt]) -> dict[Attempt, Reading]:
    """Count each attempt in its rate windows and read its user's socket counts: with Redis, one
    pipelined round trip for the whole batch (the windows' INCR and EXPIRE, one MGET of the
    presence keys); with another cache, the same through the cache API. Fails open like the cache."""
    cache = process_cache()
    if isinstance(cache, RedisCache):
        readings = _pipelined(cache, attempts)
        return readings if readings is not None else {attempt: (True, 0, None) for attempt in attempts}
    readings: dict[Attempt, Reading] = {}
    for attempt in attempts:
        ip, user_id, _ = attempt
        allowed = all(hit(bucket, limit) for bucket, limit in connect_buckets(ip, user_id))
        others, closed_at = presence._others_for(user_id) if user_id is not None else (0, None)
        readings[attempt] = (allowed, others, closed_at)
    return readings


def _pipelined(cache: RedisCache, attempts: list[Attempt]) -> dict[Attempt, Reading] | None:
    """None when Redis did not answer."""
    client: Any = cache._cache.get_client(write=True)
    loads = cache._cache._serializer.loads
    pipe = client.pipeline(transaction=False)
    plans: list[tuple[Attempt, list[int], list[str]]] = []
    keys: list[str] = []
    for attempt in attempts:
        ip, user_id, _ = attempt
        limits = []
        for bucket, limit in connect_buckets(ip, user_id):
            key = cache.make_key(window_key(bucket))
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS + 1)
            limits.append(limit)
        wanted = presence.keys_for(user_id) if user_id is not None else []
        keys += wanted
        plans.append((attempt, limits, wanted))
    if keys:
        pipe.mget([cache.make_key(key) for key in keys])
    # Through the fail-open backend's guard when there is one: it logs once per outage and then
    # leaves Redis alone for a few seconds, as every other cache call does.
    guarded = getattr(cache, "_call", None)
    try:
        results = guarded(None, pipe.execute) if guarded is not None else pipe.execute()
    except (RedisError, OSError) as exc:
        logger.warning("Connection limits not checked (%s); admitting", exc)
        return None
    if results is None:
        return None
    values = dict(zip(keys, (None if v is None else loads(v) for v in results[-1]))) if keys else {}
    readings: dict[Attempt, Reading] = {}
    position = 0
    for attempt, limits, wanted in plans:
        counts = results[position:position + 2 * len(limits):2]
        position += 2 * len(limits)
        user_id = attempt[1]
        others, closed_at = (presence.others_from(user_id, {k: values.get(k) for k in wanted})
                             if user_id is not None else (0, None))
        readings[attempt] = (all(int(n) <= limit for n, limit in zip(counts, limits)), others, closed_at)
    return readings


# Every handshake of a reconnect storm asks at once: one cache round trip per batch (batching.py).
_readings: Batcher[Attempt, Reading] = Batcher(admission_readings, default=(True, 0, None), database=False)


async def admit(scope: dict) -> tuple[int | None, str, int | None]:
    """``(close code or None, result label for the metrics, user id if admitted)``.

    An admitted socket is counted in ``presence``: the consumer must call
    ``presence.close(user_id)`` when it goes.
    """
    if not scope.get("origin_allowed", True):
        return CLOSE_FORBIDDEN_ORIGIN, "origin_rejected", None  # logged by the auth middleware
    user = scope.get("user")
    user_id = user.pk if user is not None and user.is_authenticated else None
    client = scope.get("client") or [None]
    # Attempts count per address even without a valid token: that is what a token-guessing flood looks like.
    allowed, others, closed_at = await _readings.load((client[0], user_id, next(_serial)))
    if not allowed:
        return CLOSE_RATE_LIMITED, "rate_limited", None
    if user_id is None:
        return CLOSE_UNAUTHORIZED, "unauthorized", None
    if not presence.open_counted(user_id, settings.IMAGEGEN_WS_MAX_SOCKETS_PER_USER, others, closed_at):
        return CLOSE_RATE_LIMITED, "too_many_sockets", None
    return None, "accepted", user_id
