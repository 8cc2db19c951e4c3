"""Realtime benchmark: event committed by a worker -> frame received by a WebSocket client.

Run on demand (not part of the test suite):

    .venv/bin/python bench/bench_realtime.py [--clients 1000] [--rate 2000] [--seconds 10]

It creates a scratch database ``imagegen_bench_realtime`` on the local PostgreSQL,
starts one real ``daphne`` (Redis pub/sub channel layer) and producer processes
that change task progress through the model's own transition
(``GenerationTask.set_progress``, as a worker's progress reporter does): each
change commits its event in the same transaction and publishes it after commit.
A producer stamps the wall clock in that after-commit hook; clients (the
``websockets`` library, all in this process) stamp each frame as it arrives.
Results go to ``docs/benchmarks/realtime.md``.

Scenarios: (1) latency, one client at 100 events/s, over WebSocket and over Server-Sent Events
side by side (the same user, the same events); (2) memory per idle socket
(daphne RSS delta over N sockets); (3) fan-out, N clients of N users with events
spread over them, counting every seq per client (lost or duplicated) and every
HTTP request the server saw (there should be no polling at all).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = os.environ.get("BENCH_DB", "imagegen_bench_realtime")
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
STEPS = 99  # set_progress only moves forward: 1..99 per task
# A channel prefix of this run (inherited by the producer processes): pub/sub channels are global
# across Redis databases, and other runs on this Redis must not see our groups.
PREFIX = os.environ.get("BENCH_PREFIX") or f"bench{os.getpid()}"


def bench_env(media: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"{PG}/{BENCH_DB}", "REDIS_URL": REDIS, "MEDIA_ROOT": str(media),
        "DJANGO_SETTINGS_MODULE": "imagegen_site.settings", "LOG_LEVEL": "WARNING",
        "CHANNEL_LAYER_PREFIX": PREFIX, "BENCH_PREFIX": PREFIX, "IMAGEGEN_EMBEDDED_WORKER": "0",
        "IMAGEGEN_WS_CONNECTS_PER_MINUTE_USER": "1000000", "IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP": "1000000",
        "PYTHONPATH": str(ROOT),
    }


def setup_django(env: dict[str, str], fresh: bool) -> None:
    import psycopg

    if fresh:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {BENCH_DB}")
    os.environ.update(env)
    import django

    django.setup()
    if fresh:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


# --- fixture ----------------------------------------------------------------------------
def make_fixture(users: int, tasks_per_user: int) -> list[dict[str, Any]]:
    """Users, each with processing tasks claimed by a bench worker row (setup, not measured)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone as tz
    from rest_framework_simplejwt.tokens import AccessToken

    from generation.models import GenerationTask
    from generation.models import WorkerProcess

    User = get_user_model()
    created = User.objects.bulk_create(User(username=f"rt{uuid.uuid4().hex[:12]}", password="!") for _ in range(users))
    row = WorkerProcess.objects.create(name="bench-realtime")
    now = tz.now()
    tasks = GenerationTask.objects.bulk_create(
        GenerationTask(user=u, status="processing", claim_token=uuid.uuid4(), worker=row, attempts=1, started_at=now,
                       options={}, input_image="inputs/bench.jpg", input_content_type="image/jpeg")
        for u in created for _ in range(tasks_per_user)
    )
    by_user: dict[int, list[tuple[int, str]]] = {}
    for task in tasks:
        by_user.setdefault(task.user_id, []).append((task.pk, str(task.claim_token)))
    return [{"user": u.pk, "token": str(AccessToken.for_user(u)), "tasks": by_user[u.pk]} for u in created]


# --- producer (a subprocess) ----------------------------------------------------------------
def produce(spec_path: str, out_path: str) -> None:
    """Emit the spec's events at the spec's rate and stamp each one as it is handed to publish().

    ``transition``: round-robin ``set_progress`` over claimed tasks; the stamp is taken in the
    on_commit hook, i.e. just after the event committed. ``publish``: the events are already in
    the log; only ``events.publish`` is called (the same call on_commit makes), which isolates
    the delivery path from the cost of committing.
    """
    spec = json.loads(Path(spec_path).read_text())
    setup_django(bench_env(Path(spec["media"])), fresh=False)
    from generation.models import GenerationTask
    from notifications import events
    from notifications.models import Event

    stamps: list[tuple[int, int, float]] = []
    original = events.publish

    def stamped(user_id: int, message: dict) -> None:
        stamps.append((user_id, message["seq"], time.time()))
        original(user_id, message)

    events.publish = stamped  # the signal looks it up at each commit
    # Start the publisher's loop and Redis connection now, not on the first measured event.
    events.publisher.submit("bench.warmup", {"type": "bench.warmup"})
    events.publisher.flush_sync(10)
    threads, rate, seconds = spec["threads"], spec["rate"], spec["seconds"]
    if spec["mode"] == "transition":
        tasks = [(GenerationTask.objects.get(pk=pk), uuid.UUID(token)) for pk, token in spec["tasks"]]
        jobs = [(lambda t=task, k=token, s=step: t.set_progress(k, s))
                for step in range(1, STEPS + 1) for task, token in tasks]
    else:
        after = spec["after"]
        logged = Event.objects.filter(user_id__in=spec["users"], seq__gt=min(after.values())).order_by("seq", "user_id")
        jobs = [(lambda e=e: stamped(e.user_id, e.as_message())) for e in logged if e.seq > after[str(e.user_id)]]
    cpu = time.process_time()
    start = time.monotonic() + 0.2
    deadline = start + seconds

    def run(offset: int) -> None:
        for n, job in enumerate(jobs[offset::threads]):
            due = start + (n * threads + offset) / rate
            if due > deadline:
                return
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            job()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - start
    events.publisher.flush_sync(60)
    Path(out_path).write_text(json.dumps({"stamps": stamps, "elapsed": elapsed, "cpu": time.process_time() - cpu}))


def run_producers(spec: dict[str, Any], items: list[Any], key: str, processes: int, media: Path,
                  tmp: Path) -> tuple[list[tuple[int, int, float]], float, float]:
    """Split ``items`` over producer processes; returns stamps, events/s produced, producer CPU s/event."""
    procs = []
    for p in range(processes):
        path = tmp / f"spec{p}.json"
        path.write_text(json.dumps({**spec, key: items[p::processes], "rate": spec["rate"] / processes,
                                    "media": str(media)}))
        out = tmp / f"out{p}.json"
        procs.append((subprocess.Popen([sys.executable, __file__, "--produce", str(path), str(out)],
                                       env=bench_env(media)), out))
    stamps: list[tuple[int, int, float]] = []
    elapsed, cpu = 0.0, 0.0
    for proc, out in procs:
        if proc.wait() != 0:
            raise SystemExit("producer failed")
        result = json.loads(out.read_text())
        stamps += [tuple(s) for s in result["stamps"]]  # type: ignore[misc]
        elapsed, cpu = max(elapsed, result["elapsed"]), cpu + result["cpu"]
    return stamps, len(stamps) / elapsed, cpu / max(len(stamps), 1)


