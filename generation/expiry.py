"""Ending tasks whose ``expires_in`` ran out before they were started.

A claim never starts an expired task (``TaskQuerySet.claimable``), but the task
must also *end*, with its ``task_canceled`` event, at its deadline, whether or
not any worker is running. So every web process (``imagegen_site.asgi``) and
every worker process runs one ``Sweeper`` thread: it sleeps until the earliest
deadline among pending tasks, and wakes early when work with a deadline is queued
(``wakeup.deadlines``: a local submit or retry, or a PostgreSQL NOTIFY with the
``DEADLINE`` payload relayed by a worker's listener), since the new task may be due
sooner. Work without a deadline does not wake it: on a busy queue its read would
otherwise run beside every claim. The transition is
``GenerationTask.expire_due``: locked with ``skip_locked``, so sweepers in many
processes never expire one task twice.
"""
from __future__ import annotations

import logging
import threading

from django.db import close_old_connections, connection
from django.utils import timezone

from . import wakeup

logger = logging.getLogger(__name__)

# Deadlines queued by another process that does not notify this one (SQLite has no
# NOTIFY; a web process runs no listener) are found at the latest after this.
MAX_SLEEP = 5.0
# A burst of submits wakes the sweeper at most this often (one indexed read each).
MIN_SLEEP = 0.05


class Sweeper(threading.Thread):
    def __init__(self, halted: threading.Event | None = None) -> None:
        super().__init__(name="imagegen-expiry", daemon=True)
        self.halted = halted or threading.Event()

    def run(self) -> None:
        from .models import GenerationTask

        try:
            while not self.halted.is_set():
                seen = wakeup.deadlines.generation
                close_old_connections()
                delay = MAX_SLEEP
                try:
                    GenerationTask.expire_due()
                    due = GenerationTask.next_expiry()
                    if due is not None:
                        delay = min(max((due - timezone.now()).total_seconds(), MIN_SLEEP), MAX_SLEEP)
                except Exception:
                    logger.exception("Expiry sweep failed; trying again in %.0f s", MAX_SLEEP)
                wakeup.deadlines.wait(seen, delay)
                self.halted.wait(MIN_SLEEP)
        finally:
            connection.close()

    def stop(self) -> None:
        self.halted.set()
        wakeup.deadlines.notify()


def start_sweeper(halted: threading.Event | None = None) -> Sweeper:
    sweeper = Sweeper(halted)
    sweeper.start()
    return sweeper
