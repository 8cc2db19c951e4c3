"""Prometheus series of the realtime side: pushes, sockets, resumes and replays.

Defined once per process (``NotificationsConfig.ready`` imports this module, so
every series is exported from the start, at 0) and incremented where things
happen. ``/metrics`` and a worker's ``--metrics-port`` serve the default registry.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

class _SampledHistogram(Histogram):
    """A histogram that also hands each observation to the seed's table (``monitoring``: exact p50/p99
    over a window, which buckets cannot give)."""

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        super().observe(amount, exemplar)
        from .monitoring import process_window

        process_window.push_latency(amount)


PUSH_LATENCY_SECONDS = _SampledHistogram(
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