def log_events(users: list[int], count: int) -> dict[str, int]:
    """Append ``count`` events per user straight to the log (for the delivery-only run); returns
    each user's seq the new ones start after."""
    from django.db import transaction
    from django.utils import timezone as tz

    from notifications.models import Event, EventCounter

    counters = dict(EventCounter.objects.filter(user_id__in=users).values_list("user_id", "last_seq"))
    now = tz.now()
    data = {"status": "processing", "progress": 50, "result_image_url": None, "elapsed_time": 1.0,
            "estimated_remaining_seconds": None, "error_code": None, "error_message": None,
            "updated_at": now.isoformat()}
    with transaction.atomic():
        Event.objects.bulk_create(
            Event(user_id=u, seq=seq, task_id=0, type="task_update", data=data, created_at=now)
            for u in users for seq in range(counters.get(u, 0) + 1, counters.get(u, 0) + count + 1)
        )
        for u in users:
            EventCounter.objects.update_or_create(user_id=u, defaults={"last_seq": counters.get(u, 0) + count})
    return {str(u): counters.get(u, 0) for u in users}


# --- server and clients -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, server: subprocess.Popen | None = None, what: str = "server") -> None:
    """Until something accepts on ``port`` (loopback); fails if ``server`` exits first."""
    while True:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"{what} exited before listening on port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settled_rss(pid: int) -> int:
    """RSS once it stops moving (connections finish setting up asynchronously)."""
    previous, deadline = rss_kib(pid), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = rss_kib(pid)
        if abs(current - previous) < 64:
            return current
        previous = current
    return previous


class Clients:
    """One socket per user; records (seq, arrival wall clock) per user."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: dict[int, list[tuple[int, float]]] = {}
        self.sockets: list[Any] = []
        self.readers: list[asyncio.Task] = []

    path = "/ws/notifications?token={token}"
    synced = True  # the server sends sync_complete first (the raw peer sends nothing)

    async def open(self, entries: list[dict], batch: int = 100) -> None:
        from websockets.asyncio.client import connect

        async def one(entry: dict) -> None:
            ws = await connect(f"ws://127.0.0.1:{self.port}" + self.path.format(**entry),
                               open_timeout=60, max_queue=None)
            if self.synced:
                sync = json.loads(await ws.recv())
                assert sync["type"] == "sync_complete", sync
            self.sockets.append(ws)
            self.received[entry["user"]] = []
            self.readers.append(asyncio.ensure_future(self.read(entry["user"], ws)))

        for i in range(0, len(entries), batch):  # the listen backlog is finite: connect in waves
            await asyncio.gather(*(one(e) for e in entries[i:i + batch]))

    async def read(self, user: int, ws: Any) -> None:
        sink = self.received[user]
        async for raw in ws:
            now = time.time()
            sink.append((json.loads(raw)["seq"], now))

    async def wait_for(self, last_seq: dict[int, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.received[u] and self.received[u][-1][0] >= s for u, s in last_seq.items()):
                return
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)


class RawClients(Clients):
    """The same, against the raw-Channels peer (``bench/peers/raw_channels.py``): no token, no sync."""

    path = "/ws/raw?user={user}"
    synced = False


class SSEClients(Clients):
    """The same, over Server-Sent Events (``/api/events/stream/``, httpx streaming)."""

    async def open(self, entries: list[dict], batch: int = 100) -> None:
        import httpx

        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}",
                                      timeout=httpx.Timeout(60, read=None))
        for entry in entries:
            opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.received[entry["user"]] = []
            self.readers.append(asyncio.ensure_future(self.read_stream(entry, opened)))
            await opened

    async def read_stream(self, entry: dict, opened: asyncio.Future[None]) -> None:
        sink = self.received[entry["user"]]
        headers = {"Authorization": f"Bearer {entry['token']}"}
        async with self.http.stream("GET", "/api/events/stream/", headers=headers) as response:
            assert response.status_code == 200, response.status_code
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                now = time.time()
                message = json.loads(line[6:])
                if message["type"] == "sync_complete":
                    if not opened.done():
                        opened.set_result(None)
                elif "seq" in message:
                    sink.append((message["seq"], now))

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await self.http.aclose()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def judge(stamps: list[tuple[int, int, float]], clients: Clients) -> dict[str, Any]:
    committed = {(u, s): t for u, s, t in stamps}
    users = {u for u, _ in committed}
    latencies, lost, duplicated = [], 0, 0
    first_commit = min(t for *_, t in stamps)
    last_arrival = first_commit
    for user in users:
        frames = [(s, t) for s, t in clients.received[user] if (user, s) in committed]
        seqs = [s for s, _ in frames]
        duplicated += len(seqs) - len(set(seqs))
        lost += len({s for (u, s) in committed if u == user} - set(seqs))
        for seq, arrived in frames:
            latencies.append(arrived - committed[(user, seq)])
            last_arrival = max(last_arrival, arrived)
    return {
        "events": len(stamps), "delivered": len(latencies), "lost": lost, "duplicated": duplicated,
        "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000, "per_second": len(latencies) / max(last_arrival - first_commit, 1e-9),
    }


async def scenario(daphne: int, clients: Clients, spec: dict[str, Any], items: list[Any], key: str,
                   processes: int, media: Path, tmp: Path, beside: Clients | None = None) -> dict[str, Any]:
    """``beside``: more clients of the same users receiving the same events (judged on their own)."""
    cpu, own_cpu = cpu_seconds(daphne), time.process_time()
    stamps, produced, producer_cpu = await asyncio.to_thread(run_producers, spec, items, key, processes, media, tmp)
    last: dict[int, int] = {}
    for user, seq, _ in stamps:
        last[user] = max(last.get(user, 0), seq)
    await clients.wait_for(last, timeout=60)
    if beside is not None:
        await beside.wait_for(last, timeout=60)
    result = judge(stamps, clients)
    delivered = max(result["delivered"], 1) * (2 if beside is not None else 1)
    result.update(produced=produced, producer_cpu_ms=producer_cpu * 1000,
                  server_cpu_ms=(cpu_seconds(daphne) - cpu) * 1000 / delivered,
                  client_cpu_ms=(time.process_time() - own_cpu) * 1000 / delivered)
    if beside is not None:
        result["beside"] = {**result, **judge(stamps, beside)}
    return result


def count_http_requests(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if re.search(r'"(GET|POST|PUT|PATCH|DELETE|HEAD) ', line))


def prepare(args: argparse.Namespace) -> tuple[Path, list[dict], list[dict]]:
    """Scratch database and fixtures (synchronous Django, before the event loop starts)."""
    tmp = Path(f"/tmp/bench_realtime_{os.getpid()}")
    media = tmp / "media"
    media.mkdir(parents=True)
    setup_django(bench_env(media), fresh=True)
    single = make_fixture(1, -(-int(100 * args.seconds * 1.2) // STEPS))
    # Two halves of the tasks, one per full-path run, each with room for the faster run's events.
    per_half = -(-int(args.rate * args.seconds * 1.2) // (args.clients * STEPS))
    many = [] if args.latency_only else make_fixture(args.clients, 2 * max(1, per_half))
    return tmp, single, many


async def main_async(args: argparse.Namespace, tmp: Path, single: list[dict], many: list[dict]) -> None:
    media = tmp / "media"
    env = bench_env(media)
    port = free_port()
    log = tmp / "daphne.log"
    load = os.getloadavg()
    with open(log, "wb") as out:
        daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                   "imagegen_site.asgi:application"], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    results: dict[str, Any] = {"load": load}
    try:
        wait_for_port(port, daphne, "daphne")
        # Warm up code paths (imports, pools) so they do not count as per-socket memory.
        warm = Clients(port)
        await warm.open(single)
        await warm.close()

        one, one_sse = Clients(port), SSEClients(port)
        await one.open(single)
        await one_sse.open(single)  # the same user: the same events reach both, in the same run
        tasks = [t for entry in single for t in entry["tasks"]]
        results["latency"] = await scenario(daphne.pid, one, {"mode": "transition", "rate": 100,
                                            "seconds": args.seconds, "threads": 1}, tasks, "tasks", 1, media, tmp,
                                            beside=one_sse)
        results["latency_sse"] = results["latency"].pop("beside")
        await one.close()
        await one_sse.close()
        print("latency", results["latency"], "\nlatency over SSE", results["latency_sse"], flush=True)
        if args.latency_only:
            results["load_end"] = os.getloadavg()
            write_latency_section(args, results)
            return

        before = settled_rss(daphne.pid)
        clients = Clients(port)
        t0 = time.monotonic()
        await clients.open(many)
        results["connect_seconds"] = time.monotonic() - t0
        gc.freeze()  # the clients' sockets live for the whole run: out of the instrument's collector
        after = settled_rss(daphne.pid)
        results["memory"] = {"before": before, "after": after, "per_socket": (after - before) * 1024 / len(many)}
        print("memory", results["memory"], flush=True)

        depth = max(len(e["tasks"]) for e in many)  # interleave users: consecutive events go to different sockets
        tasks = [e["tasks"][i] for i in range(depth) for e in many if i < len(e["tasks"])]
        half = len(tasks) // 2  # each run gets tasks of its own: progress only moves forward
        results["full"] = await scenario(daphne.pid, clients, {"mode": "transition", "rate": args.rate,
                                         "seconds": args.seconds, "threads": args.threads}, tasks[:half], "tasks",
                                         args.processes, media, tmp)
        print("full path", results["full"], flush=True)
        results["sustained"] = await scenario(daphne.pid, clients, {"mode": "transition", "rate": args.sustained_rate,
                                              "seconds": args.seconds, "threads": args.threads}, tasks[half:],
                                              "tasks", args.processes, media, tmp)
        print("full path, sustained rate", results["sustained"], flush=True)

        users = [e["user"] for e in many]
        per_user = max(1, int(args.rate * args.seconds / len(users)) + 1)
        afters = await asyncio.to_thread(log_events, users, per_user)
        results["delivery"] = await scenario(daphne.pid, clients, {"mode": "publish", "rate": args.rate,
                                             "seconds": args.seconds, "threads": 1, "after": afters}, users,
                                             "users", 1, media, tmp)
        print("delivery path", results["delivery"], flush=True)
        await clients.close()
        results["polls"] = count_http_requests(log)
    finally:
        daphne.terminate()
        daphne.wait(20)
    results["load_end"] = os.getloadavg()
    write_report(args, results)


def write_report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    row = ("| {events} | {produced:.0f} | {delivered} | {per_second:.0f} | {lost} | {duplicated} | {p50_ms:.1f} ms "
           "| {p99_ms:.1f} ms | {max_ms:.1f} ms | {producer_cpu_ms:.2f} ms | {server_cpu_ms:.2f} ms "
           "| {client_cpu_ms:.2f} ms |")
    memory = r["memory"]
    text = REPORT.format(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d"), cpus=os.cpu_count(), cpu=cpu,
        python=platform.python_version(), load="/".join(f"{x:.1f}" for x in r["load"]),
        load_end="/".join(f"{x:.1f}" for x in r["load_end"]), clients=args.clients,
        rate=args.rate, seconds=args.seconds, processes=args.processes, threads=args.threads,
        latency=row.format(**r["latency"]), latency_sse=row.format(**r["latency_sse"]), full=row.format(**r["full"]), delivery=row.format(**r["delivery"]),
        sustained=row.format(**r["sustained"]), sustained_rate=args.sustained_rate,
        before=memory["before"] / 1024, after=memory["after"] / 1024, per_socket=memory["per_socket"] / 1024,
        connect=r["connect_seconds"], polls=r["polls"], notes=args.notes or "",
        analysis=analysis(r),
    )
    out = ROOT / "docs" / "benchmarks" / "realtime.md"
    out.write_text(text)
    print(f"wrote {out}")


SSE_BEGIN, SSE_END = "<!-- sse-beside-websocket -->", "<!-- /sse-beside-websocket -->"


def write_latency_section(args: argparse.Namespace, r: dict[str, Any]) -> None:
    """``--latency-only``: (re)write only the section comparing the two transports, keeping the rest
    of the report (a full run on a busy machine cannot open its 1,000 sockets)."""
    row = ("| {transport} | {events} | {delivered} | {lost} | {duplicated} | {p50_ms:.1f} ms | {p99_ms:.1f} ms "
           "| {max_ms:.1f} ms |")
    section = SSE_SECTION.format(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), seconds=args.seconds,
        load="/".join(f"{x:.1f}" for x in r["load"]), load_end="/".join(f"{x:.1f}" for x in r["load_end"]),
        ws=row.format(transport="WebSocket", **r["latency"]), sse=row.format(transport="SSE", **r["latency_sse"]),
        produced=r["latency"]["produced"], p50_gap=r["latency_sse"]["p50_ms"] - r["latency"]["p50_ms"],
        p99_gap=r["latency_sse"]["p99_ms"] - r["latency"]["p99_ms"],
    )
    replace_section(SSE_BEGIN, SSE_END, section, "SSE")


def replace_section(begin: str, end: str, section: str, what: str) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) into the realtime page in
    place of its last version, or at the end the first time; the rest of the page stays."""
    out = ROOT / "docs" / "benchmarks" / "realtime.md"
    text = out.read_text() if out.exists() else ""
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    out.write_text(text)
    print(f"wrote the {what} section of {out}")


