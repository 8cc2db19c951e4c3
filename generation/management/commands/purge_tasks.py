"""``manage.py purge_tasks --older-than 30d``: delete old finished tasks, their files and old events."""
from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from generation import retention
from generation.management.arguments import duration, format_duration, status_list, write_json
from generation.models import GenerationTask

FINISHED = GenerationTask.FINISHED


class Command(BaseCommand):
    help = (
        "Delete finished tasks (completed, failed, canceled) that finished more than --older-than ago "
        "(e.g. 30d, 12h, 2w), with their input and result image files, in batches of short "
        "transactions; also delete events older than the same age (--keep-events to skip). Pending "
        "and processing tasks are never deleted. Workers do this on their own when "
        "IMAGEGEN_TASK_RETENTION_DAYS is set; this is the same purge, now. --dry-run counts only."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--older-than", type=duration, required=True, metavar="AGE",
                            help="minimum age since the task finished: a number and s, m, h, d or w")
        parser.add_argument("--status", type=status_list(*FINISHED), action="extend", default=None,
                            help=f"only these statuses (comma-separated or repeated; default all of {', '.join(FINISHED)})")
        parser.add_argument("--keep-events", action="store_true", help="do not delete old events")
        parser.add_argument("--batch-size", type=int, default=None, help="rows per transaction (default IMAGEGEN_RETENTION_BATCH_SIZE)")
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
        parser.add_argument("--json", action="store_true", help="print the counts as JSON")

    def handle(self, *args: Any, older_than: timedelta, status: list[str] | None, keep_events: bool,
               batch_size: int | None, dry_run: bool, json: bool, **options: Any) -> None:
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        statuses = sorted(set(status)) if status else list(FINISHED)
        result = retention.purge_tasks(older_than=older_than, statuses=statuses, batch_size=batch_size, dry_run=dry_run)
        if not keep_events:
            result.events = retention.purge_events(older_than=older_than, dry_run=dry_run)
        if json:
            write_json(self, {**result.as_dict(), "older_than_seconds": older_than.total_seconds(), "statuses": statuses})
            return
        verb = "Would delete" if dry_run else "Deleted"
        events = "" if keep_events else f" and {result.events} event(s)"
        self.stdout.write(
            f"{verb} {result.tasks} {'/'.join(statuses)} task(s) finished more than {format_duration(older_than)} ago, "
            f"{result.files} image file(s){events}."
        )
