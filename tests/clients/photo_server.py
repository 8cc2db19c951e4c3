"""Photos over plain HTTP on loopback, for ``image_url`` tests against a real server
(which must run with ``IMAGEGEN_FETCH_ALLOW_HTTP=1`` and ``IMAGEGEN_FETCH_ALLOW_PRIVATE=1``)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FETCH_ENV = {"IMAGEGEN_FETCH_ALLOW_HTTP": "1", "IMAGEGEN_FETCH_ALLOW_PRIVATE": "1"}


@contextmanager
def serve_photos(photos: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """Serve ``photos`` (path -> JPEG bytes); yields the base URL and the paths requested so far."""
    hits: list[str] = []

    class Photos(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            hits.append(self.path)
            body = photos.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/jpeg" if body is not None else "text/plain")
            self.send_header("Content-Length", str(len(body or b"not here")))
            self.end_headers()
            self.wfile.write(body or b"not here")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Photos)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
