"""What the queue position costs inside a task change's transaction.

Run on demand (not part of the test suite):

    .venv/bin/python bench/bench_snapshot.py [--depths 0,1000,10000,50000] [--samples 200]

and writes the results to ``docs/benchmarks/snapshot.md``.

A change into ``pending`` appends its event with ``live_state()``, whose queue
position is a COUNT of the pending tasks ahead, read while the row lock (and,
for the next event of the same user, the event counter lock) is held. For each
queue depth this times, with the task at the back of the queue: the COUNT
alone, a whole ``cancel()`` + ``retry()`` round (two transactions, two events,
the retry with position and ETA), and the same round with the position left
out, so the difference is what keeping it inside the transaction costs. It
uses a scratch database ``imagegen_bench_snapshot`` on the local PostgreSQL.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = "imagegen_bench_snapshot"
PG = "postgres://postgres@127.0.0.1:5432"


def setup_django() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    os.environ.update(DATABASE_URL=f"{PG}/{BENCH_DB}", DJANGO_SETTINGS_MODULE="imagegen_site.settings",
                      LOG_LEVEL="WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def median_ms(run: Callable[[], object], samples: int) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="0,1000,10000,50000")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "snapshot.md")
    args = parser.parse_args()
    setup_django()

    from django.contrib.auth import get_user_model
    from django.db import connection

    from generation.models import GenerationTask

    user = get_user_model().objects.create_user("bench", password="bench-pass-1")
    filler = get_user_model().objects.create_user("filler", password="bench-pass-1")
    queued = 0
    rows: list[str] = []
    for depth in (int(d) for d in args.depths.split(",")):
        # Rows of another user, without events: only the queue's length matters here.
        GenerationTask.objects.bulk_create(
            GenerationTask(user=filler, input_image="inputs/bench.jpg", input_content_type="image/jpeg")
            for _ in range(depth - queued)
        )
        queued = depth
        GenerationTask.objects.filter(user=user).delete()
        task, _ = GenerationTask.submit(user=user, image=_image(), content_type="image/jpeg", options={})
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE generation_generationtask")
        count = median_ms(task.queue_position, args.samples)

        def round_trip() -> None:
            task.cancel()
            task.retry()

        with_position = median_ms(round_trip, args.samples)
        real = GenerationTask.queue_position
        GenerationTask.queue_position = lambda self: None  # type: ignore[method-assign]
        try:
            without = median_ms(round_trip, args.samples)
        finally:
            GenerationTask.queue_position = real  # type: ignore[method-assign]
        rows.append(f"| {depth:,} | {count:.1f} ms | {with_position:.1f} ms | {without:.1f} ms |")
        print(rows[-1])
    lines = [
        "# Queue position inside the change's transaction",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}), PostgreSQL on 127.0.0.1; medians of "
        f"{args.samples} samples, the task at the back of the queue. One run; the machine is shared and noisy. "
        "Reproduce: `.venv/bin/python bench/bench_snapshot.py`.",
        "",
        "| tasks ahead | COUNT alone | cancel + retry round | the same without the position |",
        "|---|---|---|---|",
        *rows,
        "",
        "Only a change into `pending` reads the position (one COUNT over the pending index, reused by the",
        "ETA); progress and finish events do not. It stays inside the transaction: outside, it could reach",
        "the stored event only through a second write of the event row.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


def _image() -> object:
    from django.core.files.base import ContentFile

    return ContentFile(b"\xff\xd8\xff\xd9", name="bench.jpg")


if __name__ == "__main__":
    main()