SSE_SECTION = SSE_BEGIN + """
## Server-Sent Events beside the WebSocket

`bench/bench_realtime.py --latency-only`, {date}: the latency run of section 1 (one user, 100 events/s
for {seconds:.0f} s through `set_progress`, one daphne) with two clients of that user open at once, a
WebSocket and an `httpx` stream of `/api/events/stream/`, so both measure the same events under the
same load. The producer was asked for 100/s and committed {produced:.0f}/s. Load average {load} at the
start, {load_end} at the end (other jobs shared the machine: compare the two rows with each other, not
with section 1's figures).

| transport | events | delivered | lost | duplicated | p50 | p99 | max |
|---|---|---|---|---|---|---|---|
{ws}
{sse}

SSE minus WebSocket: {p50_gap:+.1f} ms at p50, {p99_gap:+.1f} ms at p99. Both read the same pub/sub
message on the same daphne; the stream's frame goes through Django's streaming response (one
`http.response.body` per event) where the socket's goes through Channels' consumer.
""" + SSE_END


def analysis(r: dict[str, Any]) -> str:
    """Where the time goes, from this run's CPU figures."""
    full, delivery = r["full"], r["delivery"]
    total = delivery["producer_cpu_ms"] + delivery["server_cpu_ms"] + delivery["client_cpu_ms"]
    return WHERE.format(
        full=full, delivery=delivery, total=total, sustained=r["sustained"], latency=r["latency"], cores_needed=total * 2000 / 1000,
        producer_ceiling=1000 / full["producer_cpu_ms"], server_ceiling=1000 / delivery["server_cpu_ms"],
        full_needed=(full["producer_cpu_ms"] + full["server_cpu_ms"] + full["client_cpu_ms"]) * 2,
    )


