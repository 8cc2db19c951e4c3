"""Webhook benchmark: the hot-path cost of the two designs, and delivery lag through a real worker.

Run on demand (not part of the test suite):

    .venv/bin/python bench/bench_webhooks.py [--rate 100] [--seconds 20] [--appends 2000] [--producers 4] [--workers 1]

It creates a scratch database ``imagegen_bench_webhooks`` on the local PostgreSQL and writes
``docs/benchmarks/webhooks.md``.

1. Hot path: the cost one event adds to the transaction that writes it. "cursor" is what ships
   (the event transaction is unchanged: ``Event.append`` alone); "row in the event's transaction"
   is the alternative, emulated with the same tables: the append, then a read of the owner's enabled
   endpoints and one delivery row per matching endpoint. Measured for a user without endpoints and
   one with one endpoint, each as a committed transaction (as a task change is).
2. Lag: ``--workers`` ``manage.py runworker`` processes with production settings (``DEBUG=0``, poll
   0.2 s, 8 delivery threads, 2 lanes per endpoint fleet-wide, no retries needed) deliver to a
   receiver on loopback while ``--producers`` processes append events at ``--rate`` per second in
   all (one process alone cannot reach 100/s on a loaded machine: each append is a committed
   transaction), to one endpoint, then spread over 100 endpoints (100 users). Lag = the event's
   commit time to the receiver reading the request (one clock, one machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = "imagegen_bench_webhooks"
PG = "postgres://postgres@127.0.0.1:5432"


def setup_django() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    os.environ.update(
        DATABASE_URL=f"{PG}/{BENCH_DB}", DJANGO_SETTINGS_MODULE="imagegen_site.settings", LOG_LEVEL="WARNING",
        IMAGEGEN_EMBEDDED_WORKER="0", DEBUG="0", SECRET_KEY="bench-webhooks-" + os.urandom(16).hex(), REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/4"),
        # the receiver is on loopback, over plain HTTP: the guard's test switches, nothing else changed
        IMAGEGEN_FETCH_ALLOW_HTTP="1", IMAGEGEN_FETCH_ALLOW_PRIVATE="1",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50) * 1000, "p99": percentile(values, 99) * 1000,
            "mean": sum(values) / len(values) * 1000}


# --- 1. hot path -------------------------------------------------------------------------------
def append_cost(user_id: int, n: int, with_row: bool) -> list[float]:
    from django.db import transaction
    from django.utils import timezone as dj_tz

    from notifications.models import Event
    from webhooks.models import WebhookDelivery, WebhookEndpoint

    times = []
    for _ in range(n):
        started = time.perf_counter()
        with transaction.atomic():
            event = Event.append(user_id=user_id, task_id=None, type="task_update", data={"progress": 50},
                                 created_at=dj_tz.now())
            if with_row:
                endpoints = [e for e in WebhookEndpoint.objects.filter(user_id=user_id, enabled=True)
                             if e.wants(event.type)]
                if endpoints:
                    WebhookDelivery.objects.bulk_create([
                        WebhookDelivery(endpoint=e, event_id=event.pk, seq=event.seq, event_type=event.type,
                                        event_created_at=event.created_at, status="delivered") for e in endpoints])
        times.append(time.perf_counter() - started)
    return times


def hot_path(n: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from webhooks.models import WebhookEndpoint

    users = get_user_model().objects
    plain, hooked = users.create(username="hot-plain"), users.create(username="hot-hooked")
    # far-future cursor: the worker (not running here) would never pick these rows up anyway
    WebhookEndpoint.create_for(hooked, url="http://127.0.0.1:9/", events=["*"])
    append_cost(plain.pk, 200, False)  # warm up connection and plans
    result = {}
    for label, user, row in (("cursor, no endpoint", plain, False), ("cursor, one endpoint", hooked, False),
                             ("row in txn, no endpoint", plain, True), ("row in txn, one endpoint", hooked, True)):
        result[label] = summary_ms(append_cost(user.pk, n, row))
    # Its cursor is behind thousands of events to a closed port: gone before the lag runs start.
    WebhookEndpoint.objects.filter(user=hooked).delete()
    return result


# --- 2. lag ------------------------------------------------------------------------------------
class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float]] = []  # (webhook-id, time.time())
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver behind a proxy would

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                receiver.arrivals.append((self.headers["webhook-id"], time.time()))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce(index: int, producers: int, targets: list[tuple[int, int]], rate: float, total: int,
            ready: Any, go: Any, results: Any) -> None:
    """One producer process: event i of the global schedule (due at ``start_at + i / rate``) is
    this process's when ``i % producers == index``; it goes to ``targets[i % len(targets)]``
    (user id, endpoint id) as one committed ``Event.append`` transaction, the model path a
    task change takes. With 100 endpoints each producer owns its users; with one, they all
    append to the one user's log (and meet at its seq lock, as that user's own workers would)."""
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone as dj_tz

    from notifications.models import Event

    Event.objects.exists()  # connected before the clock starts
    ready.put(index)
    start_at = go.get()
    committed: dict[str, float] = {}
    for i in range(index, total, producers):
        pause = start_at + i / rate - time.time()
        if pause > 0:
            time.sleep(pause)  # pacing the producer, not synchronising a test
        user_id, endpoint_id = targets[i % len(targets)]
        with transaction.atomic():
            event = Event.append(user_id=user_id, task_id=None, type="task_update", data={"i": i},
                                 created_at=dj_tz.now())
        committed[f"msg_{endpoint_id}_{event.seq}"] = time.time()
    connection.close()
    results.put(committed)


def lag(endpoints: int, rate: float, seconds: float, receiver: Receiver, worker_pids: list[int],
        producers: int) -> dict[str, Any]:
    import multiprocessing

    from django.contrib.auth import get_user_model
    from django.db import connection

    from webhooks.models import WebhookEndpoint

    users = [get_user_model().objects.create(username=f"lag{endpoints}-{i}") for i in range(endpoints)]
    targets = [(u.pk, WebhookEndpoint.create_for(u, url=receiver.url, events=["*"]).pk) for u in users]
    connection.close()  # not inherited by anything, but the producers each open their own
    receiver.arrivals.clear()
    total = int(rate * seconds)
    load_before = os.getloadavg()
    cpu_before = sum(cpu_seconds(pid) for pid in worker_pids)
    spawn = multiprocessing.get_context("spawn")
    ready, go, results = spawn.Queue(), spawn.Queue(), spawn.Queue()
    procs = [spawn.Process(target=produce, args=(k, producers, targets, rate, total, ready, go, results))
             for k in range(producers)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)  # each has Django set up and a connection open
    start_at = time.time() + 0.2
    for _ in procs:
        go.put(start_at)
    committed: dict[str, float] = {}
    for _ in procs:
        committed.update(results.get(timeout=seconds + 120))
    for proc in procs:
        proc.join(30)
    produced_in = max(committed.values()) - start_at
    deadline = time.monotonic() + 120
    while len({a[0] for a in receiver.arrivals}) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    worker_cpu = sum(cpu_seconds(pid) for pid in worker_pids) - cpu_before
    first: dict[str, float] = {}
    for msg_id, at in list(receiver.arrivals):
        first.setdefault(msg_id, at)
    lags = [first[m] - committed[m] for m in committed if m in first]
    load_after = os.getloadavg()
    return {"endpoints": endpoints, "events": total, "delivered": len(lags), "rate": total / produced_in,
            "duplicates": len(receiver.arrivals) - len(first), **summary_ms(lags), "max": max(lags) * 1000,
            "cpu_ms_per_delivery": worker_cpu / max(len(lags), 1) * 1000,
            "load": f"{load_before[0]:.1f} -> {load_after[0]:.1f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--producers", type=int, default=4, help="producer processes sharing the rate")
    parser.add_argument("--workers", type=int, default=1, help="runworker processes delivering")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "webhooks.md"))
    args = parser.parse_args()
    setup_django()
    hot = hot_path(args.appends)
    print(json.dumps(hot, indent=1))
    receiver = Receiver()
    workers = [subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runworker", "--worker-id", f"bench-{n}"],
                                env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for n in range(args.workers)]
    try:
        time.sleep(3)  # the workers start their delivery loops; the first rows would otherwise include start-up
        pids = [w.pid for w in workers]
        lags = [lag(1, args.rate, args.seconds, receiver, pids, args.producers),
                lag(100, args.rate, args.seconds, receiver, pids, args.producers)]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    print(json.dumps(lags, indent=1))
    write_report(args, hot, lags)


def write_report(args: argparse.Namespace, hot: dict[str, Any], lags: list[dict[str, Any]]) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    lines = [
        "# Webhook delivery benchmark",
        "",
        f"`bench/bench_webhooks.py --rate {args.rate:g} --seconds {args.seconds:g} --appends {args.appends} "
        f"--producers {args.producers} --workers {args.workers}` at "
        f"{commit}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} with {os.cpu_count()} cores "
        f"(load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; other jobs share this machine), PostgreSQL on loopback.",
        "",
        "## Hot path: what one event adds to its own transaction",
        "",
        f"A committed transaction appending one event, {args.appends} times each, milliseconds:",
        "",
        "| design, user | p50 | p99 | mean |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {label} | {r['p50']:.3f} | {r['p99']:.3f} | {r['mean']:.3f} |" for label, r in hot.items()]
    lines += [
        "",
        "## Delivery lag: event commit to the receiver reading the request",
        "",
        f"{args.workers} `runworker` process(es) with the default settings (`DEBUG=0`); events appended at "
        f"{args.rate:g}/s for {args.seconds:g} s by {args.producers} producer processes (one committed "
        "`Event.append` transaction per event); receiver on loopback answering 204 at once. Milliseconds; "
        "\"load\" is the 1-minute load average before and after the run:",
        "",
        "| endpoints | events | delivered | producer rate/s | duplicates | p50 | p99 | max | worker CPU ms per delivery | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['endpoints']} | {r['events']} | {r['delivered']} | {r['rate']:.0f} | {r['duplicates']} | "
              f"{r['p50']:.0f} | {r['p99']:.0f} | {r['max']:.0f} | {r['cpu_ms_per_delivery']:.1f} | {r['load']} |"
              for r in lags]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
