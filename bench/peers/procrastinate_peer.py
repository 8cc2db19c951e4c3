"""procrastinate: a PostgreSQL task queue (LISTEN/NOTIFY, SKIP LOCKED), its defaults.

Workers: ``procrastinate worker --concurrency 1`` (one process each), jobs kept after they
finish (its default ``--delete-jobs never``).
"""
from __future__ import annotations

import os
import sys

import procrastinate

from bench.peers import common, tally

DB = os.environ.get("BENCH_PEER_DB", "bench_peer_procrastinate")

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=f"{common.PG}/{DB}"))


@app.task(name="bench.noop")
def noop(pickup: bool = False) -> None:
    if pickup:
        tally.picked_up()
    else:
        tally.ran()


def setup() -> None:
    common.recreate_database(DB)
    with app.open():
        app.schema_manager.apply_schema()


def _workers(count: int) -> list:
    return common.spawn([sys.executable, "-m", "procrastinate", "--app", "bench.peers.procrastinate_peer.app",
                         "worker", "--concurrency", "1"], count, BENCH_PEER_DB=DB)


def drain(tasks: int, processes: int) -> dict:
    setup()
    tally.reset()
    with app.open():
        for start in range(0, tasks, 1000):
            noop.batch_defer(*[{} for _ in range(min(1000, tasks - start))])
    return common.while_running(_workers(processes), lambda: tally.wait_drained(tasks))


def pickup(samples: int) -> dict:
    setup()
    tally.reset()

    def measure() -> dict:
        with app.open():
            return tally.sample_pickups(lambda: noop.defer(pickup=True), samples)

    return common.while_running(_workers(1), measure)


if __name__ == "__main__":
    from bench.peers import procrastinate_peer as peer  # the app's one instance, as its workers import it

    common.main(drain=peer.drain, pickup=peer.pickup)
