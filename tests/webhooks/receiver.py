"""A webhook receiver on loopback for the tests: records every request, answers as told."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """``answer(request) -> status`` decides each answer; ``hang`` blocks a path until released;
    ``delay`` seconds pass before every answer. ``peak`` is the most requests that were in
    flight at once, by path."""

    answer: Callable[[Received], int] = lambda request: 200
    received: list[Received] = field(default_factory=list)
    hang_paths: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    delay: float = 0.0
    peak: Counter[str] = field(default_factory=Counter)
    port: int = 0
    _in_flight: Counter[str] = field(default_factory=Counter)
    _count_lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in list(self.received) if r.path == path]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                receiver.received.append(request)
                with receiver._count_lock:
                    receiver._in_flight[self.path] += 1
                    receiver.peak[self.path] = max(receiver.peak[self.path], receiver._in_flight[self.path])
                try:
                    if self.path in receiver.hang_paths:
                        receiver.release.wait(60)
                    if receiver.delay:
                        time.sleep(receiver.delay)  # a slow receiver: the attempts overlap
                    status = receiver.answer(request)
                finally:
                    with receiver._count_lock:
                        receiver._in_flight[self.path] -= 1
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
