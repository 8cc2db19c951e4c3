"""``manage.py queue_stats``: the queue dashboard's numbers on the command line."""
from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from generation.management.arguments import write_json
from generation.stats import queue_stats


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


class Command(BaseCommand):
    help = (
        "Show the queue: tasks by status, the oldest pending task's wait, throughput, failure rate "
        "and p50/p95 wait and run time over the last hour, live workers with their heartbeat age and "
        "current tasks, and open WebSocket connections. The same data as GET /api/queue/stats/ "
        "(--json prints exactly that)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the statistics as JSON")

    def handle(self, *args: Any, json: bool, **options: Any) -> None:
        data = queue_stats()
        if json:
            write_json(self, data)
            return
        out = self.stdout.write
        out("Intake: " + ("PAUSED" if data["intake_paused"] else "open"))
        out("Tasks:  " + "  ".join(f"{status} {count}" for status, count in data["counts"].items()))
        oldest = data["oldest_pending_age_seconds"]
        out(f"Oldest pending: {_seconds(oldest)}" + (f" (task {data['oldest_pending_task_id']})" if oldest is not None else ""))
        hour = data["last_hour"]
        rate = "-" if hour["failure_rate"] is None else f"{hour['failure_rate']:.1%}"
        out(
            f"Last hour: {hour['completed']} completed, {hour['failed']} failed, {hour['canceled']} canceled; "
            f"{hour['throughput_per_minute']:.2f}/min; failure rate {rate}"
        )
        out(
            f"  wait p50 {_seconds(hour['wait_seconds']['p50'])} p95 {_seconds(hour['wait_seconds']['p95'])}; "
            f"run p50 {_seconds(hour['run_seconds']['p50'])} p95 {_seconds(hour['run_seconds']['p95'])}"
        )
        connections = data["open_websocket_connections"]
        out(f"WebSocket connections: {'unknown' if connections is None else connections}")
        out(f"Live workers: {len(data['live_workers'])} (capacity {data['worker_capacity']})")
        for w in data["live_workers"]:
            current = ", ".join(map(str, w["current_tasks"])) or "idle"
            out(
                f"  {w['name']} {w['host']}:{w['pid']} x{w['concurrency']} heartbeat {_seconds(w['heartbeat_age_seconds'])} "
                f"ago, {w['tasks_done']} done, current: {current}"
            )
