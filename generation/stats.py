"""Queue statistics as plain functions.

One source for every view of the queue: the admin dashboard, ``GET
/api/queue/stats/``, ``manage.py queue_stats`` and the scrape-time gauges of
``/metrics`` all call these, so they cannot disagree. Every number is read
from the database, so any process reports the same truth.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Count, DurationField, F, Q
from django.utils import timezone

from .models import GenerationTask, QueueControl, WorkerProcess

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)
Status = GenerationTask.Status


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(f) WITHIN GROUP (ORDER BY expr)``; works on intervals."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: the same definition as percentile_cont."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def counts_by_status() -> dict[str, int]:
    counts = dict.fromkeys(Status.values, 0)
    for row in GenerationTask.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def oldest_pending(now: datetime | None = None) -> dict[str, Any] | None:
    """The claimable task that has waited longest, measured from when it became
    claimable (``run_after``: submission, or a retry's end of backoff). Tasks still
    in backoff are not waiting on capacity and do not count."""
    now = now or timezone.now()
    row = GenerationTask.objects.claimable().order_by("run_after", "id").values("id", "run_after").first()
    if row is None:
        return None
    return {"id": row["id"], "age_seconds": round((now - row["run_after"]).total_seconds(), 3)}


def _seconds_percentiles(queryset: Any, start: str, end: str, fractions: tuple[float, ...]) -> list[float | None]:
    span = F(end) - F(start)
    if connection.vendor == "postgresql":
        aggregates = {f"p{i}": PercentileCont(span, f, output_field=DurationField()) for i, f in enumerate(fractions)}
        row = queryset.aggregate(**aggregates)
        return [None if row[f"p{i}"] is None else round(row[f"p{i}"].total_seconds(), 3) for i in range(len(fractions))]
    # SQLite has no percentile aggregate: sort in Python. The window is one hour
    # of one small (embedded) deployment, so the row count stays modest.
    values = sorted((e - s).total_seconds() for s, e in queryset.values_list(start, end) if s and e)
    return [None if (p := percentile(values, f)) is None else round(p, 3) for f in fractions]


def last_hour(now: datetime | None = None, window: timedelta = WINDOW) -> dict[str, Any]:
    """Throughput, failure rate and p50/p95 wait and run time over the window.

    - finished counts: tasks whose final state was reached in the window;
    - run time: claim to finish of the last attempt of completed and failed tasks;
    - wait time: ``run_after`` to claim, for every claim made in the window
      (a task that is processing now counts too).
    """
    now = now or timezone.now()
    since = now - window
    tasks = GenerationTask.objects.order_by()
    finished = tasks.filter(finished_at__gte=since, finished_at__lte=now)
    counts = finished.aggregate(
        completed=Count("id", filter=Q(status=Status.COMPLETED)),
        failed=Count("id", filter=Q(status=Status.FAILED)),
        canceled=Count("id", filter=Q(status=Status.CANCELED)),
    )
    ran = finished.filter(status__in=[Status.COMPLETED, Status.FAILED], started_at__isnull=False)
    claimed = tasks.filter(started_at__gte=since, started_at__lte=now)
    run_p50, run_p95 = _seconds_percentiles(ran, "started_at", "finished_at", (0.5, 0.95))
    wait_p50, wait_p95 = _seconds_percentiles(claimed, "run_after", "started_at", (0.5, 0.95))
    ended = counts["completed"] + counts["failed"]
    minutes = window.total_seconds() / 60
    return {
        "window_seconds": int(window.total_seconds()),
        **counts,
        "throughput_per_minute": round(counts["completed"] / minutes, 3),
        "failure_rate": round(counts["failed"] / ended, 4) if ended else None,
        "wait_seconds": {"p50": wait_p50, "p95": wait_p95},
        "run_seconds": {"p50": run_p50, "p95": run_p95},
    }


def live_workers(now: datetime | None = None) -> list[dict[str, Any]]:
    """Workers with a recent heartbeat, each with the tasks it is processing now."""
    now = now or timezone.now()
    workers = list(WorkerProcess.objects.live().order_by("started_at"))
    current: dict[Any, list[int]] = {}
    rows = (
        GenerationTask.objects.filter(status=Status.PROCESSING, worker__in=[w.pk for w in workers])
        .order_by("id")
        .values_list("worker_id", "id")
    )
    for worker_id, task_id in rows:
        current.setdefault(worker_id, []).append(task_id)
    return [
        {
            "id": str(w.pk),
            "name": w.name,
            "host": w.host,
            "pid": w.pid,
            "concurrency": w.concurrency,
            "embedded": w.embedded,
            "started_at": w.started_at.isoformat(),
            "last_heartbeat": w.last_heartbeat.isoformat(),
            "heartbeat_age_seconds": round(max((now - w.last_heartbeat).total_seconds(), 0.0), 3),
            "tasks_done": w.tasks_done,
            "current_tasks": current.get(w.pk, []),
        }
        for w in workers
    ]


# The realtime side owns the sockets and registers how to count them
# (``notifications.apps``): this package never imports it.
_connection_counter: Callable[[], int] | None = None


def count_connections_with(counter: Callable[[], int] | None) -> None:
    """Register the function that counts open WebSocket connections across all web processes."""
    global _connection_counter
    _connection_counter = counter


def open_websocket_connections() -> int | None:
    """Open WebSocket connections across all web processes, or None if unknown
    (no counter registered, or the counter failed)."""
    counter = _connection_counter
    if counter is None:
        return None
    try:
        return int(counter())
    except Exception:
        logger.warning("Could not count open WebSocket connections", exc_info=True)
        return None


_realtime_table: Callable[[], dict[str, Any]] | None = None


def report_realtime_with(table: Callable[[], dict[str, Any]] | None) -> None:
    """Register the function that gives the realtime side's monitoring table (the seed's figures)."""
    global _realtime_table
    _realtime_table = table


def realtime_table() -> dict[str, Any] | None:
    table = _realtime_table
    if table is None:
        return None
    try:
        return table()
    except Exception:
        logger.warning("Could not read the realtime figures", exc_info=True)
        return None


def queue_stats(now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready data."""
    now = now or timezone.now()
    oldest = oldest_pending(now)
    workers = live_workers(now)
    return {
        "generated_at": now.isoformat(),
        "intake_paused": QueueControl.is_intake_paused(),
        "counts": counts_by_status(),
        "oldest_pending_age_seconds": oldest["age_seconds"] if oldest else None,
        "oldest_pending_task_id": oldest["id"] if oldest else None,
        "last_hour": last_hour(now),
        "live_workers": workers,
        "worker_capacity": sum(w["concurrency"] for w in workers),
        "open_websocket_connections": open_websocket_connections(),
    }

