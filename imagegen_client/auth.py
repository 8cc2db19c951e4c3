"""Bearer-token authentication for every request the client sends: one ``httpx.Auth``.

The server hands out a JWT pair: a short-lived access token and a refresh
token. :class:`TokenAuth` keeps the pair, attaches the access token to each
request, renews it shortly before it expires, and on a 401 renews it once and
resends the request. The same object serves the synchronous REST client and
the asynchronous event stream, so a renewal in one is seen by the other.
"""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, AsyncGenerator, Callable, Generator, Protocol

import httpx

from .errors import ImagegenError

#: Refresh the access token this long before it expires, so a request (or a
#: WebSocket connect) never goes out with a token about to lapse in flight.
REFRESH_MARGIN_SECONDS = 60.0

TOKEN_PATH = "api/auth/token/"
REFRESH_PATH = "api/auth/token/refresh/"

# A renewal is a short conversation with the token endpoints: it yields the
# requests to send, receives their (read) responses, and returns the new token.
# Both the sync and the async flows drive the same conversation.
Renewal = Generator[httpx.Request, httpx.Response, str]


def token_claims(token: str) -> dict[str, Any]:
    """A JWT's claims, read without verifying it (the server does that); {} if unreadable."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, TypeError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def refresh_due(token: str, now: float) -> bool:
    """True when the token expires within the margin (half its lifetime if that is shorter)."""
    claims = token_claims(token)
    try:
        expires = float(claims["exp"])
    except (KeyError, TypeError, ValueError):
        return False
    margin = REFRESH_MARGIN_SECONDS
    if "iat" in claims:
        margin = min(margin, (expires - float(claims["iat"])) / 2)
    return expires - now < margin


class TokenSource(Protocol):
    """Where a long-lived connection (the WebSocket) gets its access token.

    ``query_param`` is the WebSocket query parameter the credential travels in:
    ``"token"`` for an access token (which expires, so the stream refreshes it in
    band), ``"api_key"`` for an API key (which does not).
    """

    @property
    def query_param(self) -> str:
        ...

    async def token(self) -> str:
        """A usable access token, renewed first when it is about to expire."""
        ...

    async def renew(self, rejected: str) -> str:
        """A fresh access token after the server rejected ``rejected``."""
        ...


class TokenAuth(httpx.Auth):
    """JWT bearer auth with renewal, for ``httpx.Client`` and ``httpx.AsyncClient`` alike.

    Give ``username`` and ``password`` (a pair is fetched on first use and
    fetched again when the refresh token is refused too), or an existing access
    ``token`` with or without its ``refresh_token``.
    """

    # A request may be sent twice (after a 401), so its body must be replayable.
    requires_request_body = True

    def __init__(
        self,
        base_url: str | httpx.URL,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        refresh_token: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token is None and (username is None or password is None):
            raise ValueError("Give username and password, or token.")
        base = httpx.URL(str(base_url).rstrip("/") + "/")
        self.token_url = base.join(TOKEN_PATH)
        self.refresh_url = base.join(REFRESH_PATH)
        self.username = username
        self.password = password
        self._access = token
        self._refresh = refresh_token
        self._clock = clock
        self._state = threading.Lock()  # guards the pair; never held across I/O
        # One renewal at a time per side: a burst of 401s (or of due tokens)
        # renews once, and the rest pick up its result. Threads share one lock;
        # each event loop gets its own asyncio lock (one is bound to its loop).
        self._sync_renewing = threading.Lock()
        self._async_renewing: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def access(self) -> str | None:
        return self._access

    # --- The httpx flows -----------------------------------------------------------------
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token, stale = self._fresh(), self._access
        for attempt in (1, 2):
            if token is None:
                with self._sync_renewing:
                    token = yield from _drive_sync(self._renewal(stale))
            response = yield self._with(request, token)
            if response.status_code != 401 or attempt == 2:
                return
            stale, token = token, None

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token, stale = self._fresh(), self._access
        for attempt in (1, 2):
            if token is None:
                async with self._loop_lock():
                    renewal = self._renewal(stale)
                    try:
                        step = next(renewal)
                        while True:
                            answer = yield step
                            await answer.aread()
                            step = renewal.send(answer)
                    except StopIteration as done:
                        token = done.value
            response = yield self._with(request, token)
            if response.status_code != 401 or attempt == 2:
                return
            stale, token = token, None

    # --- Outside a request (a WebSocket handshake, explicit calls) -------------------------
    def sync_token(self, http: httpx.Client, *, rejected: str | None = None) -> str:
        """A usable token (or, with ``rejected``, a renewed one), fetched through ``http`` if need be."""
        token = None if rejected is not None else self._fresh()
        if token is not None:
            return token
        with self._sync_renewing:
            renewal = self._renewal(rejected if rejected is not None else self._access)
            try:
                step = next(renewal)
                while True:
                    step = renewal.send(http.send(step, auth=None))
            except StopIteration as done:
                renewed: str = done.value
                return renewed

    async def async_token(self, http: httpx.AsyncClient, *, rejected: str | None = None) -> str:
        """Async :meth:`sync_token`."""
        token = None if rejected is not None else self._fresh()
        if token is not None:
            return token
        async with self._loop_lock():
            renewal = self._renewal(rejected if rejected is not None else self._access)
            try:
                step = next(renewal)
                while True:
                    step = renewal.send(await http.send(step, auth=None))
            except StopIteration as done:
                renewed: str = done.value
                return renewed

    def source(self, http: httpx.AsyncClient) -> TokenSource:
        """The tokens of this auth as a :class:`TokenSource` that renews through ``http``."""
        return _BoundSource(self, http)

    # --- The pair ------------------------------------------------------------------------
    def _fresh(self) -> str | None:
        """The current access token, or None when there is none or it is about to expire."""
        token = self._access
        if token is None or refresh_due(token, self._clock()):
            return None
        return token

    def _renewal(self, stale: str | None) -> Renewal:
        """Replace ``stale`` (None: no token yet): refresh token first, else the password.

        If another caller already replaced it while this one waited for the
        renewal lock, its token is used and nothing is sent.
        """
        with self._state:
            current, refresh = self._access, self._refresh
        if current is not None and current != stale and not refresh_due(current, self._clock()):
            return current
        if refresh is not None:
            response = yield httpx.Request("POST", self.refresh_url, json={"refresh": refresh})
            if response.status_code == 200:
                pair = response.json()
                with self._state:
                    self._access = str(pair["access"])
                    # Servers that rotate refresh tokens send a new one along.
                    self._refresh = str(pair.get("refresh", refresh))
                    return self._access
        if self.username is None or self.password is None:
            raise ImagegenError(401, "The access token expired and no password was given to renew it.")
        response = yield httpx.Request("POST", self.token_url,
                                       json={"username": self.username, "password": self.password})
        if response.status_code != 200:
            raise ImagegenError.from_response(response)
        pair = response.json()
        with self._state:
            self._access, self._refresh = str(pair["access"]), str(pair["refresh"])
            return self._access

    @staticmethod
    def _with(request: httpx.Request, token: str) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._async_renewing.get(loop)
        if lock is None:
            lock = self._async_renewing[loop] = asyncio.Lock()
        return lock


def _drive_sync(renewal: Renewal) -> Generator[httpx.Request, httpx.Response, str]:
    """Run a renewal inside a sync auth flow: httpx sends each request, we read each answer."""
    try:
        step = next(renewal)
        while True:
            response = yield step
            response.read()
            step = renewal.send(response)
    except StopIteration as done:
        token: str = done.value
        return token


@dataclass(frozen=True)
class _BoundSource:
    auth: TokenAuth
    http: httpx.AsyncClient
    query_param: str = "token"

    async def token(self) -> str:
        return await self.auth.async_token(self.http)

    async def renew(self, rejected: str) -> str:
        return await self.auth.async_token(self.http, rejected=rejected)


class ApiKeyAuth(httpx.Auth):
    """``Authorization: Api-Key <key>`` on every request: an integrator's long-lived key
    (``POST /api/keys/``), which never expires and is never renewed. A revoked or
    unknown key is a 401 that no retry cures."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("Give the API key.")
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Api-Key {self.key}"
        yield request

    def source(self, http: httpx.AsyncClient) -> TokenSource:
        return _KeySource(self.key)


@dataclass(frozen=True)
class _KeySource:
    key: str
    query_param: str = "api_key"

    async def token(self) -> str:
        return self.key

    async def renew(self, rejected: str) -> str:
        raise ImagegenError(401, "The API key was refused (revoked or unknown).")
