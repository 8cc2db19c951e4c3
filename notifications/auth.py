"""WebSocket (and event-stream) authentication and Origin checks.

Browsers cannot set headers on a WebSocket, so the access token travels in the
query string (``?token=``), or an API key as ``?api_key=``. ``authenticate`` (called
by the consumer first) is stateless: it validates the JWT or the key, puts the user (or AnonymousUser),
the token's expiry (None for a key: keys never expire) and the key's id in the scope, and
leaves the accept-then-close with the close codes of docs/api.md to the consumer, so a
client always sees 4001/4003 rather than a bare HTTP 403.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlparse

from datetime import datetime, timezone

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http.request import is_same_domain, split_domain_port
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken

from apikeys.models import ApiKey

from .admission import accept_on_arrival
from .batching import Batcher

logger = logging.getLogger(__name__)


def query_param(scope: dict, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


# The user stays in the scope for the socket's life: load the fields a socket
# needs, not the password hash and profile (about 1 KB a socket).
USER_FIELDS = (jwt_settings.USER_ID_FIELD, "username", "is_active", "is_staff", "is_superuser")


def verified_token(raw: str) -> AccessToken | None:
    """The access token if its signature, type and expiry hold (pure CPU, tens of microseconds)."""
    try:
        return AccessToken(raw)
    except TokenError:
        return None


def active_users(user_ids: list[Any]) -> dict[Any, Any]:
    """The active users among ``user_ids`` by id, one query (the token is signed; only "is this
    account still active" needs the database)."""
    # Claims carry ids as the token was minted (a string or an int): query by the model's own type
    # (one malformed claim must not fail the batch) and answer under the key asked for.
    ids = {key: user_id for key in user_ids if (user_id := _as_id(key)) is not None}
    users = (get_user_model().objects.filter(**{f"{jwt_settings.USER_ID_FIELD}__in": set(ids.values())},
                                             is_active=True).only(*USER_FIELDS))
    found = {getattr(user, jwt_settings.USER_ID_FIELD): user for user in users}
    return {key: found[user_id] for key, user_id in ids.items() if user_id in found}


def _as_id(value: Any) -> Any:
    try:
        return get_user_model()._meta.get_field(jwt_settings.USER_ID_FIELD).to_python(value)
    except Exception:  # noqa: BLE001 - a claim that is no id of this model matches no user
        return None


# Every handshake of a reconnect storm asks this at once: one query per batch of users (batching.py).
_active_users: Batcher[Any, Any] = Batcher(active_users, default=None)


async def auser_for_token(raw: str) -> tuple[Any, float | None]:
    """The active user and the token's expiry (epoch seconds), or (AnonymousUser, None): the
    signature checked on the event loop, the user read in a batch with every other handshake's."""
    token = verified_token(raw)
    if token is None:
        return AnonymousUser(), None
    user_id = token.get(jwt_settings.USER_ID_CLAIM)
    if user_id is None or not isinstance(user_id, (str, int)):
        return AnonymousUser(), None
    user = await _active_users.load(user_id)
    return (user, float(token["exp"])) if user is not None else (AnonymousUser(), None)


def user_for_api_key(raw: str) -> tuple[Any, int | None]:
    """The owner of a live API key and the key's id, or (AnonymousUser, None)."""
    key = ApiKey.objects.authenticate(raw)
    return (key.user, key.pk) if key is not None else (AnonymousUser(), None)


auser_for_api_key = database_sync_to_async(user_for_api_key, thread_sensitive=False)


async def with_user(scope: dict) -> dict:
    """Set ``user``, ``token_expires`` and ``api_key_id`` from ``?token=`` or ``?api_key=``
    on a scope copy the caller owns."""
    raw, key = query_param(scope, "token"), query_param(scope, "api_key")
    scope["api_key_id"] = None
    if raw:
        scope["user"], scope["token_expires"] = await auser_for_token(raw)
    elif key:
        scope["user"], scope["api_key_id"] = await auser_for_api_key(key)
        scope["token_expires"] = None
    else:
        scope["user"], scope["token_expires"] = AnonymousUser(), None
    return scope


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat().replace("+00:00", "Z")


async def arefreshed_expiry(raw: Any, user_id: int, scope: dict) -> tuple[float | None, str]:
    """The expiry a ``refresh`` frame's token gives an open socket of ``user_id``, or
    (None, why not): not a string, not a valid access token (bad, expired), another
    user's, or a socket opened with an API key (which never expires)."""
    if scope.get("api_key_id") is not None:
        return None, "this connection uses an API key, which does not expire."
    if not isinstance(raw, str) or not raw or len(raw) > 4096:
        return None, "refresh needs token: an access token."
    user, expires = await auser_for_token(raw)
    if expires is None or not user.is_authenticated:
        return None, "the token is invalid or expired."
    if user.pk != user_id:
        return None, "the token belongs to another user."
    return expires, ""


def allowed_origins() -> list[str]:
    return settings.WS_ALLOWED_ORIGINS or list(settings.ALLOWED_HOSTS)


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_parts(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin such as ``https://app.example.com``, the
    port made explicit; None for anything a browser would not send as an Origin."""
    parsed = urlparse(url.strip().rstrip("/").lower())
    try:
        port = parsed.port
    except ValueError:
        return None
    if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname:
        return None
    return parsed.scheme, parsed.hostname, port or DEFAULT_PORTS[parsed.scheme]


def origin_allowed(origin: str | None, host_header: str = "") -> bool:
    """Whether a browser's Origin may open the socket; scheme, host and port all count.

    A client that sends no Origin (scripts, not browsers) is allowed. A full pattern
    ``scheme://host[:port]`` allows exactly that origin. A host pattern (as in
    ALLOWED_HOSTS, the default list) allows a page served by this server at that
    host: the Origin's port must be the pattern's own port if it names one, else the
    port of the socket's ``Host`` header (the scheme's default when it has none), so
    another service on the same host but another port is refused.
    """
    if not origin:
        return True
    parts = origin_parts(origin)
    if parts is None:
        return False
    scheme, host, port = parts
    _, host_port = split_domain_port(host_header)
    for pattern in allowed_origins():
        if pattern == "*":
            return True
        if "://" in pattern:
            if parts == origin_parts(pattern):
                return True
            continue
        domain, pattern_port = split_domain_port(pattern.lower())
        wanted = pattern_port or host_port
        if is_same_domain(host, domain.strip("[]")) and port == (int(wanted) if wanted else DEFAULT_PORTS[scheme]):
            return True
    return False


def header(scope: dict, name: bytes) -> str:
    return next((v for k, v in scope.get("headers", []) if k == name), b"").decode("latin-1")


def check_origin(scope: dict) -> None:
    """Set ``origin`` and ``origin_allowed`` on ``scope`` (rejections are logged)."""
    origin = header(scope, b"origin") or None
    ok = origin_allowed(origin, header(scope, b"host"))
    if not ok:
        # Channels' own OriginValidator logs nothing; operators need to see these.
        client = scope.get("client") or ["?"]
        logger.warning("WebSocket Origin rejected: %r from %s", origin, client[0])
    scope["origin"], scope["origin_allowed"] = origin, ok


async def authenticate(scope: dict, receive: Any, send: Any) -> dict:
    """Mark ``scope`` with whether its Origin is allowed (the consumer closes with 4003), accept the
    handshake on arrival, and set its user from the token (4001 without a valid one); returns the
    first message received (the connect, for the consumer to dispatch). ``scope`` is the consumer's
    own (URLRouter's copy), changed in place.

    The consumer calls this itself rather than through a middleware: a middleware's scope copy and
    coroutine frame live as long as the socket (about 1 KB per open socket, measured)."""
    check_origin(scope)
    first = await accept_on_arrival(scope, receive, send)  # before the token check: see there
    await with_user(scope)
    return first