WHERE = """## Where the time goes

CPU per event, from `/proc` (daphne) and `time.process_time()` (producers, and the clients'
process), so these figures do not depend on how busy the machine was:

* **Committing is the expensive part.** A producer spends {full[producer_cpu_ms]:.2f} ms of CPU per
  `set_progress`: it locks and re-reads the task, updates it, allocates the seq, inserts the event,
  commits, and runs the Django ORM around all of that. That is about {producer_ceiling:.0f}
  transitions/s per core. 2,000 transitions/s would need about {full_needed:.1f} cores for
  producers, daphne and clients together, and this machine has 2 (PostgreSQL and Redis also run on
  them). The full path therefore runs at whatever rate the producers can commit, well under the
  2,000/s asked for. In that run eight producer threads keep both cores busy, so daphne and the
  clients wait for CPU, and that is the p99. At a rate the producers keep up with (second row), the
  same path has a tail of {sustained[p99_ms]:.0f} ms at p99. The queue's own benchmark measures how
  fast real workers commit.
* **Delivering is cheap.** daphne spends {delivery[server_cpu_ms]:.2f} ms of CPU per frame: parsing
  the Redis pub/sub message (redis-py's pure-Python parser; `hiredis` measured 27 µs instead of 56 µs
  per message), Channels' dispatch, autobahn framing, and one `send()` per frame. One core therefore
  serves about {server_ceiling:.0f} frames/s. The clients' process spends
  {delivery[client_cpu_ms]:.2f} ms per frame and `publish()` {delivery[producer_cpu_ms]:.2f} ms. At
  2,000/s the whole pipeline needs about {cores_needed:.1f} of the 2 cores. The delivery run is
  therefore close to saturating the machine, and queueing, not any single step, sets its p50/p99.
* **Tail latency.** Before `asgi.py` froze the import-time heap (`gc.freeze()`), full collections
  paused daphne's loop for 20-55 ms, and those pauses were the p99 of the one-client run (22-77 ms;
  now {latency[p99_ms]:.1f} ms). A producer (like a worker) still has such pauses: 61-79 ms gen2
  pauses were measured in producer processes. One that lands between a commit and its publish
  delays that one push, which shows in the max column of the runs it happens in. `gc.freeze()`
  after start-up in `runworker` would remove it. The clients' process freezes its own heap, since
  it is the measuring instrument.
"""


HEADER = ("| events | produced/s | delivered | delivered/s | lost | duplicated | p50 | p99 | max "
          "| CPU/event: producer | daphne | clients |\n|---|---|---|---|---|---|---|---|---|---|---|---|")

REPORT = """# Realtime delivery benchmark

`bench/bench_realtime.py`, run on demand. Latency is measured from the commit of an event to the
arrival of its frame at a WebSocket client: a producer process changes task progress through
`GenerationTask.set_progress` (what a worker's progress reporter calls), the event commits with
the change, the `on_commit` hook stamps the wall clock and publishes to Redis pub/sub, one `daphne`
process pushes the frame, and a client (`websockets`; all clients in one process) stamps its
arrival. Both stamps come from the same machine clock. Every client counts seqs per user, so the
lost and duplicated columns are exact.

Machine: {cpus} vCPU ({cpu}), Python {python}, PostgreSQL 15 and Redis 7 on the same host. daphne,
producers, clients, PostgreSQL and Redis all share these {cpus} cores, and other jobs may use them too:
the load average (1/5/15 min) was {load} at the start and {load_end} at the end (this run alone
brings it to about 4). {date}, one run; each figure is a percentile of that run.

## 1. Latency: one client, 100 events/s for {seconds:.0f} s

WebSocket (`/ws/notifications`):

""" + HEADER + """
{latency}

Server-Sent Events (`/api/events/stream/`, an `httpx` streaming client of the same user, open beside the
WebSocket in the same run, so both receive the same events under the same load; the CPU columns are
per frame of either transport):

""" + HEADER + """
{latency_sse}

Targets: p50 <= 5 ms, p99 <= 15 ms.

## 2. Memory per idle connection

{clients} sockets (one per user) opened in waves of 100 against one daphne process in {connect:.1f} s:
RSS {before:.1f} MiB -> {after:.1f} MiB, **{per_socket:.1f} KiB per socket** (target <= 40 KB).

## 3. Fan-out: {clients} clients of {clients} users, {rate:.0f} events/s asked for {seconds:.0f} s

Events go round-robin over the users, so consecutive events land on different sockets.

Full path (producers: {processes} processes x {threads} threads calling `set_progress`), asked for
{rate:.0f}/s, so they run as fast as they can, then asked for {sustained_rate:.0f}/s, a rate they keep up with:

""" + HEADER + """
{full}
{sustained}

Delivery path (the events are already in the log; one producer calls `notifications.events.publish`,
exactly what the `on_commit` hook calls, so this isolates Redis -> daphne -> client from the cost
of committing):

""" + HEADER + """
{delivery}

Target: >= 2,000 events/s delivered with p99 <= 100 ms. HTTP requests seen by the server during the
whole run (polling): **{polls}**.

{analysis}
{notes}
"""


# --- reconnect storm and mass gap fill (--storm) ------------------------------------------------------
def make_users(count: int) -> list[dict[str, Any]]:
    """Users with an access token each (setup, not measured)."""
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import AccessToken

    User = get_user_model()
    created = User.objects.bulk_create(User(username=f"st{uuid.uuid4().hex[:12]}", password="!") for _ in range(count))
    return [{"user": u.pk, "token": str(AccessToken.for_user(u))} for u in created]


async def storm(port: int, entries: list[dict], timeout: float) -> tuple[dict[str, Any], list[Any]]:
    """Every socket at once (no waves): how long until each one has its ``sync_complete``."""
    from websockets.asyncio.client import connect

    started = time.monotonic()
    times: list[float] = []
    failures: dict[str, int] = {}
    sockets: list[Any] = []

    async def one(entry: dict) -> None:
        try:
            ws = await connect(f"ws://127.0.0.1:{port}/ws/notifications?token={entry['token']}&after=0",
                               open_timeout=timeout, max_queue=None, ping_interval=None)
            while json.loads(await asyncio.wait_for(ws.recv(), timeout))["type"] != "sync_complete":
                pass
        except Exception as error:  # noqa: BLE001 - counted by kind: the figure is how many fail
            failures[type(error).__name__] = failures.get(type(error).__name__, 0) + 1
            return
        times.append(time.monotonic() - started)
        sockets.append((entry["user"], ws))

    await asyncio.gather(*(one(e) for e in entries))
    return {"sockets": len(entries), "synced": len(times), "failures": failures,
            "p50_s": percentile(times, 50) if times else float("nan"),
            "p99_s": percentile(times, 99) if times else float("nan"),
            "all_s": max(times) if times else float("nan")}, sockets


