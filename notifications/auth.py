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
    # The user stays in the scope for the socket's life: load the fields a socket
    # needs, not the password hash and profile (about 1 KB a socket).
    fields = (jwt_settings.USER_ID_FIELD, "username", "is_active", "is_staff", "is_superuser")
    user = (get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}, is_active=True)
            .only(*fields).first())
    if user is None:
        return AnonymousUser(), None
    return user, float(token["exp"])


# In the default thread pool, not Django's one sync thread: a reconnect storm
# would otherwise queue every handshake (and every sync HTTP view) behind it.
auser_for_token = database_sync_to_async(user_for_token, thread_sensitive=False)


async def with_user(scope: dict) -> dict:
    """Set ``user`` and ``token_expires`` from ``?token=`` on a scope copy the caller owns."""
    raw = query_param(scope, "token")
    scope["user"], scope["token_expires"] = (AnonymousUser(), None) if not raw else await auser_for_token(raw)
    return scope


# Each middleware's scope copy and coroutine frame live as long as the socket:
# the frames below keep nothing but the copy they pass on.


class JWTAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        return await self.inner(await with_user(dict(scope)), receive, send)


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


def with_origin_check(scope: dict) -> dict:
    """A copy of ``scope`` with ``origin`` and ``origin_allowed`` (rejections are logged)."""
    origin = next((v for k, v in scope.get("headers", []) if k == b"origin"), b"").decode("latin-1") or None
    ok = origin_allowed(origin)
    if not ok:
        # Channels' own OriginValidator logs nothing; operators need to see these.
        client = scope.get("client") or ["?"]
        logger.warning("WebSocket Origin rejected: %r from %s", origin, client[0])
    return dict(scope, origin_allowed=ok, origin=origin)


class OriginCheckMiddleware(BaseMiddleware):
    """Marks the scope with whether its Origin is allowed (the consumer closes with 4003)."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        return await self.inner(with_origin_check(scope), receive, send)


class SocketAuthMiddleware(BaseMiddleware):
    """Both of the above with one scope copy and one frame (about 1 KB less per
    open socket than stacking them): what ``asgi.py`` uses."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        return await self.inner(await with_user(with_origin_check(scope)), receive, send)
