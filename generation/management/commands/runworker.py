"""``manage.py runworker``: claim and run generation tasks (our command, not Channels')."""
from __future__ import annotations

import argparse
import gc
import os
import signal
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from generation.engine.saliency import get_segmenter
from generation.worker import Worker
from imagegen_site.metrics import start_metrics_server


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def port_number(value: str) -> int:
    number = positive_int(value)
    if number > 65535:
        raise argparse.ArgumentTypeError("must be a TCP port (1-65535)")
    return number


def worker_name(value: str) -> str:
    if not value.strip() or len(value) > 200:
        raise argparse.ArgumentTypeError("must be 1-200 characters")
    return value.strip()


class Command(BaseCommand):
    help = (
        "Run a generation worker: claim pending tasks from the database (SELECT ... FOR UPDATE "
        "SKIP LOCKED), generate their images and record the results. SIGTERM/SIGINT stop claiming "
        "and finish in-flight work within IMAGEGEN_SHUTDOWN_GRACE seconds, releasing the rest back "
        "to the queue; a second signal exits at once."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--concurrency", type=positive_int, default=1, help="runner threads (default 1)")
        parser.add_argument("--burst", action="store_true", help="exit when no pending task is left, after waiting for retries that are "
                                 "due later; prints how many tasks completed and failed")
        parser.add_argument("--worker-id", type=worker_name, default=None, help="name shown in the admin and logs")
        parser.add_argument("--metrics-port", type=port_number, default=None,
                            help="serve this worker's Prometheus metrics on http://ADDR:PORT/metrics")
        parser.add_argument("--metrics-addr", default="127.0.0.1",
                            help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 to let a scraper in)")

    def handle(self, *args: Any, concurrency: int, burst: bool, worker_id: str | None, **options: Any) -> None:
        metrics_server = None
        if options.get("metrics_port"):
            try:
                metrics_server = start_metrics_server(options["metrics_port"], options["metrics_addr"])
            except OSError as exc:
                raise CommandError(f"Cannot serve metrics on {options['metrics_addr']}:{options['metrics_port']}: {exc}")
        if settings.IMAGEGEN_BACKEND == "local":
            # Load and check the segmenter's model now: a bad IMAGEGEN_SEGMENTER stops the worker at start-up.
            get_segmenter(settings.IMAGEGEN_SEGMENTER)
        worker = Worker(concurrency=concurrency, burst=burst, worker_id=worker_id)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if worker.stopping:
                self.stderr.write("Second signal: exiting now; the heartbeat timeout recovers unfinished tasks.")
                os._exit(1)
            worker.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # Long-lived objects loaded so far (Django, the app) need not be scanned by
        # every full collection: those pauses delayed event pushes by 60-80 ms.
        gc.collect()
        gc.freeze()
        try:
            worker.run()
            if burst:
                done = worker.outcomes
                self.stdout.write(
                    f"Burst finished: {done['completed']} completed, {done['failed']} failed "
                    f"({done['retrying']} attempts retried, {done['discarded']} discarded)"
                )
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
