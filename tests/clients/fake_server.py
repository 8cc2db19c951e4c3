"""A tiny in-test imagegen event server for the client's unit tests.

It speaks the server's WebSocket protocol (replay after ``after``, then
``sync_complete``, then live; ping/pong; 4001 for a bad token) on a real port
with ``websockets``, and the ``/api/events/`` + token endpoints through an
``httpx.MockTransport``. Knobs let a test lose a push, cut every connection,
stop answering, purge old events, refuse the upgrade, or answer the event log with errors.
"""
from __future__ import annotations

import asyncio
import itertools
import json
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


class FakeServer:
    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []
        self.valid_tokens = {"token-1"}
        self._tokens = itertools.count(2)
        self.drop_pushes: set[int] = set()  # seqs never pushed live (lost in transit)
        self.purged_through = 0  # events with seq <= this are gone (retention)
        self.silent = False  # stop answering and pushing: a half-open connection
        self.refuse_upgrade = False  # answer the upgrade with 404, like a server without WebSocket
        self.page_size = 500
        self.extra_replay = 0  # replay this many already-seen events again (a racing replay)
        self.double_pushes = False  # push every live event twice
        # Answers /api/events/ gives before it works again: (status, headers), e.g. (503, {"Retry-After": "7"}).
        self.events_failures: list[tuple[int, dict[str, str]]] = []
        self.connections: set[ServerConnection] = set()
        self.handshakes: list[dict[str, list[str]]] = []
        self.http_requests: list[str] = []
        self._changed = asyncio.Condition()
        self._server: Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await serve(self._handle, "127.0.0.1", port, process_request=self._process_request)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- Driving the log -----------------------------------------------------------------------
    async def add(self, count: int = 1, *, status: str = "processing", task_id: int = 1) -> None:
        async with self._changed:
            for _ in range(count):
                seq = len(self.log) + 1
                self.log.append({
                    "type": "task_update", "seq": seq, "task_id": task_id, "timestamp": "2026-01-01T00:00:00Z",
                    "data": {"status": status, "progress": min(seq, 100), "result_image_url": None,
                             "elapsed_time": None, "estimated_remaining_seconds": None, "error_code": None,
                             "error_message": None, "updated_at": "2026-01-01T00:00:00Z"},
                })
            self._changed.notify_all()

    async def cut_all(self, code: int = 1011) -> None:
        for connection in list(self.connections):
            await connection.close(code)

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def _after(self, after: int) -> tuple[list[dict[str, Any]], bool]:
        recovered = after >= self.purged_through
        return [e for e in self.log if e["seq"] > max(after, self.purged_through)], recovered

    # --- WebSocket ------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.refuse_upgrade:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlparse(ws.request.path).query)
        self.handshakes.append(query)
        if query.get("token", [""])[0] not in self.valid_tokens:
            await ws.close(4001, "bad token")
            return
        self.connections.add(ws)
        try:
            after = int(query["after"][0]) if "after" in query else len(self.log)
            replay, recovered = self._after(max(after - self.extra_replay, 0))
            for event in replay:
                await ws.send(json.dumps(event))
            sent = replay[-1]["seq"] if replay else after
            await ws.send(json.dumps({"type": "sync_complete", "last_seq": len(self.log), "recovered": recovered}))
            sent = max(sent, len(self.log))
            reader = asyncio.create_task(self._answer_pings(ws))
            try:
                while not reader.done():
                    async with self._changed:
                        await self._changed.wait_for(lambda: len(self.log) > sent or reader.done())
                    for event in self.log[sent:]:
                        if event["seq"] not in self.drop_pushes and not self.silent:
                            for _ in range(2 if self.double_pushes else 1):
                                await ws.send(json.dumps(event))
                        sent = event["seq"]
            finally:
                reader.cancel()
        finally:
            self.connections.discard(ws)

    async def _answer_pings(self, ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "ping" and not self.silent:
                    await ws.send(json.dumps({"type": "pong"}))
        finally:
            async with self._changed:
                self._changed.notify_all()

    # --- HTTP (MockTransport) --------------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._http)

    def async_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._http_async)

    async def _http_async(self, request: httpx.Request) -> httpx.Response:
        wait = float(request.url.params.get("wait", "0"))
        if request.url.path == "/api/events/" and wait > 0 and not self.events_failures:
            after = int(request.url.params.get("after", "0"))
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: len(self.log) > after), wait)
                except TimeoutError:
                    pass
        return self._http(request)

    def _http(self, request: httpx.Request) -> httpx.Response:
        self.http_requests.append(f"{request.method} {request.url.path}?{request.url.query.decode()}")
        if request.url.path == "/api/auth/token/refresh/":
            token = f"token-{next(self._tokens)}"
            self.valid_tokens.add(token)
            return httpx.Response(200, json={"access": token})
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.valid_tokens:
            return httpx.Response(401, json={"detail": "Given token not valid for any token type"})
        if request.url.path == "/api/tasks/":
            return httpx.Response(200, json={"count": 0, "next": None, "previous": None, "results": [],
                                             "last_seq": len(self.log)})
        if request.url.path == "/api/events/" and self.events_failures:
            status, headers = self.events_failures.pop(0)
            return httpx.Response(status, headers=headers, json={"detail": "Service unavailable, try again."})
        if request.url.path == "/api/events/":
            events, recovered = self._after(int(request.url.params.get("after", "0")))
            page = events[: self.page_size]
            return httpx.Response(200, json={
                "events": page, "last_seq": page[-1]["seq"] if page else len(self.log),
                "has_more": len(events) > len(page), "recovered": recovered,
            })
        return httpx.Response(404, json={"detail": "Not found."})
