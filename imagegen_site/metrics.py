"""Prometheus metrics, defined once and incremented where things happen.

Each process exports its own registry (the web process at ``/metrics``, a
worker on ``--metrics-port``); queue depth is read from the database at scrape
time so every process reports the same truth.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
PUBLISHES = Counter("imagegen_publishes_total", "Channel-layer pushes by result", ["result"])
WS_CONNECTIONS = Gauge("imagegen_websocket_connections", "Open WebSocket connections in this process")
WS_CONNECTS = Counter("imagegen_websocket_connects_total", "WebSocket connection attempts by result", ["result"])
WS_RESUMES = Counter("imagegen_websocket_resumes_total", "Connects or resumes that replayed from a seq")
REPLAY_SIZE = Histogram(
    "imagegen_replay_events", "Events replayed per resume", buckets=(0, 1, 5, 10, 50, 100, 500, 1000, 5000)
)
GAP_FILLS = Counter("imagegen_gap_fills_total", "Live events that arrived after a hole the consumer filled from the log")
