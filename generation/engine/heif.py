"""HEIC/HEIF decoding support for Pillow, registered on first need."""
from __future__ import annotations

import threading

_lock = threading.Lock()
_registered = False


def enable_heif() -> None:
    """Register pillow-heif's opener once per process. Lazily: loading libheif costs
    time and memory that most processes (a web server answering JSON, a worker fed
    only JPEGs) never need."""
    global _registered
    with _lock:
        if not _registered:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _registered = True
