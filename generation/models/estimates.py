"""Figures behind ETAs, cached briefly: they are read for every task event and listing."""
from __future__ import annotations

import time
from typing import Any

from django.db import models

_recent_cache: dict[str, tuple[float, Any]] = {}


def _cached(key: str, ttl: float, compute: Any) -> Any:
    now = time.monotonic()
    hit = _recent_cache.get(key)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    value = compute()
    _recent_cache[key] = (now, value)
    return value


def recent_run_seconds() -> float | None:
    """Median run time of the last 50 completed tasks (cached for 10 s), for ETAs."""

    from .task import GenerationTask

    def compute() -> float | None:
        rows = list(
            GenerationTask.objects.filter(status=GenerationTask.Status.COMPLETED, started_at__isnull=False)
            .order_by("-finished_at")
            .values_list("started_at", "finished_at")[:50]
        )
        durations = sorted((end - start).total_seconds() for start, end in rows if end)
        return durations[len(durations) // 2] if durations else None

    return _cached("run_seconds", 10.0, compute)


def live_worker_capacity() -> int:
    from .worker import Worker

    def compute() -> int:
        return int(Worker.live().aggregate(n=models.Sum("concurrency"))["n"] or 0)

    return _cached("capacity", 10.0, compute)
