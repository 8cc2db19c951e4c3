"""Webhook benchmark: the hot-path cost of the two designs, and delivery lag through a real worker.

Run on demand (not part of the test suite):

    .venv/bin/python bench/bench_webhooks.py [--rate 100] [--seconds 20] [--appends 2000]

It creates a scratch database ``imagegen_bench_webhooks`` on the local PostgreSQL and writes
``docs/benchmarks/webhooks.md``.

1. Hot path: the cost one event adds to the transaction that writes it. "cursor" is what ships
   (the event transaction is unchanged: ``Event.append`` alone); "row in the event's transaction"
   is the alternative, emulated with the same tables: the append, then a read of the owner's enabled
   endpoints and one delivery row per matching endpoint. Measured for a user without endpoints and
   one with one endpoint, each as a committed transaction (as a task change is).
2. Lag: one ``manage.py runworker`` with production settings (poll 0.2 s, 8 delivery threads, 2 per
   endpoint, no retries needed) delivers to a receiver on loopback while this process appends
   events at ``--rate`` per second, to one endpoint, then spread over 100 endpoints (100 users).
   Lag = the event's commit time to the receiver reading the request (one clock, one machine).
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
        IMAGEGEN_EMBEDDED_WORKER="0", REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/4"),
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


def lag(endpoints: int, rate: float, seconds: float, receiver: Receiver, worker_pid: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone as dj_tz

    from notifications.models import Event
    from webhooks.models import WebhookEndpoint

    users = [get_user_model().objects.create(username=f"lag{endpoints}-{i}") for i in range(endpoints)]
    hooks = {WebhookEndpoint.create_for(u, url=receiver.url, events=["*"]).pk: u for u in users}
    by_user = {u.pk: pk for pk, u in hooks.items()}
    receiver.arrivals.clear()
    committed: dict[str, float] = {}
    total = int(rate * seconds)
    cpu_before = cpu_seconds(worker_pid)
    started = time.monotonic()
    for i in range(total):
        due = started + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the producer, not synchronising a test
        user = users[i % endpoints]
        with transaction.atomic():
            event = Event.append(user_id=user.pk, task_id=None, type="task_update", data={"i": i},
                                 created_at=dj_tz.now())
        committed[f"msg_{by_user[user.pk]}_{event.seq}"] = time.time()
    produced_in = time.monotonic() - started
    deadline = time.monotonic() + 60
    while len({a[0] for a in receiver.arrivals}) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    worker_cpu = cpu_seconds(worker_pid) - cpu_before
    first: dict[str, float] = {}
    for msg_id, at in receiver.arrivals:
        first.setdefault(msg_id, at)
    lags = [first[m] - committed[m] for m in committed if m in first]
    return {"endpoints": endpoints, "events": total, "delivered": len(lags), "rate": total / produced_in,
            "duplicates": len(receiver.arrivals) - len(first), **summary_ms(lags), "max": max(lags) * 1000,
            "cpu_ms_per_delivery": worker_cpu / max(len(lags), 1) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "webhooks.md"))
    args = parser.parse_args()
    setup_django()
    hot = hot_path(args.appends)
    print(json.dumps(hot, indent=1))
    receiver = Receiver()
    worker = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runworker", "--worker-id", "bench"],
                              env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # the worker starts its delivery loop; the first rows would otherwise include start-up
        lags = [lag(1, args.rate, args.seconds, receiver, worker.pid),
                lag(100, args.rate, args.seconds, receiver, worker.pid)]
    finally:
        worker.terminate()
        worker.wait(30)
    print(json.dumps(lags, indent=1))
    write_report(args, hot, lags)


def write_report(args: argparse.Namespace, hot: dict[str, Any], lags: list[dict[str, Any]]) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    lines = [
        "# Webhook delivery benchmark",
        "",
        f"`bench/bench_webhooks.py --rate {args.rate:g} --seconds {args.seconds:g} --appends {args.appends}` at "
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
        f"One `runworker` with the default settings; events appended at {args.rate:g}/s for {args.seconds:g} s; "
        "receiver on loopback answering 204 at once. Milliseconds:",
        "",
        "| endpoints | events | delivered | producer rate/s | duplicates | p50 | p99 | max | worker CPU ms per delivery |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['endpoints']} | {r['events']} | {r['delivered']} | {r['rate']:.0f} | {r['duplicates']} | "
              f"{r['p50']:.0f} | {r['p99']:.0f} | {r['max']:.0f} | {r['cpu_ms_per_delivery']:.1f} |" for r in lags]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
