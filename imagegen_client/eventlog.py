"""The HTTP side of the event stream: ``GET /api/events/`` (gap fills and long-polls) and the resume point.

A server that is restarting, overloaded or rate-limiting us (a 5xx or 429,
or no answer at all) is a reason to wait and try again, never to end the
stream: those become :class:`~imagegen_client.errors.Disconnected`, carrying
the server's ``Retry-After``. Any other error (400, 403, 404, a 401 that a
renewed token did not cure) raises :class:`~imagegen_client.errors.ImagegenError`.
"""
from __future__ import annotations

import httpx

from .errors import Disconnected, ImagegenError
from .sequencing import Item

#: The server holds a long-poll up to ``wait`` seconds; allow this much on top.
POLL_TIMEOUT_MARGIN = 15.0


class EventLog:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def page(self, *, after: int, wait: int) -> Item:
        """Events with ``seq > after``, waiting up to ``wait`` seconds for one to happen."""
        body = await self._get("/api/events/", {"after": after, "wait": wait}, timeout=wait + POLL_TIMEOUT_MARGIN)
        return body

    async def last_seq(self) -> int:
        """The user's newest seq now (from the task list's snapshot)."""
        body = await self._get("/api/tasks/", {"page_size": 1}, timeout=None)
        return int(body["last_seq"])

    async def _get(self, path: str, params: dict[str, int], *, timeout: float | None) -> Item:
        try:
            if timeout is None:
                response = await self.http.get(path, params=params)
            else:
                response = await self.http.get(path, params=params, timeout=timeout)
        except httpx.TransportError as exc:
            raise Disconnected(f"GET {path} failed: {exc!r}") from None
        except ImagegenError as exc:  # renewing the token met a busy server
            if exc.temporary:
                raise Disconnected(f"token renewal answered {exc.status_code}", retry_after=exc.retry_after) from None
            raise
        if response.status_code >= 400:
            error = ImagegenError.from_response(response)
            if error.temporary:
                raise Disconnected(f"GET {path} answered {response.status_code}",
                                   retry_after=error.retry_after) from None
            raise error
        body: Item = response.json()
        return body
