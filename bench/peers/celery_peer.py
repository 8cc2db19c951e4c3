"""Celery with Redis as broker, no result backend: the usual production shape.

Workers: ``celery worker --pool solo`` (one process each, so "2 processes" means two
processes of work, as for the other peers), default prefetch and acks.
"""
from __future__ import annotations

import os
import sys

from celery import Celery

from bench.peers import common, tally

app = Celery("bench_peer", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="bench.noop")
def noop(pickup: bool = False) -> None:
    if pickup:
        tally.picked_up()
    else:
        tally.ran()


def _workers(count: int) -> list:
    return common.spawn([sys.executable, "-m", "celery", "-A", "bench.peers.celery_peer", "worker", "--pool", "solo",
                         "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"], count)


def drain(tasks: int, processes: int) -> dict:
    tally.reset()
    app.control.purge()
    for _ in range(tasks):
        noop.apply_async()
    return common.while_running(_workers(processes), lambda: tally.wait_drained(tasks))


def pickup(samples: int) -> dict:
    tally.reset()
    app.control.purge()
    return common.while_running(_workers(1),
                                lambda: tally.sample_pickups(lambda: noop.apply_async(kwargs={"pickup": True}), samples))


if __name__ == "__main__":
    from bench.peers import celery_peer as peer  # the app's one instance, as its workers import it

    common.main(drain=peer.drain, pickup=peer.pickup)
