"""WebSocket authentication and Origin checks.

Browsers cannot set headers on a WebSocket, so the access token travels in the
query string (``?token=``). The middleware is stateless: it validates the JWT,
puts the user (or AnonymousUser) and the token's expiry in the scope, and
leaves the accept-then-close with the contract's codes to the consumer, so a
client always sees 4001/4003 rather than a bare HTTP 403.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http.request import is_same_domain
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken

logger = logging.getLogger(__name__)


def query_param(scope: dict, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


def user_for_token(raw: str) -> tuple[Any, float | None]:
    """The active user and the token's expiry (epoch seconds), or (AnonymousUser, None)."""
    try:
        token = AccessToken(raw)
    except TokenError:
        return AnonymousUser(), None
    user_id = token.get(jwt_settings.USER_ID_CLAIM)
    user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}, is_active=True).first()
    if user is None:
        return AnonymousUser(), None
    return user, float(token["exp"])


# In the default thread pool, not Django's one sync thread: a reconnect storm
# would otherwise queue every handshake (and every sync HTTP view) behind it.
auser_for_token = database_sync_to_async(user_for_token, thread_sensitive=False)


class JWTAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        raw = query_param(scope, "token")
        user, expires = (AnonymousUser(), None) if not raw else await auser_for_token(raw)
        # One copy of the scope (BaseMiddleware would make a second): it lives as long as the socket.
        return await self.inner(dict(scope, user=user, token_expires=expires), receive, send)


def allowed_origins() -> list[str]:
    return settings.WS_ALLOWED_ORIGINS or list(settings.ALLOWED_HOSTS)


def origin_allowed(origin: str | None) -> bool:
    """Same rule as Channels' AllowedHostsOriginValidator: a client that sends no
    Origin (scripts, not browsers) is allowed; a browser's must match a pattern
    (a host pattern as in ALLOWED_HOSTS, or a full ``scheme://host[:port]``)."""
    if not origin:
        return True
    parsed = urlparse(origin)
    if not parsed.hostname:
        return False
    for pattern in allowed_origins():
        if pattern == "*":
            return True
        if "://" in pattern:
            if origin.rstrip("/").lower() == pattern.rstrip("/").lower():
                return True
        elif is_same_domain(parsed.hostname, pattern.strip("[]").lower()) or is_same_domain(
            parsed.hostname, pattern.lower()
        ):
            return True
    return False


class OriginCheckMiddleware(BaseMiddleware):
    """Marks the scope with whether its Origin is allowed (the consumer closes with 4003)."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin-1") or None
        ok = origin_allowed(origin)
        if not ok:
            # Channels' own OriginValidator logs nothing; operators need to see these.
            client = scope.get("client") or ["?"]
            logger.warning("WebSocket Origin rejected: %r from %s", origin, client[0])
        return await self.inner(dict(scope, origin_allowed=ok, origin=origin), receive, send)


def origin_validator(app: Any) -> OriginCheckMiddleware:
    return OriginCheckMiddleware(app)
