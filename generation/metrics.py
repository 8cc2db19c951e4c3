"""Prometheus series of the queue: attempts, waits, retention, and the scrape-time collector.

Defined once per process (``GenerationConfig.ready`` imports this module) and
incremented where things happen. Queue depth and workers are read from the
database at scrape time, so every process (the web process at ``/metrics``, a
worker on ``--metrics-port``) reports the same truth.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .models import QueueControl, WorkerProcess
from .stats import counts_by_status, oldest_pending

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
RETENTION_DELETED = Counter("imagegen_retention_deleted_total", "Rows deleted by retention and purges", ["kind"])


def observe_claim(wait_seconds: float) -> None:
    TASK_WAIT_SECONDS.observe(max(wait_seconds, 0.0))


def observe_attempt(outcome: str, error_code: str | None, run_seconds: float) -> None:
    """One finished attempt: ``outcome`` is completed, failed, retrying, discarded or postponed."""
    TASK_OUTCOMES.labels(outcome, error_code or "").inc()
    TASK_RUN_SECONDS.observe(max(run_seconds, 0.0))


class QueueCollector(Collector):
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
            for status, count in counts_by_status().items():
                tasks.add_metric([status], count)
            pending = oldest_pending()
            oldest.add_metric([], pending["age_seconds"] if pending else 0.0)
            paused.add_metric([], 1 if QueueControl.is_intake_paused() else 0)
            workers = list(WorkerProcess.objects.live().values_list("concurrency", flat=True))
            live.add_metric([], len(workers))
            capacity.add_metric([], sum(workers))
            yield from (tasks, oldest, paused, live, capacity)
            up.add_metric([], 1)
        except Exception:  # a scrape must still answer (and say so) while the database is down
            logger.warning("Queue metrics unavailable", exc_info=True)
            up.add_metric([], 0)
        yield up


REGISTRY.register(QueueCollector())