async def mass_gap_fill(sockets: list[Any], holes: int) -> dict[str, Any]:
    """Each socket's user gets ``holes + 1`` events in the log, and only the last one is pushed (as after a
    Redis blip lost the others): every socket finds a hole at the same moment and fills it from the log.
    The stall is the time from the pushes to the last socket holding all of its events. The same sockets
    first get the same number of events all pushed in order (no hole): the control, what the pushes and
    frames alone cost, so the difference is the fill's."""
    rounds: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(REPEATS):  # alternating, so a moment of load elsewhere hits both alike
        for push_all in (True, False):
            rounds[push_all].append(await _pushed_round(sockets, holes=holes, push_all=push_all))

    def median(key: str, push_all: bool) -> float:
        return statistics.median(r[key] for r in rounds[push_all])

    filled = rounds[False][-1]
    return {**filled, **{k: median(k, False) for k in ("p50_ms", "p99_ms", "all_ms")},
            "lost": sum(r["lost"] for r in rounds[False]), "duplicated": sum(r["duplicated"] for r in rounds[False]),
            "control_p50_ms": median("p50_ms", True), "control_all_ms": median("all_ms", True)}


REPEATS = 3


async def _pushed_round(sockets: list[Any], holes: int, push_all: bool = False) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from channels.layers import get_channel_layer

    from notifications.events import group_name
    from notifications.models import Event

    users = [u for u, _ in sockets]
    afters = await asyncio.to_thread(log_events, users, holes + 1)
    pushed = await asyncio.to_thread(lambda: [
        (e.user_id, e.as_message()) for e in Event.objects.filter(user_id__in=users).order_by("seq", "user_id")
        if e.seq > afters[str(e.user_id)] and (push_all or e.seq == afters[str(e.user_id)] + holes + 1)])
    layer = get_channel_layer()
    done: list[float] = []
    lost = duplicated = 0

    async def read(user: int, ws: Any) -> None:
        nonlocal lost, duplicated
        want = list(range(afters[str(user)] + 1, afters[str(user)] + holes + 2))
        got: list[int] = []
        while len(set(got)) < len(want):
            message = json.loads(await ws.recv())
            if "seq" in message:
                got.append(message["seq"])
        done.append(time.monotonic())
        duplicated += len(got) - len(set(got))
        lost += len(set(want) - set(got))

    # One pipelined PUBLISH per push, all at once: group_send would send them one round trip at a
    # time behind the layer's lock, and the sender, not the server, would set the pace.
    loop_layer = layer._get_layer()
    redis = aioredis.from_url(REDIS)
    frames = [(loop_layer._get_group_channel_name(group_name(u)), {"type": "task.event", "event": event})
              for u, event in pushed]
    readers = [asyncio.ensure_future(read(u, ws)) for u, ws in sockets]
    started = time.monotonic()
    pipe = redis.pipeline(transaction=False)
    for channel, message in frames:
        pipe.publish(channel, layer.serialize({**message, "committed_at": time.time()}))
    await pipe.execute()
    sent = time.monotonic() - started
    await redis.aclose()
    await asyncio.wait_for(asyncio.gather(*readers), 60)
    stalls = sorted(t - started for t in done)
    return {"sockets": len(sockets), "holes": holes, "send_s": sent, "lost": lost, "duplicated": duplicated,
            "p50_ms": percentile(stalls, 50) * 1000, "p99_ms": percentile(stalls, 99) * 1000,
            "all_ms": stalls[-1] * 1000}


async def storm_run(tree: Path, entries: list[dict], gap_sockets: int, timeout: float,
                    backlog: int = 0) -> dict[str, Any]:
    """One daphne started from ``tree`` (this checkout, or a baseline one): the storm, then the gap fill."""
    env = {**bench_env(Path(f"/tmp/bench_storm_{os.getpid()}/media")), "PYTHONPATH": str(tree)}
    port = free_port()
    log = Path(f"/tmp/bench_storm_{os.getpid()}_{tree.name}.log")
    with open(log, "wb") as out:
        # The listen backlog (Twisted's default is 50) decides whether a storm's SYNs wait in the kernel
        # or are dropped and retried by the client 1 s, 3 s, 7 s later: part of what is measured.
        listen = (["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={backlog}"] if backlog
                  else ["-b", "127.0.0.1", "-p", str(port)])
        daphne = subprocess.Popen([sys.executable, "-m", "daphne", *listen, "imagegen_site.asgi:application"],
                                  cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, daphne, "daphne")
        warm, warm_sockets = await storm(port, entries[:5], timeout)  # imports and pools, not measured
        await asyncio.gather(*(ws.close() for _, ws in warm_sockets))
        cpu = cpu_seconds(daphne.pid)
        result, sockets = await storm(port, entries, timeout)
        result["server_cpu_ms"] = (cpu_seconds(daphne.pid) - cpu) * 1000 / max(result["synced"], 1)
        print(tree.name, "storm", result, flush=True)
        result["gap_fill"] = await mass_gap_fill(sockets[:gap_sockets], holes=2)
        print(tree.name, "gap fill", result["gap_fill"], flush=True)
        await asyncio.gather(*(ws.close() for _, ws in sockets), return_exceptions=True)
    finally:
        daphne.terminate()
        daphne.wait(20)
    return result


STORM_BEGIN, STORM_END = "<!-- storm -->", "<!-- /storm -->"


def storm_main(args: argparse.Namespace) -> None:
    """``--storm N``: the reconnect storm and the mass gap fill, on this tree and (``--baseline``) another."""
    # Production settings (DEBUG on wraps every query in the debug cursor); the servers check the
    # tokens this process mints, so they share its key.
    os.environ.update({"DEBUG": "0", "SECRET_KEY": os.environ.get("SECRET_KEY") or f"bench-{uuid.uuid4().hex}"})
    setup_django(bench_env(Path(f"/tmp/bench_storm_{os.getpid()}/media")), fresh=True)
    trees = [Path(t).resolve() for t in ([args.baseline] if args.baseline else [])] + [ROOT]
    entries = make_users(args.storm * len(trees))  # fresh users per tree: no replay left from the other run
    load = os.getloadavg()
    runs = {}
    for i, tree in enumerate(trees):
        gc.collect()
        runs["baseline" if tree != ROOT else "this tree"] = asyncio.run(
            storm_run(tree, entries[i * args.storm:(i + 1) * args.storm], args.gap_sockets, args.storm_timeout,
                      args.backlog))
    write_storm_section(args, runs, load, os.getloadavg())


def write_storm_section(args: argparse.Namespace, runs: dict[str, dict[str, Any]], load: tuple, load_end: tuple) -> None:
    storm_rows = "\n".join(
        f"| {name} | {r['sockets']} | {r['synced']} | {sum(r['failures'].values())} {r['failures'] or ''} "
        f"| {r['p50_s']:.2f} s | {r['p99_s']:.2f} s | {r['all_s']:.2f} s | {r['server_cpu_ms']:.2f} ms |"
        for name, r in runs.items())
    gap_rows = "\n".join(
        f"| {name} | {g['sockets']} | {g['holes']} | {g['lost']} | {g['duplicated']} | {g['p50_ms']:.0f} ms "
        f"| {g['p99_ms']:.0f} ms | {g['all_ms']:.0f} ms | {g['control_all_ms']:.0f} ms "
        f"| {g['all_ms'] - g['control_all_ms']:+.0f} ms |"
        for name, r in runs.items() for g in [r["gap_fill"]])
    section = STORM_SECTION.format(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), n=args.storm, gap=args.gap_sockets,
        timeout=args.storm_timeout, load="/".join(f"{x:.1f}" for x in load),
        load_end="/".join(f"{x:.1f}" for x in load_end), storm_rows=storm_rows, gap_rows=gap_rows,
        baseline=f"`{args.baseline_label}`" if args.baseline else "none", repeats=REPEATS)
    replace_section(STORM_BEGIN, STORM_END, section, "storm")


