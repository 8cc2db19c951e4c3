"""What can go wrong, as the server reports it: HTTP errors and the codes of failed tasks."""
from __future__ import annotations

from enum import StrEnum

import httpx

from .backoff import retry_after


class ImagegenError(Exception):
    """The server answered with an error: ``status_code`` and its ``detail`` message."""

    def __init__(self, status_code: int, detail: str, *, retry_after: float = 0.0, code: str | None = None,
                 errors: dict[str, object] | None = None) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        #: The server's machine-readable ``code`` where the error has one (e.g. "idempotency_key_reused").
        self.code = code
        #: Bad input only: the server's messages per field (a batch names each bad part, ``image[3]``).
        self.errors: dict[str, object] = errors or {}
        #: Seconds the server asked us to wait (``Retry-After`` of a 429 or 503); 0 if it did not say.
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: httpx.Response) -> ImagegenError:
        """The error for a read 4xx/5xx response, with the server's ``detail`` when it sent one."""
        return cls(response.status_code, _detail(response),
                   retry_after=retry_after(response.headers.get("Retry-After")), code=_code(response),
                   errors=_errors(response))

    @property
    def temporary(self) -> bool:
        """True for answers that say "not now" (429, 5xx): trying again later may work."""
        return self.status_code == 429 or self.status_code >= 500


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:200]


def _errors(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    errors = body.get("errors") if isinstance(body, dict) else None
    return errors if isinstance(errors, dict) else {}


class StreamError(Exception):
    """The event stream cannot continue (for example the server refused our Origin)."""


class Disconnected(Exception):
    """The current transport of the event stream ended; the stream reconnects.

    ``auth``: the server rejected the access token (renew it, then come straight
    back); ``fallback``: nothing speaks WebSocket there (long-poll instead);
    ``retry_after``: seconds the server asked us to wait first.
    """

    def __init__(self, reason: str, *, auth: bool = False, fallback: bool = False, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.auth = auth
        self.fallback = fallback
        self.retry_after = retry_after


class ErrorCode(StrEnum):
    """Why a task failed: the ``error_code`` of a failed task (and of its events).

    This package imports nothing from the server, so it keeps its own copy of
    the codes; a test on the whole repository checks that it matches the
    server's list. A newer server may send a code missing here: compare
    ``task["error_code"]`` with these values, or use :meth:`of`, rather than
    assume every code is known.
    """

    INVALID_IMAGE = "invalid_image"
    IMAGE_TOO_LARGE = "image_too_large"
    INPUT_MISSING = "input_missing"
    INVALID_OPTIONS = "invalid_options"
    NO_PRODUCT_FOUND = "no_product_found"
    PRODUCT_ALTERED = "product_altered"
    SAFETY_BLOCK = "safety_block"
    NO_IMAGE_RETURNED = "no_image_returned"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    EXPIRED = "expired"
    FETCH_FAILED = "fetch_failed"
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"

    @classmethod
    def of(cls, code: str | None) -> ErrorCode | None:
        """The member for ``code``; None for no code or one this client does not know."""
        try:
            return cls(code) if code is not None else None
        except ValueError:
            return None
