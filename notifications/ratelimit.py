"""Connection-attempt limits for the WebSocket, shared by all server processes.

Fixed windows in the Django cache (Redis in production, so every daphne
process counts into the same window). A reconnect storm after a deploy is the
case this guards against (every client of a restarted fleet reconnecting at
once); a window boundary may let up to
twice the limit through, which is fine for that purpose.

Everything here fails open: when the cache is unreachable, connections are
admitted. The event log, not the limiter, is what must never fail.
"""
from __future__ import annotations

import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings

from imagegen_site.cache import process_cache

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def window_key(bucket: str, window: int = WINDOW_SECONDS) -> str:
    return f"imagegen:rl:{bucket}:{int(time.time() // window)}"


def hit(bucket: str, limit: int, window: int = WINDOW_SECONDS) -> bool:
    """Count one attempt in ``bucket``'s current window; False when it is over ``limit``."""
    key = window_key(bucket, window)
    cache = process_cache()
    try:
        cache.add(key, 0, window + 1)
        count = cache.incr(key)
    except Exception as exc:  # a missing key after an eviction, or any cache failure
        logger.warning("Rate limit %s not checked (%s); admitting", bucket, exc)
        return True
    return count <= limit


def connect_buckets(ip: str | None, user_id: int | None) -> list[tuple[str, int]]:
    """The windows one WebSocket connection attempt counts in, with their limits: its address
    (always) and its user (if known)."""
    return ([(f"ws-ip:{ip}", settings.IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP)] if ip else []) + (
        [(f"ws-user:{user_id}", settings.IMAGEGEN_WS_CONNECTS_PER_MINUTE_USER)] if user_id is not None else [])


def connect_allowed(ip: str | None, user_id: int | None) -> bool:
    """Count a WebSocket connection attempt from ``ip`` (always) and ``user_id`` (if known)."""
    allowed = True
    if ip:
        allowed = hit(f"ws-ip:{ip}", settings.IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP)
    if user_id is not None and allowed:
        allowed = hit(f"ws-user:{user_id}", settings.IMAGEGEN_WS_CONNECTS_PER_MINUTE_USER)
    return allowed


aconnect_allowed = sync_to_async(connect_allowed, thread_sensitive=False)
