"""Soak: many clients on two daphne processes behind a TCP proxy, two workers, steady load, faults on a schedule.

    .venv/bin/python bench/soak.py --clients 1000 --minutes 30            # the full soak -> docs/benchmarks/soak.md
    .venv/bin/python bench/soak.py --clients 150 --seconds 150 --json out.json --no-report   # the suite's version

What runs (all on loopback, production settings: DEBUG=0, Redis channel layer, events written and pushed):
- its own scratch PostgreSQL database and its own ``redis-server`` (so restarting Redis touches nothing else);
- two ``daphne`` processes behind ``bench/tcp_proxy.py`` (round-robin; SIGUSR1 cuts every connection);
- two ``manage.py runworker`` processes (the no-op backend: this measures delivery, not OpenCV);
- in this process: one WebSocket client per user (the ``websockets`` library), each tracking the seq it has
  seen, reconnecting with ``after=<last seq>`` after any close (with the Python client's ``Backoff``: full
  jitter, seeded per client), pinging in band every 10 s (as the Python
  client does) and refreshing its token in band before expiry (``{"type": "refresh"}``); and a producer
  submitting tasks over REST through the proxy at a steady rate (each with an Idempotency-Key, retried on
  errors so no task is lost to a restart).

Faults, at fixed fractions of the run: Redis restarted, one daphne restarted (SIGTERM, then started again on its
port), a worker killed with -9 (and started again), the proxy cutting every connection once; tokens expire
throughout (``--token-seconds``). At the end the producer stops, every task is waited for, every client must
reach its user's last seq in the log, and the report counts per client what was lost and what was duplicated
(both must be 0), push latency p50/p99 over time (event timestamp -> frame received), reconnects per connected
user-hour with and without the injected cuts, connection success, server CPU, and daphne memory over time with
its slope (a leak shows as a slope).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
SECRET = "soak-" + uuid.uuid4().hex
# The seed's monitoring table: target, and the rollback trigger where it names one.
SEED = {
    "connection_success": (">", 0.99, 0.95),
    "push_p50_ms": ("<", 100, None),
    "push_p99_ms": ("<", 500, 5000),
    "loss_ratio": ("<", 0.001, None),
    "reconnects_per_user_hour": ("<", 5, None),
    "server_cpu_share": ("<", 0.50, None),
    "memory_per_connection_kib": ("<", 1024, None),
    "submit_error_ratio": ("<", 0.01, 0.01),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{name} did not start (exit {proc.poll()})")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 3:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


# --- the processes -----------------------------------------------------------------------------------


class Fleet:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.db = f"imagegen_soak_{os.getpid()}"
        self.redis_port, self.proxy_port = free_port(), free_port()
        self.daphne_ports = [free_port(), free_port()]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, float] = {}
        self.env = {
            **os.environ,
            "DATABASE_URL": f"{PG}/{self.db}", "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "MEDIA_ROOT": str(tmp / "media"), "DJANGO_SETTINGS_MODULE": "imagegen_site.settings",
            "SECRET_KEY": SECRET, "DEBUG": "0", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "IMAGEGEN_BACKEND": "generation.engine.noop.NoopBackend", "IMAGEGEN_EMBEDDED_WORKER": "0",
            "JWT_ACCESS_SECONDS": str(args.token_seconds), "IMAGEGEN_HEARTBEAT_TIMEOUT": "6",
            "IMAGEGEN_RETRY_BASE_SECONDS": "0.5",
            "THROTTLE_USER": "1000000/min", "THROTTLE_SUBMIT": "1000000/min", "THROTTLE_EVENTS": "1000000/min",
            "THROTTLE_TOKEN": "1000000/min", "THROTTLE_ANON": "1000000/min",
            "IMAGEGEN_WS_CONNECTS_PER_MINUTE_USER": "100000", "IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP": "10000000",
            "METRICS_PUBLIC": "1",
        }

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name], self.started[name] = proc, time.monotonic()
        return proc

    def redis(self) -> None:
        proc = self.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--maxclients", "20000"])
        wait_port(self.redis_port, proc, "redis-server")

    def daphne(self, index: int) -> None:
        port = self.daphne_ports[index]
        proc = self.spawn(f"daphne{index}", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                             "imagegen_site.asgi:application"])
        wait_port(port, proc, f"daphne{index}")

    def worker(self, index: int) -> None:
        self.spawn(f"worker{index}", [sys.executable, "manage.py", "runworker", "--concurrency", "2",
                                      "--worker-id", f"soak-{index}-{uuid.uuid4().hex[:6]}"])

    def proxy(self) -> None:
        ups = [arg for port in self.daphne_ports for arg in ("--upstream", f"127.0.0.1:{port}")]
        proc = self.spawn("proxy", [sys.executable, str(ROOT / "bench" / "tcp_proxy.py"),
                                    "--listen", str(self.proxy_port), *ups])
        wait_port(self.proxy_port, proc, "proxy")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.get(name)
        if proc and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def server_pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items() if n.startswith(("daphne", "worker")) and p.poll() is None}


def create_database(fleet: Fleet) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {fleet.db} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {fleet.db}")
    os.environ.update({k: v for k, v in fleet.env.items() if k in (
        "DATABASE_URL", "SECRET_KEY", "JWT_ACCESS_SECONDS", "DJANGO_SETTINGS_MODULE", "MEDIA_ROOT", "DEBUG",
        "LOG_LEVEL")})
    os.environ.pop("REDIS_URL", None)  # this process only reads the database and mints tokens
    os.environ["IMAGEGEN_EMBEDDED_WORKER"] = "0"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def drop_database(fleet: Fleet) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {fleet.db} WITH (FORCE)")


def make_users(count: int) -> list[int]:
    from django.contrib.auth import get_user_model

    model = get_user_model()
    model.objects.bulk_create([model(username=f"soak{i}", password="!") for i in range(count)], batch_size=1000)
    return list(model.objects.order_by("id").values_list("id", flat=True))


def mint(user_id: int) -> tuple[str, float]:
    """A fresh access token, as the client would get from /api/auth/token/refresh/."""
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken()
    token["user_id"] = str(user_id)
    return str(token), float(token["exp"])


# --- the clients --------------------------------------------------------------------------------------


@dataclass
class Client:
    user: int
    last: int = 0
    duplicates: int = 0
    gaps: int = 0
    attempts: int = 0
    opened: int = 0
    closes: list[tuple[float, int | None]] = field(default_factory=list)
    refreshed: int = 0
    refresh_errors: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, seconds)


class Soak:
    def __init__(self, args: argparse.Namespace, fleet: Fleet, users: list[int]) -> None:
        self.args, self.fleet = args, fleet
        self.clients = [Client(u) for u in users]
        self.stopping = False
        self.producing = True
        self.t0 = time.monotonic()
        self.faults: list[tuple[float, str]] = []
        self.samples: list[dict[str, Any]] = []
        self.submitted = self.submit_errors = self.submit_requests = 0
        self.pending_submits: set[asyncio.Task[None]] = set()
        self.idle_rss = 0.0
        self.load_start = os.getloadavg()
        self.connect_failures: dict[str, int] = {}
        self.failed_at: list[float] = []  # when each failed attempt failed (run seconds)
        self.submit_failures: dict[str, int] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def client(self, c: Client) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        from imagegen_client import Backoff

        lead = min(30.0, self.args.token_seconds * 0.25)
        # The Python client's own policy (full jitter, doubling from 0.5 s to 30 s, reset after a minute up),
        # seeded from the client: a herd cut at once comes back spread, as real clients would.
        backoff = Backoff(seed=f"{SECRET}:{c.user}")
        while not self.stopping:
            c.attempts += 1
            token, exp = mint(c.user)
            port = (self.fleet.daphne_ports[c.user % len(self.fleet.daphne_ports)] if self.args.direct
                    else self.fleet.proxy_port)
            url = f"ws://127.0.0.1:{port}/ws/notifications?token={token}&after={c.last}"
            try:
                ws = await connect(url, open_timeout=20, ping_interval=None, max_queue=None)
            except (OSError, InvalidHandshake, InvalidStatus, asyncio.TimeoutError) as error:
                reason = (f"HTTP {error.response.status_code}" if isinstance(error, InvalidStatus)
                          else type(error).__name__)
                self.connect_failures[reason] = self.connect_failures.get(reason, 0) + 1
                self.failed_at.append(self.now())
                await asyncio.sleep(backoff.next_delay())  # a client's back-off, not synchronisation
                continue
            c.opened += 1
            backoff.opened()
            synced = False
            pending_refresh = False
            next_ping = time.monotonic() + 10
            refresh_at = time.monotonic() + max(1.0, exp - time.time() - lead)
            try:
                while not self.stopping:
                    timeout = max(0.01, min(next_ping, refresh_at) - time.monotonic())
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout)
                    except asyncio.TimeoutError:
                        if time.monotonic() >= refresh_at:
                            token, exp = mint(c.user)
                            await ws.send(json.dumps({"type": "refresh", "token": token}))
                            pending_refresh = True
                            refresh_at = time.monotonic() + max(1.0, exp - time.time() - lead)
                        if time.monotonic() >= next_ping:
                            await ws.send('{"type": "ping"}')
                            next_ping = time.monotonic() + 10
                        continue
                    arrived = time.time()
                    message = json.loads(raw)
                    kind = message.get("type")
                    if "seq" in message:
                        seq = int(message["seq"])
                        if seq <= c.last:
                            c.duplicates += 1
                            continue
                        if seq != c.last + 1:
                            c.gaps += seq - c.last - 1
                        c.last = seq
                        if synced:
                            stamp = datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00")).timestamp()
                            c.latencies.append((self.now(), arrived - stamp))
                    elif kind == "sync_complete":
                        synced = True
                    elif kind == "refreshed":
                        c.refreshed += 1
                        pending_refresh = False
                    elif kind == "error" and pending_refresh:
                        c.refresh_errors += 1
                        pending_refresh = False
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                c.closes.append((self.now(), code))
                backoff.closed()
                if code != 4001:  # an expired token: renew and come straight back, as the client does
                    await asyncio.sleep(backoff.next_delay())
                continue
            await ws.close()

    async def producer(self) -> None:
        import httpx
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (96, 96), (200, 40, 40)).save(buf, "PNG")
        png = buf.getvalue()
        users = [c.user for c in self.clients]
        interval = 1 / self.args.rate
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.fleet.proxy_port}", timeout=30,
                                     limits=limits) as http:
            next_at = time.monotonic()
            report_at = next_at + 60
            while self.producing:
                if time.monotonic() >= report_at:
                    report_at += 60
                    print(f"[soak] {self.now():7.1f} s  submitted {self.submitted}, submit errors "
                          f"{self.submit_errors}, in flight {len(self.pending_submits)}", flush=True)
                user = random.choice(users)
                task = asyncio.create_task(self.submit(http, user, png))
                self.pending_submits.add(task)
                task.add_done_callback(self.pending_submits.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*self.pending_submits, return_exceptions=True)

    async def submit(self, http: Any, user: int, png: bytes) -> None:
        key = uuid.uuid4().hex
        for _ in range(30):
            self.submit_requests += 1
            token, _ = mint(user)
            try:
                # An overall deadline besides httpx's per-phase timeouts: one stuck request must not
                # hold a connection of the producer's pool for the rest of the run.
                answer = await asyncio.wait_for(
                    http.post("/api/tasks/", files={"image": ("p.png", png, "image/png")},
                              headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key}), 40)
                if answer.status_code in (200, 201):
                    self.submitted += 1
                    return
                reason = f"HTTP {answer.status_code}"
            except Exception as error:  # noqa: BLE001 - a restart in flight; the same key is tried again
                reason = type(error).__name__
            self.submit_failures[reason] = self.submit_failures.get(reason, 0) + 1
            self.submit_errors += 1
            await asyncio.sleep(1.0)

    async def sampler(self) -> None:
        last_cpu: dict[str, float] = {}
        last_t = time.monotonic()
        while not self.stopping:
            await asyncio.sleep(self.args.sample_seconds)
            now = time.monotonic()
            pids = self.fleet.server_pids()
            cpu = {n: cpu_seconds(p) for n, p in pids.items()}
            used = sum(max(0.0, cpu[n] - last_cpu.get(n, 0.0)) if n in last_cpu else 0.0 for n in cpu)
            self.samples.append({
                "t": self.now(), "cpu_share": used / ((now - last_t) * (os.cpu_count() or 1)),
                "rss": {n: rss_kib(p) for n, p in pids.items() if n.startswith("daphne")},
                "connected": sum(1 for c in self.clients if c.opened > len(c.closes)),
                "load1": os.getloadavg()[0],  # the machine is shared: what else ran, as it ran
                "latencies": sum(len(c.latencies) for c in self.clients),
            })
            last_cpu, last_t = cpu, now

    async def faults_schedule(self) -> None:
        duration = self.args.seconds
        plan = [(0.2, "redis_restart"), (0.35, "daphne_restart"), (0.5, "worker_kill9"), (0.65, "proxy_cut")]
        if self.args.no_faults:
            plan = []
        for fraction, name in plan:
            await asyncio.sleep(max(0.0, self.t0 + fraction * duration - time.monotonic()))
            if self.stopping:
                return
            self.faults.append((self.now(), name))
            print(f"[soak] {self.now():7.1f} s  fault: {name}", flush=True)
            if name == "redis_restart":
                await asyncio.to_thread(self.fleet.stop, "redis")
                await asyncio.sleep(2.0)  # the outage itself
                await asyncio.to_thread(self.fleet.redis)
            elif name == "daphne_restart":
                await asyncio.to_thread(self.fleet.stop, "daphne0")
                await asyncio.to_thread(self.fleet.daphne, 0)
            elif name == "worker_kill9":
                await asyncio.to_thread(self.fleet.stop, "worker0", signal.SIGKILL)
                await asyncio.to_thread(self.fleet.worker, 0)
            elif name == "proxy_cut":
                self.fleet.procs["proxy"].send_signal(signal.SIGUSR1)

    async def connect_all(self) -> list[asyncio.Task[None]]:
        # Each daphne's memory before any socket: what a connection costs is measured above this.
        pids = self.fleet.server_pids()
        self.idle_rss = statistics.fmean(rss_kib(pids[f"daphne{i}"]) for i in range(len(self.fleet.daphne_ports)))
        tasks = []
        for i in range(0, len(self.clients), 100):  # the listen backlog is finite: connect in waves
            wave = [asyncio.create_task(self.client(c)) for c in self.clients[i:i + 100]]
            tasks.extend(wave)
            deadline = time.monotonic() + 60
            while any(c.opened == 0 for c in self.clients[i:i + 100]) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        return tasks

    async def run(self) -> dict[str, Any]:
        clients = await self.connect_all()
        print(f"[soak] {len(self.clients)} clients connected; load for {self.args.seconds:.0f} s", flush=True)
        self.t0 = time.monotonic()
        for c in self.clients:  # the connect phase is not part of the measured run
            c.closes.clear()
            c.attempts = c.opened = 1
        self.connect_failures.clear()
        self.failed_at.clear()
        sampler = asyncio.create_task(self.sampler())
        faults = asyncio.create_task(self.faults_schedule())
        producer = asyncio.create_task(self.producer())
        await asyncio.sleep(self.args.seconds)
        load_end = self.now()
        # Stop producing; let every submit in flight, every task and every client finish.
        self.producing = False
        await producer
        await faults
        settled = await asyncio.to_thread(self.wait_settled, 180)
        finals = await asyncio.to_thread(self.final_seqs)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(c.last < finals.get(c.user, 0) for c in self.clients):
            await asyncio.sleep(0.2)
        self.stopping = True
        sampler.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        return await asyncio.to_thread(self.result, load_end, finals, settled)

    def wait_settled(self, timeout: float) -> bool:
        from generation.models import GenerationTask

        deadline = time.monotonic() + timeout
        unfinished = (GenerationTask.Status.PENDING, GenerationTask.Status.PROCESSING)
        while time.monotonic() < deadline:
            if not GenerationTask.objects.filter(status__in=unfinished).exists():
                return True
            time.sleep(0.5)
        return False

    def final_seqs(self) -> dict[int, int]:
        from notifications.models import EventCounter

        return dict(EventCounter.objects.values_list("user_id", "last_seq"))

    def result(self, load_end: float, finals: dict[int, int], settled: bool) -> dict[str, Any]:
        from django.db.models import Count

        from generation.models import GenerationTask

        cut_windows = [(t, t + 30) for t, name in self.faults if name in ("daphne_restart", "proxy_cut")]
        lost = sum(max(0, finals.get(c.user, 0) - c.last) + c.gaps for c in self.clients)
        dup = sum(c.duplicates for c in self.clients)
        events = sum(finals.values())
        closes = [(t, code) for c in self.clients for t, code in c.closes]
        # A close for token expiry (4001) is the client's own business whenever it happens; any other close
        # within 30 s of a daphne restart or the proxy's cut is the injected fault's.
        token_closes = sum(1 for _, code in closes if code == 4001)
        injected = [1 for t, code in closes if code != 4001 and any(a <= t <= b for a, b in cut_windows)]
        fault_windows = [(t, t + 15) for t, _ in self.faults]
        calm = [lat for c in self.clients for at, lat in c.latencies
                if not any(a <= at <= b for a, b in fault_windows)]
        hours = len(self.clients) * load_end / 3600
        latencies = [lat for c in self.clients for _, lat in c.latencies]
        windows = []
        step = max(10.0, load_end / 10)
        t = 0.0
        while t < load_end + 1e-9:
            chunk = [lat for c in self.clients for at, lat in c.latencies if t <= at < t + step]
            if chunk:
                windows.append({"from_s": t, "to_s": t + step, "n": len(chunk), "p50_ms": percentile(chunk, 50) * 1000,
                                "p99_ms": percentile(chunk, 99) * 1000})
            t += step
        rss_points: dict[str, list[tuple[float, float]]] = {}
        for s in self.samples:
            for name, kib in s["rss"].items():
                rss_points.setdefault(name, []).append((s["t"], kib))
        restart_at = next((t for t, n in self.faults if n == "daphne_restart"), None)
        steady = {}
        for name, points in rss_points.items():
            # A restarted daphne's line starts again at its restart; the first 20 % is warm-up.
            if name == "daphne0" and restart_at is not None:
                points = [p for p in points if p[0] > restart_at]
            warm = [p for p in points if p[0] > 0.2 * load_end] or points
            steady[name] = {"slope_kib_per_min": slope_per_minute(warm), "first_kib": warm[0][1] if warm else None,
                            "last_kib": warm[-1][1] if warm else None}
        connected = [s["connected"] for s in self.samples] or [len(self.clients)]
        rss_last = sum(v for v in (self.samples[-1]["rss"].values() if self.samples else []))
        attempts = sum(c.attempts for c in self.clients)
        opened = sum(c.opened for c in self.clients)
        statuses = dict(GenerationTask.objects.values_list("status").annotate(n=Count("id")).order_by())
        # How long each fault kept clients away: from the fault to the first sample with every client connected.
        recovered_after = []
        for at, _name in self.faults:
            back = next((smp["t"] for smp in self.samples if smp["t"] > at and smp["connected"] == len(self.clients)),
                        None)
            recovered_after.append(None if back is None else back - at)
        loads = [smp["load1"] for smp in self.samples if "load1" in smp]
        # Failed attempts by the fault they followed (until the next one); before the first: "steady".
        marks = [(0.0, "steady"), *[(at, name) for at, name in self.faults]]
        failed_after: dict[str, int] = {}
        for at in self.failed_at:
            name = [n for t, n in marks if t <= at][-1]
            failed_after[name] = failed_after.get(name, 0) + 1
        return {
            "recovered_after_s": recovered_after, "failed_attempts_after": failed_after, "load_start": self.load_start, "load_end": os.getloadavg(),
            "load1_median": statistics.median(loads) if loads else float("nan"),
            "load1_max": max(loads, default=float("nan")),
            "clients": len(self.clients), "seconds": load_end, "rate": self.args.rate,
            "token_seconds": self.args.token_seconds, "faults": self.faults, "settled": settled,
            "tasks": statuses, "submitted": self.submitted, "submit_requests": self.submit_requests,
            "submit_errors": self.submit_errors, "submit_failures": self.submit_failures,
            "connect_failures": self.connect_failures, "events": events, "lost": lost, "duplicated": dup,
            "clients_with_loss": sum(1 for c in self.clients if finals.get(c.user, 0) > c.last or c.gaps),
            "clients_with_duplicates": sum(1 for c in self.clients if c.duplicates),
            "connection_attempts": attempts, "connections_opened": opened,
            "connection_success": opened / attempts if attempts else 1.0,
            "reconnects": len(closes), "reconnects_injected": len(injected), "closes_token_expiry": token_closes,
            "reconnects_per_user_hour": len(closes) / hours if hours else 0.0,
            "reconnects_per_user_hour_without_injected": (len(closes) - len(injected)) / hours if hours else 0.0,
            "refreshed": sum(c.refreshed for c in self.clients),
            "refresh_errors": sum(c.refresh_errors for c in self.clients),
            "push_p50_ms": percentile(latencies, 50) * 1000, "push_p99_ms": percentile(latencies, 99) * 1000,
            "push_max_ms": max(latencies) * 1000 if latencies else float("nan"), "push_samples": len(latencies),
            "push_p50_ms_outside_faults": percentile(calm, 50) * 1000,
            "push_p99_ms_outside_faults": percentile(calm, 99) * 1000,
            "latency_windows": windows,
            "server_cpu_share_median": statistics.median([s["cpu_share"] for s in self.samples]) if self.samples
            else float("nan"),
            "server_cpu_share_max": max((s["cpu_share"] for s in self.samples), default=float("nan")),
            "daphne_idle_rss_kib": self.idle_rss,
            "memory_per_connection_kib": (rss_last - len(self.fleet.daphne_ports) * self.idle_rss)
            / max(connected[-1], 1),
            "daphne_rss": steady, "samples": self.samples,
        }


def seed_table(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    values = {
        "connection_success": r["connection_success"], "push_p50_ms": r["push_p50_ms"],
        "push_p99_ms": r["push_p99_ms"], "loss_ratio": r["lost"] / max(r["events"], 1),
        "reconnects_per_user_hour": r["reconnects_per_user_hour"],
        "server_cpu_share": r["server_cpu_share_median"],
        "memory_per_connection_kib": r["memory_per_connection_kib"],
        "submit_error_ratio": r["submit_errors"] / max(r["submit_requests"], 1),
    }
    rows = []
    for name, (op, target, rollback) in SEED.items():
        value = values[name]
        ok = value > target if op == ">" else value < target
        rows.append((name, f"{value:.4g}", f"{op} {target:g}" + (f" (roll back past {rollback:g})" if rollback else ""),
                     "met" if ok else "NOT met"))
    return rows


def write_report(args: argparse.Namespace, r: dict[str, Any], path: Path) -> None:
    load = r.get("load_end") or os.getloadavg()
    lines = [
        "# Soak: an hour's faults in one run, nothing lost",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `bench/soak.py --clients {r['clients']} "
        f"--seconds {args.seconds:g} --rate {args.rate:g} --token-seconds {args.token_seconds}` on "
        f"{platform.node() or 'vm'}: {os.cpu_count()} cores, Python {platform.python_version()}. The machine is "
        "shared: the clients, the proxy, PostgreSQL and Redis run on the same 2 cores as the servers, and so did "
        "whatever else was running. Load average (1/5/15 min) at the start "
        f"{'/'.join(f'{x:.2f}' for x in r['load_start'])}, at the end {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; "
        f"the 1-minute load sampled during the run: median {r['load1_median']:.2f}, max {r['load1_max']:.2f}.",
        "",
        "Two daphne processes behind `bench/tcp_proxy.py`, two `runworker --concurrency 2` (no-op backend), "
        f"its own Redis and PostgreSQL database; {r['clients']} WebSocket clients, one per user, each pinging in "
        f"band every 10 s and refreshing its {args.token_seconds} s token in band before expiry; tasks submitted "
        f"over REST through the proxy at {args.rate:g}/s.",
        "",
        *([args.notes.read_text().rstrip("\n"), ""] if args.notes else []),
        "## Faults",
        "",
        "| at (s) | fault | every client connected again after |",
        "|---|---|---|",
        *[f"| {t:.0f} | {name.replace('_', ' ')} | "
          f"{'never (by the end)' if back is None else f'{back:.0f} s (sampled every {args.sample_seconds:g} s)'} |"
          for (t, name), back in zip(r["faults"], r["recovered_after_s"])],
        "",
        "## Delivery",
        "",
        "| | |",
        "|---|---|",
        f"| tasks submitted / by status at the end | {r['submitted']} / {r['tasks']} |",
        f"| events in the log | {r['events']} |",
        f"| events lost (per client, summed) | **{r['lost']}** ({r['clients_with_loss']} clients) |",
        f"| events duplicated | **{r['duplicated']}** ({r['clients_with_duplicates']} clients) |",
        f"| push latency p50 / p99 / max (event timestamp -> frame received, live events) | "
        f"{r['push_p50_ms']:.1f} / {r['push_p99_ms']:.1f} / {r['push_max_ms']:.0f} ms over {r['push_samples']} |",
        f"| the same outside the 15 s after each fault, p50 / p99 | {r['push_p50_ms_outside_faults']:.1f} / "
        f"{r['push_p99_ms_outside_faults']:.1f} ms |",
        f"| connection attempts / opened (success) | {r['connection_attempts']} / {r['connections_opened']} "
        f"({r['connection_success']:.4f}) |",
        f"| failed attempts by kind | {r['connect_failures'] or 'none'} |",
        f"| failed attempts by the fault they followed | {r.get('failed_attempts_after') or 'none'} |",
        f"| reconnects (all / in the 30 s after an injected cut / closed for token expiry) | {r['reconnects']} / "
        f"{r['reconnects_injected']} / {r['closes_token_expiry']} |",
        f"| reconnects per connected user-hour, all / without the injected cuts | "
        f"{r['reconnects_per_user_hour']:.2f} / {r['reconnects_per_user_hour_without_injected']:.2f} |",
        f"| in-band refreshes answered / refused | {r['refreshed']} / {r['refresh_errors']} |",
        f"| submit requests / errors (retried with the same Idempotency-Key) | {r['submit_requests']} / "
        f"{r['submit_errors']} |",
        f"| server CPU (daphnes + workers, share of the machine) median / max | "
        f"{r['server_cpu_share_median']:.1%} / {r['server_cpu_share_max']:.1%} |",
        f"| daphne memory per open connection at the end (above {r['daphne_idle_rss_kib']:.0f} KiB idle) | "
        f"{r['memory_per_connection_kib']:.0f} KiB |",
        "",
        "## The seed's table",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in seed_table(r)],
        "",
        "## Push latency over time",
        "",
        "| from (s) | to (s) | frames | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|---|",
        *[f"| {w['from_s']:.0f} | {w['to_s']:.0f} | {w['n']} | {w['p50_ms']:.1f} | {w['p99_ms']:.1f} |"
          for w in r["latency_windows"]],
        "",
        "## Memory over time",
        "",
        "Daphne resident memory, sampled every few seconds; the slope is a least-squares line over the run after "
        "the first 20 % (a restarted process from its restart). A leak shows as a slope that does not flatten.",
        "",
        "| process | first (KiB) | last (KiB) | slope (KiB/min) |",
        "|---|---|---|---|",
        *[f"| {n} | {v['first_kib']} | {v['last_kib']} | {v['slope_kib_per_min']:.1f} |"
          for n, v in sorted(r["daphne_rss"].items())],
        "",
        "| t (s) | connected | daphne0 RSS (KiB) | daphne1 RSS (KiB) | server CPU | machine load (1 min) |",
        "|---|---|---|---|---|---|",
        *[f"| {s['t']:.0f} | {s['connected']} | {s['rss'].get('daphne0', '-')} | {s['rss'].get('daphne1', '-')} | "
          f"{s['cpu_share']:.0%} | {s.get('load1', float('nan')):.1f} |"
          for s in r["samples"][:: max(1, len(r["samples"]) // 20)]],
        "",
    ]
    path.write_text("\n".join(lines))


async def amain(args: argparse.Namespace, fleet: Fleet, users: list[int]) -> dict[str, Any]:
    soak = Soak(args, fleet, users)
    return await soak.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--seconds", type=float, default=1800)
    parser.add_argument("--rate", type=float, default=5.0, help="tasks submitted per second")
    parser.add_argument("--token-seconds", type=int, default=300)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks" / "soak.md")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--no-faults", action="store_true", help="the same load without injected faults")
    parser.add_argument("--direct", action="store_true", help="clients connect to the daphnes, not the proxy")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this folder")
    parser.add_argument("--notes", type=Path, help="markdown put into the report after its introduction")
    parser.add_argument("--report-from", type=Path, metavar="JSON",
                        help="no run: write the report from a run's --json (with the same --seconds, --rate, ...)")
    args = parser.parse_args()
    if args.minutes:
        args.seconds = args.minutes * 60
    if args.report_from:
        write_report(args, json.loads(args.report_from.read_text()), args.report)
        return
    import logging
    import resource
    import tempfile

    logging.getLogger("httpx").setLevel(logging.WARNING)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="imagegen-soak-") as tmp_name:
        tmp = Path(tmp_name)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            tmp = args.logs
        (tmp / "media").mkdir(exist_ok=True)
        fleet = Fleet(args, tmp)
        try:
            create_database(fleet)
            users = make_users(args.clients)
            fleet.redis()
            fleet.daphne(0)
            fleet.daphne(1)
            fleet.worker(0)
            fleet.worker(1)
            fleet.proxy()
            result = asyncio.run(amain(args, fleet, users))
        except BaseException:
            for name in fleet.procs:
                log = (tmp / f"{name}.log")
                if log.exists():
                    print(f"--- {name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
            raise
        finally:
            fleet.stop_all()
            drop_database(fleet)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(result, default=str))
    if not args.no_report:
        write_report(args, result, args.report)


if __name__ == "__main__":
    main()