STORM_SECTION = STORM_BEGIN + """
## Reconnect storm and mass gap fill

`bench/bench_realtime.py --storm {n} --gap-sockets {gap}`, {date}, one daphne per row (baseline: {baseline}).
Load average {load} at the start, {load_end} at the end (the machine is shared: compare the rows with each
other).

**Storm**: {n} sockets of {n} users open at the same instant (no waves, as after a proxy cut every client
at once), each with `after=0`; a socket counts once its `sync_complete` arrived, within {timeout:.0f} s.

| server | sockets | synced | failed | p50 | p99 | all synced | daphne CPU per connect |
|---|---|---|---|---|---|---|---|
{storm_rows}

**Mass gap fill**: {gap} of those sockets; each user gets 3 events in the log and only the last is
pushed (what a Redis blip leaves behind), so every socket finds a hole of 2 at the same moment and
fills it from the log. Time from the pushes to each socket holding all 3 events (the median of
{repeats} rounds; lost and duplicated summed over them); the control is the
same sockets each getting 3 events all pushed in order just before (no hole: what the pushes and
frames themselves cost, sent from one process), and the last column what the fill adds to it.

| server | sockets | hole | lost | duplicated | p50 | p99 | all filled | control: all delivered | the fill adds |
|---|---|---|---|---|---|---|---|---|---|
{gap_rows}
""" + STORM_END


# --- imagegen beside raw Channels (--compare) ----------------------------------------------------
RAW_APP = "bench.peers.raw_channels:application"
IMAGEGEN_APP = "imagegen_site.asgi:application"


def start_daphne(tree: Path, app: str, log: Path) -> tuple[subprocess.Popen, int]:
    env = {**bench_env(Path(f"/tmp/bench_compare_{os.getpid()}/media")), "PYTHONPATH": str(tree)}
    port = free_port()
    with open(log, "ab") as out:
        daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app],
                                  cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port, daphne, f"daphne {app} from {tree} (see {log})")
    return daphne, port


def raw_producer(spec: dict[str, Any], tmp: Path) -> tuple[list[tuple[int, int, float]], float, float]:
    """The peer's producer (``group_send`` per event), one process; the same return as ``run_producers``."""
    path, out = tmp / "raw_spec.json", tmp / "raw_out.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "peers" / "raw_channels.py"), "--produce",
                           str(path), str(out)], env=bench_env(tmp / "media"))
    if proc.returncode != 0:
        raise SystemExit("raw producer failed")
    result = json.loads(out.read_text())
    stamps = [tuple(s) for s in result["stamps"]]
    return stamps, len(stamps) / result["elapsed"], result["cpu"] / max(len(stamps), 1)  # type: ignore[return-value]


