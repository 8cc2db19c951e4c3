"""django-tasks (the backport of Django 6's tasks) with its database backend, ``db_worker``.

Workers: ``manage.py db_worker --interval 0.1`` (one process each; it polls, it has no
LISTEN: 0.1 s is the shortest poll its docs show), persistent connections.
"""
from __future__ import annotations

import os
import sys

from bench.peers import common, tally

DB = os.environ.get("BENCH_PEER_DB", "bench_peer_djangotasks")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.djangotasks_settings")
os.environ.setdefault("BENCH_PEER_DATABASE_URL", f"{common.PG}/{DB}")

import django  # noqa: E402

django.setup()

from django_tasks import task  # noqa: E402


@task()
def noop(pickup: bool = False) -> None:
    if pickup:
        tally.picked_up()
    else:
        tally.ran()


def setup() -> None:
    from django.core.management import call_command
    from django.db import connection

    connection.close()
    common.recreate_database(DB)
    call_command("migrate", verbosity=0)


def _workers(count: int) -> list:
    return common.spawn([sys.executable, "-m", "django", "db_worker", "--interval", "0.1", "--no-startup-delay"], count)


def drain(tasks: int, processes: int) -> dict:
    from django_tasks_db.models import DBTaskResult

    setup()
    tally.reset()
    # Queued in bulk, as the other peers are (enqueue() one at a time would time the producer).
    first = noop.enqueue()
    row = DBTaskResult.objects.get(pk=first.id)
    rows = [DBTaskResult(**{f.attname: getattr(row, f.attname) for f in DBTaskResult._meta.concrete_fields
                            if not f.primary_key}) for _ in range(tasks - 1)]
    DBTaskResult.objects.bulk_create(rows, batch_size=1000)
    return common.while_running(_workers(processes), lambda: tally.wait_drained(tasks))


def pickup(samples: int) -> dict:
    setup()
    tally.reset()
    return common.while_running(_workers(1), lambda: tally.sample_pickups(lambda: noop.enqueue(pickup=True), samples))


if __name__ == "__main__":
    from bench.peers import djangotasks_peer as peer

    common.main(drain=peer.drain, pickup=peer.pickup)
