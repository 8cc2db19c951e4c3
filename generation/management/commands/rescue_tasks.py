"""``manage.py rescue_tasks``: take back orphaned tasks now, instead of at the next heartbeat."""
from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from generation.management.arguments import positive_seconds, write_json
from generation.models import GenerationTask


class Command(BaseCommand):
    help = (
        "Take back processing tasks whose worker has sent no heartbeat within the timeout it "
        "declared (or for --timeout seconds, when given) or has stopped: each goes back to pending, or fails "
        "with worker_lost when its attempts are spent. Live workers do this on every heartbeat; "
        "this command does it at once, e.g. after a host was lost. --dry-run lists them only."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--timeout", type=positive_seconds, default=None,
                            help="seconds of worker silence that make a task orphaned, overriding "
                                 "each worker's declared heartbeat timeout")
        parser.add_argument("--dry-run", action="store_true", help="list the orphaned tasks, change nothing")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args: Any, timeout: float | None, dry_run: bool, json: bool, **options: Any) -> None:
        orphans = list(
            GenerationTask.objects.orphaned(timeout).order_by("id").values("id", "attempts", "max_attempts", "worker__name")
        )
        plan = [
            {**row, "worker": row.pop("worker__name"),
             "action": "retry" if row["attempts"] < row["max_attempts"] else "fail"}
            for row in orphans
        ]
        rescued: list[int] = []
        if not dry_run:
            # rescue_orphans takes up to 100 per transaction and skips rows another
            # rescuer holds; loop until a pass finds nothing more.
            while batch := GenerationTask.rescue_orphans(timeout):
                rescued.extend(batch)
        if json:
            write_json(self, {"dry_run": dry_run, "timeout": timeout, "orphaned": plan, "rescued": sorted(rescued)})
            return
        if not plan and not rescued:
            silence = f"{timeout:g}s or more" if timeout else "longer than its declared heartbeat timeout"
            self.stdout.write(f"No orphaned tasks (worker silent for {silence}).")
            return
        verb = "Would take back" if dry_run else "Took back"
        for item in plan:
            if dry_run or item["id"] in rescued:
                self.stdout.write(
                    f"{verb} task {item['id']} from {item['worker'] or 'no worker'} "
                    f"(attempt {item['attempts']}/{item['max_attempts']}: {item['action']})"
                )
        if not dry_run:
            self.stdout.write(self.style.SUCCESS(f"Took back {len(rescued)} task(s)."))