async def pushed(server: dict[str, Any], pid: int, clients: Clients, entries: list[dict], rate: float,
                 seconds: float, tmp: Path, sample: dict) -> dict[str, Any]:
    """``rate`` events/s for ``seconds``, round-robin over ``entries``' users, handed to the channel layer
    by each server's own producer: imagegen's ``events.publish`` of events already in its log (what the
    ``on_commit`` hook calls), the peer's bare ``group_send``. Both stamp the hand-off; commits are not
    part of either figure."""
    users = [e["user"] for e in entries]
    # Exactly as many events as the producer sends in ``seconds`` (it sends rate * seconds + 1): an event
    # logged but never pushed would be a hole the next run's first push finds, and imagegen would fill
    # it, and the events after it, from the log before their pushes were stamped.
    per_user = max(1, int((rate * seconds + 1) // len(users)))
    cpu, own_cpu = cpu_seconds(pid), time.process_time()
    if server["raw"]:
        # The peer's seqs go on from where this socket's last run ended (arrivals are matched by seq).
        after = {str(u): max((s for s, _ in clients.received.get(u, [])), default=0) for u in users}
        spec = {"users": users, "rate": rate, "seconds": seconds, "after": after, "event": sample}
        stamps, produced, producer_cpu = await asyncio.to_thread(raw_producer, spec, tmp)
    else:
        afters = await asyncio.to_thread(log_events, users, per_user)
        spec = {"mode": "publish", "rate": rate, "seconds": seconds, "threads": 1, "after": afters}
        stamps, produced, producer_cpu = await asyncio.to_thread(run_producers, spec, users, "users", 1,
                                                                 tmp / "media", tmp)
    last: dict[int, int] = {}
    for user, seq, _ in stamps:
        last[user] = max(last.get(user, 0), seq)
    await clients.wait_for(last, timeout=30)
    result = judge(stamps, clients)
    delivered = max(result["delivered"], 1)
    result.update(produced=produced, producer_cpu_ms=producer_cpu * 1000,
                  server_cpu_ms=(cpu_seconds(pid) - cpu) * 1000 / delivered,
                  client_cpu_ms=(time.process_time() - own_cpu) * 1000 / delivered)
    return result


async def compare_one(server: dict[str, Any], args: argparse.Namespace, single: list[dict], many: list[dict],
                      tmp: Path, sample: dict) -> dict[str, Any]:
    """One fresh daphne of ``server``: latency (one client), memory per idle socket, fan-out."""
    from rest_framework_simplejwt.tokens import AccessToken

    from django.contrib.auth import get_user_model

    # Fresh tokens for every daphne: a long run must not meet their expiry.
    users = await asyncio.to_thread(lambda: {u.pk: u for u in get_user_model().objects.filter(
        pk__in=[e["user"] for e in single + many])})
    for entry in single + many:
        entry["token"] = str(AccessToken.for_user(users[entry["user"]]))
    kind = RawClients if server["raw"] else Clients
    daphne, port = start_daphne(server["tree"], server["app"], tmp / f"daphne_{server['name']}.log")
    try:
        warm = kind(port)  # imports, pools and first-connection caches: not per-socket memory
        await warm.open(many[:5])
        await warm.close()
        one = kind(port)
        await one.open(single)
        latency = await pushed(server, daphne.pid, one, single, 100, args.seconds, tmp, sample)
        await one.close()
        await asyncio.sleep(1)  # the closes finish on the server before the idle baseline
        before = settled_rss(daphne.pid)
        clients = kind(port)
        t0 = time.monotonic()
        await clients.open(many)
        connect = time.monotonic() - t0
        after = settled_rss(daphne.pid)
        memory = {"before": before, "after": after, "per_socket": (after - before) * 1024 / len(many),
                  "connect_s": connect}
        fanout = await pushed(server, daphne.pid, clients, many, args.compare_rate, args.seconds, tmp, sample)
        sustained = await pushed(server, daphne.pid, clients, many, args.compare_sustained_rate, args.seconds, tmp,
                                 sample)
        await clients.close()
    finally:
        daphne.terminate()
        daphne.wait(20)
    result = {"latency": latency, "memory": memory, "fanout": fanout, "sustained": sustained}
    print(server["name"], json.dumps({k: {m: round(v, 3) if isinstance(v, float) else v for m, v in r.items()}
                                      for k, r in result.items()}), flush=True)
    return result


def compare_servers(args: argparse.Namespace) -> list[dict[str, Any]]:
    servers = [{"name": "raw Channels", "tree": ROOT, "app": RAW_APP, "raw": True},
               {"name": "imagegen", "tree": ROOT, "app": IMAGEGEN_APP, "raw": False}]
    if args.baseline:
        servers.append({"name": f"imagegen ({args.baseline_label})", "tree": Path(args.baseline).resolve(),
                        "app": IMAGEGEN_APP, "raw": False})
    return servers


def compare_main(args: argparse.Namespace) -> None:
    """``--compare``: imagegen (this tree, and ``--baseline`` if given) and the raw-Channels peer, each on
    a fresh daphne per round, the servers' order rotating from round to round."""
    os.environ.update({"DEBUG": "0", "SECRET_KEY": os.environ.get("SECRET_KEY") or f"bench-{uuid.uuid4().hex}",
                       "JWT_ACCESS_SECONDS": "7200"})
    tmp = Path(f"/tmp/bench_compare_{os.getpid()}")
    (tmp / "media").mkdir(parents=True)
    setup_django(bench_env(tmp / "media"), fresh=True)
    single, many = make_users(1), make_users(args.clients)
    log_events([single[0]["user"]], 1)
    from notifications.models import Event

    sample = Event.objects.filter(user_id=single[0]["user"]).first().as_message()  # the frame body the peer sends
    servers = compare_servers(args)
    gc.collect()
    gc.freeze()  # the clients are the measuring instrument (see main())
    load = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {s["name"]: [] for s in servers}
    for round_ in range(args.rounds):
        for server in servers[round_ % len(servers):] + servers[:round_ % len(servers)]:
            runs[server["name"]].append(asyncio.run(compare_one(server, args, single, many, tmp, sample)))
    write_compare_section(args, runs, load, os.getloadavg())


def _median(runs: list[dict[str, Any]], part: str, key: str) -> float:
    return statistics.median(r[part][key] for r in runs)


def write_compare_section(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], load: tuple,
                          load_end: tuple) -> None:
    raw = runs["raw Channels"]
    rows: dict[str, list[str]] = {"latency": [], "memory": [], "fanout": [], "sustained": [], "losses": []}
    for name, rs in runs.items():
        def ratio(part: str, key: str) -> str:
            return "" if rs is raw else f" ({_median(rs, part, key) / _median(raw, part, key):.2f}x)"

        runs_of = [p for p in ("latency", "fanout", "sustained") if p in rs[0]]
        lost = sum(r[p]["lost"] for r in rs for p in runs_of)
        duplicated = sum(r[p]["duplicated"] for r in rs for p in runs_of)
        rows["latency"].append(
            f"| {name} | {_median(rs, 'latency', 'p50_ms'):.2f} ms{ratio('latency', 'p50_ms')} "
            f"| {_median(rs, 'latency', 'p99_ms'):.2f} ms{ratio('latency', 'p99_ms')} "
            f"| {_median(rs, 'latency', 'server_cpu_ms'):.2f} ms{ratio('latency', 'server_cpu_ms')} |")
        for part in ("fanout", "sustained"):
            if part in rs[0]:
                rows[part].append(
                    f"| {name} | {_median(rs, part, 'produced'):.0f} "
                    f"| {_median(rs, part, 'per_second'):.0f}{ratio(part, 'per_second')} "
                    f"| {_median(rs, part, 'p50_ms'):.1f} ms{ratio(part, 'p50_ms')} "
                    f"| {_median(rs, part, 'p99_ms'):.1f} ms{ratio(part, 'p99_ms')} "
                    f"| {_median(rs, part, 'server_cpu_ms'):.2f} ms{ratio(part, 'server_cpu_ms')} |")
        rows["losses"].append(f"| {name} | {len(rs)} | {lost} | {duplicated} |")
        per_socket = sorted(r["memory"]["per_socket"] / 1024 for r in rs)
        rows["memory"].append(
            f"| {name} | **{_median(rs, 'memory', 'per_socket') / 1024:.1f} KiB**{ratio('memory', 'per_socket')} "
            f"| {per_socket[0]:.1f}-{per_socket[-1]:.1f} KiB | {_median(rs, 'memory', 'before') / 1024:.1f} MiB "
            f"| {_median(rs, 'memory', 'connect_s'):.1f} s |")
    section = COMPARE_SECTION.format(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), rounds=args.rounds, clients=args.clients,
        seconds=args.seconds, rate=args.compare_rate, load="/".join(f"{x:.1f}" for x in load),
        load_end="/".join(f"{x:.1f}" for x in load_end), servers=len(runs),
        baseline=f" `--baseline` is {args.baseline_label}." if args.baseline else "",
        latency="\n".join(rows["latency"]), memory="\n".join(rows["memory"]), fanout="\n".join(rows["fanout"]),
        sustained="\n".join(rows["sustained"]) or "| (not run) |", sustained_rate=args.compare_sustained_rate,
        losses="\n".join(rows["losses"]))
    replace_section(COMPARE_BEGIN, COMPARE_END, section, "compare")


COMPARE_BEGIN, COMPARE_END = "<!-- compare-raw-channels -->", "<!-- /compare-raw-channels -->"
COMPARE_SECTION = COMPARE_BEGIN + """
## imagegen beside raw Channels

`bench/bench_realtime.py --compare --rounds {rounds}`, {date}. The peer is `bench/peers/raw_channels.py`: a
plain `AsyncWebsocketConsumer` that joins one group per user, accepts, and forwards each group message as
a text frame, served by daphne with the project's own `CHANNEL_LAYERS` (channels-redis pub/sub on the same
Redis); its producer awaits one `group_send` per event.{baseline} Each round starts a fresh daphne per
server ({servers} servers, their order rotating) and runs, on it: latency (one socket, 100 events/s for
{seconds:.0f} s), memory ({clients} idle sockets, one per user, opened in waves of 100: the RSS they add
once it settles) and fan-out ({rate:.0f} events/s asked for {seconds:.0f} s, round-robin over those
{clients} sockets, then {sustained_rate:.0f} events/s). Figures are the medians of the {rounds} rounds, ratios imagegen / raw Channels.
Latency runs from the hand-off to the channel layer to the frame's arrival: imagegen's producer calls
`notifications.events.publish` on events already in its log (what the `on_commit` hook calls), the peer's
calls `group_send`; the commit is in neither. Load average {load} at the start, {load_end} at the end
(the machine is shared with other jobs: compare the rows with each other).

What imagegen does per socket and per event that the peer does not, so the rows are read fairly: on
connect it checks the Origin, the JWT (signature, and the user still active: one batched query), the
attempt rate and the per-user socket cap (one batched Redis round trip), counts the socket in presence,
reads the user's newest seq and sends `sync_complete`, and arms the token's expiry; per event it drops
a push at or below the seq it sent, fills a hole from the log, records the push latency and checks the
socket's unsent backlog. Its publisher pipelines the PUBLISHes of a burst (the peer's `group_send`
is one round trip each). The durable event log itself (the seq counter, the event row) is written at
commit, which neither figure includes.

**Push latency**, one socket, 100 events/s:

| server | p50 | p99 | daphne CPU per frame |
|---|---|---|---|
{latency}

**Fan-out** to {clients} sockets, {rate:.0f} events/s asked (more than either producer or server keeps up
with on this machine: delivered/s is the throughput, and p50/p99 are mostly queueing):

| server | produced/s | delivered/s | p50 | p99 | daphne CPU per frame |
|---|---|---|---|---|---|
{fanout}

**Fan-out at a sustained rate**, {sustained_rate:.0f} events/s to the same sockets:

| server | produced/s | delivered/s | p50 | p99 | daphne CPU per frame |
|---|---|---|---|---|---|
{sustained}

Lost and duplicated frames (every seq counted per socket, all runs of all rounds):

| server | rounds | lost | duplicated |
|---|---|---|---|
{losses}

**Memory per idle socket**, {clients} sockets:

| server | RSS per socket | range over the rounds | RSS before | connect time |
|---|---|---|---|---|
{memory}
""" + COMPARE_END


