"""Who may keep a WebSocket: Origin, attempt rate, token, and the per-user socket cap.

The consumer accepts every handshake and then closes with one of these codes,
so a client always learns why (an HTTP 403 during the handshake tells it nothing).
"""
from __future__ import annotations

from django.conf import settings

from .presence import presence
from .ratelimit import aconnect_allowed

CLOSE_UNAUTHORIZED = 4001  # bad, missing or expired token: reconnect with a fresh one
CLOSE_FORBIDDEN_ORIGIN = 4003
CLOSE_TOO_SLOW = 4008  # unsent frames piled up: reconnect and resume at your own pace
CLOSE_UNAVAILABLE = 4013  # channel layer unreachable: retry with backoff, then resume
CLOSE_RATE_LIMITED = 4029  # too many attempts, or too many open sockets for this user


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
    if not await aconnect_allowed(client[0], user_id):
        return CLOSE_RATE_LIMITED, "rate_limited", None
    if user_id is None:
        return CLOSE_UNAUTHORIZED, "unauthorized", None
    if not await presence.try_open(user_id, settings.IMAGEGEN_WS_MAX_SOCKETS_PER_USER):
        return CLOSE_RATE_LIMITED, "too_many_sockets", None
    return None, "accepted", user_id
