"""``manage.py cancel_tasks``: cancel pending or processing tasks by id, owner or status."""
from __future__ import annotations

import argparse
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from generation.management.arguments import status_list, write_json
from generation.models import GenerationTask, InvalidTransition

ACTIVE = [GenerationTask.Status.PENDING.value, GenerationTask.Status.PROCESSING.value]


def task_id(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a task id")
    return int(value)


class Command(BaseCommand):
    help = (
        "Cancel tasks: the given ids, and/or all tasks of --user, and/or all tasks with --status "
        "(pending, processing; comma-separated). Criteria combine (AND). Each task is canceled "
        "through the model, so its owner's clients get the task_canceled event, and a worker "
        "running it stops at its next progress step. Finished tasks are skipped. --dry-run lists only."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ids", nargs="*", type=task_id, metavar="ID", help="task ids")
        parser.add_argument("--user", metavar="USERNAME", help="only this user's tasks")
        parser.add_argument("--status", type=status_list(*ACTIVE), action="extend", default=None,
                            help="only tasks in these states (default both pending and processing)")
        parser.add_argument("--dry-run", action="store_true", help="list what would be canceled, change nothing")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args: Any, ids: list[int], user: str | None, status: list[str] | None, dry_run: bool,
               json: bool, **options: Any) -> None:
        if not ids and user is None and status is None:
            raise CommandError("Say which tasks: give task ids, --user USERNAME or --status pending,processing.")
        tasks = GenerationTask.objects.order_by("id")
        if ids:
            missing = sorted(set(ids) - set(tasks.filter(id__in=ids).values_list("id", flat=True)))
            if missing:
                raise CommandError(f"No such task(s): {', '.join(map(str, missing))}. Nothing was canceled.")
            tasks = tasks.filter(id__in=ids)
        if user is not None:
            owner = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: user}).first()
            if owner is None:
                raise CommandError(f"No user {user!r}. Nothing was canceled.")
            tasks = tasks.filter(user=owner)
        selected = list(tasks.filter(status__in=status or ACTIVE))
        skipped = list(tasks.exclude(status__in=ACTIVE).values_list("id", flat=True)) if ids else []
        canceled: list[int] = []
        if not dry_run:
            for task in selected:
                try:
                    task.cancel()
                except InvalidTransition:
                    skipped.append(task.pk)  # finished meanwhile
                    continue
                canceled.append(task.pk)
        if json:
            write_json(self, {"dry_run": dry_run, "selected": [t.pk for t in selected], "canceled": canceled,
                              "skipped": sorted(skipped)})
            return
        for task in selected:
            if dry_run:
                self.stdout.write(f"Would cancel task {task.pk} ({task.status}, user {task.user_id})")
        if skipped:
            self.stdout.write(f"Skipped finished task(s): {', '.join(map(str, sorted(skipped)))}")
        if dry_run:
            self.stdout.write(f"Would cancel {len(selected)} task(s).")
        else:
            self.stdout.write(self.style.SUCCESS(f"Canceled {len(canceled)} task(s)."))