# --- what each idle socket holds (--tracemalloc) --------------------------------------------------
def traced_daphne(argv: list[str]) -> None:
    """daphne with tracemalloc on; SIGUSR1 writes a snapshot to ``$TRACE_DIR/snapN`` (then ``doneN``)."""
    import signal
    import tracemalloc

    tracemalloc.start(12)
    taken = [0]

    def dump(*_: Any) -> None:
        gc.collect()
        taken[0] += 1
        tracemalloc.take_snapshot().dump(f"{os.environ['TRACE_DIR']}/snap{taken[0]}")
        Path(f"{os.environ['TRACE_DIR']}/done{taken[0]}").touch()

    signal.signal(signal.SIGUSR1, dump)
    sys.path.remove(str(ROOT))  # the tree served is PYTHONPATH's (a --baseline checkout), not this one
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(argv)


async def traced_run(server: dict[str, Any], entries: list[dict], tmp: Path) -> dict[str, tuple[int, int]]:
    """Python allocations that ``len(entries) - 5`` idle sockets add to one daphne, by source line."""
    import signal
    import tracemalloc

    trace_dir = tmp / f"trace_{server['name'].replace(' ', '_')}"
    trace_dir.mkdir()
    env = {**bench_env(tmp / "media"), "PYTHONPATH": str(server["tree"]), "TRACE_DIR": str(trace_dir)}
    port = free_port()
    with open(trace_dir / "daphne.log", "wb") as out:
        # A long connect timeout: tracing slows the first handshakes past daphne's 5 s.
        daphne = subprocess.Popen([sys.executable, __file__, "--traced-daphne", "--websocket_connect_timeout", "120",
                                   "-b", "127.0.0.1", "-p", str(port), server["app"]], cwd=server["tree"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)

    def snapshot(n: int) -> tracemalloc.Snapshot:
        daphne.send_signal(signal.SIGUSR1)
        while not (trace_dir / f"done{n}").exists():
            time.sleep(0.2)
        return tracemalloc.Snapshot.load(str(trace_dir / f"snap{n}")).filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])

    try:
        wait_for_port(port, daphne, "daphne")
        kind = RawClients if server["raw"] else Clients
        warm = kind(port)
        await warm.open(entries[:5])
        await warm.close()
        await asyncio.sleep(1)
        before = await asyncio.to_thread(snapshot, 1)
        clients = kind(port)
        await clients.open(entries[5:], batch=25)
        await asyncio.sleep(2)
        after = await asyncio.to_thread(snapshot, 2)
        await clients.close()
    finally:
        daphne.terminate()
        daphne.wait(20)
    root = str(server["tree"])
    return {str(s.traceback).replace(root + "/", "").split("site-packages/")[-1]: (s.size_diff, s.count_diff)
            for s in after.compare_to(before, "lineno")}


def tracemalloc_main(args: argparse.Namespace) -> None:
    """``--tracemalloc N``: each server's Python allocations per idle socket, by line, beside the peer's."""
    os.environ.update({"DEBUG": "0", "SECRET_KEY": os.environ.get("SECRET_KEY") or f"bench-{uuid.uuid4().hex}"})
    tmp = Path(f"/tmp/bench_trace_{os.getpid()}")
    (tmp / "media").mkdir(parents=True)
    setup_django(bench_env(tmp / "media"), fresh=True)
    entries = make_users(args.tracemalloc + 5)
    servers = compare_servers(args)
    n = args.tracemalloc
    lines = {s["name"]: asyncio.run(traced_run(s, entries, tmp)) for s in servers}
    raw = lines.pop("raw Channels")
    print(f"raw Channels: {sum(v[0] for v in raw.values()) / n:.0f} B traced per socket")
    for name, own in lines.items():
        print(f"\n{name}: {sum(v[0] for v in own.values()) / n:.0f} B traced per socket; lines that differ "
              "from the peer's (B per socket, blocks per socket):")
        diff = sorted(((own.get(k, (0, 0))[0] - raw.get(k, (0, 0))[0]) / n,
                       (own.get(k, (0, 0))[1] - raw.get(k, (0, 0))[1]) / n, k) for k in set(own) | set(raw))
        for size, count, where in [d for d in diff[::-1] if d[0] >= 20][:args.top] + [d for d in diff if d[0] <= -60]:
            print(f"  {size:+6.0f} B {count:+5.2f}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--sustained-rate", type=float, default=300,
                        help="a full-path rate the producers can keep up with on this machine")
    parser.add_argument("--processes", type=int, default=2, help="producer processes for the fan-out")
    parser.add_argument("--threads", type=int, default=4, help="threads per producer process")
    parser.add_argument("--notes", default="", help="markdown appended to the report")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the latency run (WebSocket and SSE side by side); rewrites only its section")
    parser.add_argument("--storm", type=int, default=0, metavar="N",
                        help="only the reconnect storm (N sockets at once) and the mass gap fill")
    parser.add_argument("--gap-sockets", type=int, default=500, help="sockets that find a hole at once (--storm)")
    parser.add_argument("--storm-timeout", type=float, default=30.0, help="seconds a storm socket may take to sync")
    parser.add_argument("--baseline", help="another checkout of this repository to run the storm against first "
                        "(e.g. a git worktree of main): before and after in the same run")
    parser.add_argument("--backlog", type=int, default=0,
                        help="daphne's listen backlog for --storm (0: daphne's own default, Twisted's 50)")
    parser.add_argument("--baseline-label", default="main", help="what --baseline is, for the report")
    parser.add_argument("--compare", action="store_true",
                        help="only imagegen beside the raw-Channels peer (bench/peers/raw_channels.py), interleaved: "
                        "latency, memory per idle socket and fan-out, with --baseline as a third server if given")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --compare (medians)")
    parser.add_argument("--compare-rate", type=float, default=5000, help="events/s asked for in --compare's fan-out")
    parser.add_argument("--compare-sustained-rate", type=float, default=1000,
                        help="a second --compare fan-out at a rate both servers keep up with")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="N",
                        help="only what N idle sockets add to one daphne's Python heap, by source line, imagegen "
                        "(and --baseline) beside the raw-Channels peer (printed)")
    parser.add_argument("--top", type=int, default=30, help="lines to print per server (--tracemalloc)")
    parser.add_argument("--produce", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--traced-daphne"]:
        return traced_daphne(sys.argv[2:])
    args = parser.parse_args()
    if args.produce:
        produce(*args.produce)
    elif args.storm:
        storm_main(args)
    elif args.compare:
        compare_main(args)
    elif args.tracemalloc:
        tracemalloc_main(args)
    else:
        prepared = prepare(args)
        # The clients are the measuring instrument: keep this process's collector from walking
        # Django's import-time heap (its full passes would add pauses to the arrival stamps).
        gc.collect()
        gc.freeze()
        asyncio.run(main_async(args, *prepared))


if __name__ == "__main__":
    main()
