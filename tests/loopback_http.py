"""A real HTTP server on loopback for the tests that fetch or follow URLs (``image_url``, the URL
guard, the clients' URL submissions): each path answers from a ``Script``, and every request is
recorded (path and Host header) so a test can say what was, or was never, asked for."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = tuple[int, dict[str, str], bytes]
NOT_HERE: Answer = (404, {}, b"not here")


class Script:
    """``routes``: path -> one answer, or a list of answers given one per request (the last one
    repeats). ``hits``: the paths requested, in order; ``seen``: (path, Host) of each request."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer | list[Answer]] = {}
        self.hits: list[str] = []
        self.seen: list[tuple[str, str]] = []

    def answer(self, path: str) -> Answer:
        route = self.routes.get(path, NOT_HERE)
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route


@contextmanager
def running(host: str, script: Script) -> Iterator[str]:
    """Serve ``script`` on ``host`` (any 127/8 address is loopback on Linux); yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            script.hits.append(self.path)
            script.seen.append((self.path, self.headers.get("Host", "")))
            status, headers, body = script.answer(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:  # a route may state a wrong one on purpose
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def serve(host: str, script: Script) -> Iterator[str]:
    """``running`` as a generator, for fixtures that ``yield from`` it."""
    with running(host, script) as url:
        yield url
