"""Prometheus metrics, defined once and incremented where things happen.

Each process exports its own registry (the web process at ``/metrics``, a
worker on ``--metrics-port``); queue depth is read from the database at scrape
time so every process reports the same truth.

Series the realtime side observes (push latency, publish results, connections,
resumes, replay sizes) are defined here too.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

TASK_OUTCOMES = Counter(
    "imagegen_task_outcomes_total", "Finished task attempts by outcome and error code", ["outcome", "error_code"]
)
TASK_RUN_SECONDS = Histogram(
    "imagegen_task_run_seconds", "Time from claim to finish of one attempt",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
TASK_WAIT_SECONDS = Histogram(
    "imagegen_task_wait_seconds", "Time from submission (or retry) to claim",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
)
PUSH_LATENCY_SECONDS = Histogram(
    "imagegen_push_latency_seconds", "Event commit to WebSocket frame sent",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
# Incremented by the publisher next to its own ``publisher.counts`` (published, dropped, failed).
PUBLISHES = Counter("imagegen_publishes_total", "Channel-layer pushes by result", ["result"])
for _result in ("published", "dropped", "failed"):
    PUBLISHES.labels(_result)  # exported at 0 from the start: an alert on dropped needs the series
WS_CONNECTIONS = Gauge("imagegen_websocket_connections", "Open WebSocket connections in this process")
WS_CONNECTS = Counter("imagegen_websocket_connects_total", "WebSocket connection attempts by result", ["result"])
WS_RESUMES = Counter("imagegen_websocket_resumes_total", "Connects or resumes that replayed from a seq")
REPLAY_SIZE = Histogram(
    "imagegen_replay_events", "Events replayed per resume", buckets=(0, 1, 5, 10, 50, 100, 500, 1000, 5000)
)
GAP_FILLS = Counter("imagegen_gap_fills_total", "Live events that arrived after a hole the consumer filled from the log")
RETENTION_DELETED = Counter("imagegen_retention_deleted_total", "Rows deleted by retention and purges", ["kind"])


def observe_claim(wait_seconds: float) -> None:
    TASK_WAIT_SECONDS.observe(max(wait_seconds, 0.0))


def observe_attempt(outcome: str, error_code: str | None, run_seconds: float) -> None:
    """One finished attempt: ``outcome`` is completed, failed, retrying or discarded."""
    TASK_OUTCOMES.labels(outcome, error_code or "").inc()
    TASK_RUN_SECONDS.observe(max(run_seconds, 0.0))


class RuntimeCollector(Collector):
    """Values read at scrape time: queue depth and workers from the database."""

    def describe(self) -> Iterator[Metric]:
        # Names only, so registering does not query the database at import time.
        yield from self._families()

    def _families(self) -> list[Any]:
        return [
            GaugeMetricFamily("imagegen_queue_tasks", "Tasks by status (from the database at scrape)", labels=["status"]),
            GaugeMetricFamily("imagegen_queue_oldest_pending_seconds", "Wait so far of the oldest claimable task (0 if none)"),
            GaugeMetricFamily("imagegen_queue_intake_paused", "1 while task submission is paused"),
            GaugeMetricFamily("imagegen_workers_live", "Workers with a recent heartbeat"),
            GaugeMetricFamily("imagegen_workers_capacity", "Runner threads of the live workers"),
            GaugeMetricFamily("imagegen_queue_stats_up", "1 if the database answered this scrape's queue queries"),
        ]

    def collect(self) -> Iterator[Metric]:
        tasks, oldest, paused, live, capacity, up = self._families()
        try:
            from generation.models import QueueControl, Worker
            from generation.stats import counts_by_status, oldest_pending

            for status, count in counts_by_status().items():
                tasks.add_metric([status], count)
            pending = oldest_pending()
            oldest.add_metric([], pending["age_seconds"] if pending else 0.0)
            paused.add_metric([], 1 if QueueControl.is_intake_paused() else 0)
            workers = list(Worker.live().values_list("concurrency", flat=True))
            live.add_metric([], len(workers))
            capacity.add_metric([], sum(workers))
            yield from (tasks, oldest, paused, live, capacity)
            up.add_metric([], 1)
        except Exception:  # a scrape must still answer (and say so) while the database is down
            logger.warning("Queue metrics unavailable", exc_info=True)
            up.add_metric([], 0)
        yield up


REGISTRY.register(RuntimeCollector())


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
