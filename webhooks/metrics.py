"""Prometheus series of webhook delivery (served by ``/metrics`` and a worker's ``--metrics-port``)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

ATTEMPTS = Counter("imagegen_webhook_attempts_total", "Webhook delivery attempts by result", ["result"])
for _result in ("delivered", "failed", "gave_up"):
    ATTEMPTS.labels(_result)  # exported at 0 from the start: an alert on failures needs the series
DELIVERY_LAG_SECONDS = Histogram(
    "imagegen_webhook_delivery_lag_seconds", "Event commit to the receiver's 2xx, retries included",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600, 86400),
)
ATTEMPT_SECONDS = Histogram(
    "imagegen_webhook_attempt_seconds", "One HTTP attempt, request sent to answer (or failure)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ENDPOINTS_DISABLED = Counter("imagegen_webhook_endpoints_disabled_total",
                             "Endpoints disabled after failing for IMAGEGEN_WEBHOOK_DISABLE_AFTER")
