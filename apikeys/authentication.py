"""``Authorization: Api-Key <key>`` for DRF (in ``DEFAULT_AUTHENTICATION_CLASSES``), and the
lookup the WebSocket and the event stream share."""
from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from .models import ApiKey

KEYWORD = "Api-Key"
INVALID = "Invalid or revoked API key."


def key_from_header(value: bytes | str) -> str | None:
    """The key of an ``Api-Key <key>`` Authorization value; None for any other scheme."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, raw = value.strip().partition(" ")
    if scheme.lower() != KEYWORD.lower():
        return None
    return raw.strip()


class ApiKeyAuthentication(BaseAuthentication):
    """Acts as the key's owner; ``request.auth`` is the :class:`ApiKey`."""

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        raw = key_from_header(get_authorization_header(request))
        if raw is None:
            return None
        key = ApiKey.objects.authenticate(raw) if raw else None
        if key is None:
            raise AuthenticationFailed(INVALID)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD
