"""Photos over plain HTTP on loopback, for ``image_url`` tests against a real server
(which must run with ``IMAGEGEN_FETCH_ALLOW_HTTP=1`` and ``IMAGEGEN_FETCH_ALLOW_PRIVATE=1``)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.loopback_http import Script, running

FETCH_ENV = {"IMAGEGEN_FETCH_ALLOW_HTTP": "1", "IMAGEGEN_FETCH_ALLOW_PRIVATE": "1"}


@contextmanager
def serve_photos(photos: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """Serve ``photos`` (path -> JPEG bytes); yields the base URL and the paths requested so far."""
    script = Script()
    script.routes.update({path: (200, {"Content-Type": "image/jpeg"}, body) for path, body in photos.items()})
    with running("127.0.0.1", script) as url:
        yield url, script.hits
