"""ASGI entry point: HTTP through Django, WebSocket through Channels.

In the embedded default (no ``REDIS_URL``) the web process also runs the
worker: the in-memory channel layer cannot carry another process's events.
It starts with the application's first call (an ASGI lifespan startup or the
first connection), never at import, so ``migrate``, ``shell`` and tests that
merely import this module start nothing.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from typing import Any, Awaitable, Callable

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagegen_site.settings")
# Before settings load: an ASGI process uses a connection pool instead of persistent connections.
os.environ.setdefault("IMAGEGEN_ASGI_PROCESS", "1")
django_asgi_app = get_asgi_application()  # sets Django up before routing imports models

from channels.routing import URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from notifications.events import publisher  # noqa: E402
from notifications.routing import websocket_urlpatterns  # noqa: E402

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class ServerHooks:
    """The application: routes by scope type, attaches the event publisher to the server's loop and,
    in the embedded default, starts the in-process worker on the first call.

    ``__call__`` returns the routed application's coroutine rather than awaiting it (Channels'
    ``ProtocolTypeRouter`` does, as a wrapper written with ``await`` would): each such frame lives as
    long as its WebSocket, and this process holds thousands of them."""

    _asgi_single_callable = True  # a plain function returning a coroutine: ASGI 3, not ASGI 2

    def __init__(self, routes: dict[str, Any], embedded_worker: bool) -> None:
        self.routes = routes
        self.embedded_worker = embedded_worker
        self._started = False
        self._lock = threading.Lock()
        self.worker: Any = None
        self.sweeper: Any = None

    def _on_first_call(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        publisher.attach(asyncio.get_running_loop())
        # Tasks whose expires_in ran out end at their deadline even with no worker running.
        from generation.expiry import start_sweeper

        self.sweeper = start_sweeper()
        if self.embedded_worker:
            from generation.worker import Worker

            self.worker = Worker(concurrency=settings.IMAGEGEN_EMBEDDED_CONCURRENCY, embedded=True,
                                 worker_id=f"embedded:{os.getpid()}")
            # start() touches the database: keep it off the event loop.
            threading.Thread(target=self.worker.start, name="imagegen-embedded-start", daemon=True).start()
            logger.info("Embedded worker starting inside the web process")

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Called by the server on its running loop (the first call needs it).
        if not self._started:
            self._on_first_call()
        if scope["type"] == "lifespan":
            return self._lifespan(receive, send)
        app = self.routes.get(scope["type"])
        if app is None:
            return self._unknown(scope["type"])
        return app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.worker is not None:
                    self.worker.stop()
                if self.sweeper is not None:
                    self.sweeper.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _unknown(kind: str) -> None:
        raise ValueError(f"No application configured for scope type {kind!r}")


application = ServerHooks(
    {
        "http": django_asgi_app,
        # The consumer checks the Origin and the JWT itself (notifications.auth.authenticate).
        "websocket": URLRouter(websocket_urlpatterns),
    },
    embedded_worker=settings.IMAGEGEN_EMBEDDED_WORKER,
)

# Everything loaded so far lives as long as the process: load the URLconf now
# rather than on the first request, and move it all out of the cyclic
# collector's full passes, which otherwise walk these objects and stalled the
# event loop 20-55 ms at a time (measured: the p99 of push latency).
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018
gc.freeze()
