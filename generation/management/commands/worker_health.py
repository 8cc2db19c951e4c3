"""``manage.py worker_health``: a liveness probe for orchestrators (exit 0 healthy, 1 not)."""
from __future__ import annotations

import argparse
import socket
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from generation.management.arguments import positive_seconds
from generation.models import WorkerProcess


class Command(BaseCommand):
    help = (
        "Exit 0 if a worker on this host (--host, default this machine's hostname) and, with --name, "
        "with that --worker-id, has sent a heartbeat within --max-age seconds and has not stopped; "
        "exit 1 otherwise. Use it as a Kubernetes/Docker liveness probe next to `runworker`. "
        "It reads the worker-process table, so it also fails while the database is unreachable."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--max-age", type=positive_seconds, default=30.0,
                            help="seconds since the last heartbeat (default 30; keep it above the heartbeat interval)")
        parser.add_argument("--name", default=None, help="the worker's --worker-id")
        parser.add_argument("--host", default=None, help="host name the worker registered with (default: this one)")

    def handle(self, *args: Any, max_age: float, name: str | None, host: str | None, **options: Any) -> None:
        host = host or socket.gethostname()
        workers = WorkerProcess.objects.filter(host=host, stopped_at__isnull=True)
        if name is not None:
            workers = workers.filter(name=name)
        latest = workers.order_by("-last_heartbeat").first()
        who = f"worker {name!r} on {host}" if name else f"worker on {host}"
        if latest is None:
            raise CommandError(f"Unhealthy: no running {who}.", returncode=1)
        age = (timezone.now() - latest.last_heartbeat).total_seconds()
        if age > timedelta(seconds=max_age).total_seconds():
            raise CommandError(f"Unhealthy: {who} last beat {age:.1f}s ago (max {max_age:g}s).", returncode=1)
        self.stdout.write(f"OK: {latest} beat {age:.1f}s ago.")
