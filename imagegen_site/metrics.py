"""The HTTP server for a process's Prometheus registry (a worker's ``--metrics-port``).

Each app defines and registers its own series (``generation.metrics``,
``notifications.metrics``); the web process serves the same registry at
``/metrics`` (``imagegen_site.health``). This module imports no app.
"""
from __future__ import annotations

import logging
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

logger = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one access-log line per scrape is noise


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve this process's registry over HTTP (a worker's ``--metrics-port``).

    Each scrape runs in a fresh thread (as in prometheus_client's own server) and
    opens a database connection for the queue gauges; it is closed after the
    scrape, or every scrape would leave one behind."""
    from django.db import connections

    registry_app = make_wsgi_app(REGISTRY)

    def app(environ: dict, start_response: Any) -> Any:
        try:
            return registry_app(environ, start_response)
        finally:
            connections.close_all()

    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="imagegen-metrics", daemon=True).start()
    logger.info("Metrics on http://%s:%d/metrics", addr, server.server_port)
    return server
