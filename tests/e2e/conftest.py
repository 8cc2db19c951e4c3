"""Real processes: ``daphne`` and ``manage.py runworker`` on free ports, sharing the
test database (PostgreSQL) and a Redis, stopped before the database is flushed."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests.conftest import accepts, free_port, wait_until
from tests.notifications.support import isolate_channel_layer

isolate_channel_layer()

BASE_DIR = Path(django_settings.BASE_DIR)
QUICK = "tests.generation.backends.QuickBackend"


class Cluster:
    """Processes of one test; ``env`` is shared, each start may add to it."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(args, cwd=BASE_DIR, env={**self.env, **extra}, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        return proc

    def daphne(self, name: str = "daphne", *, port: int | None = None, options: tuple[str, ...] = (),
               **extra: str) -> int:
        """Start daphne (on ``port`` again for a restart) with extra command-line ``options``."""
        port = port or free_port()
        proc = self.spawn(name, [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *options,
                                 "imagegen_site.asgi:application"], **extra)
        wait_until(lambda: accepts(port) or proc.poll() is not None, timeout=30)
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited:\n{self.tail(name)}")
        return port

    def worker(self, name: str = "worker", **extra: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, [sys.executable, "manage.py", "runworker", "--worker-id", name], **extra)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tail(self, name: str, lines: int = 60) -> str:
        return "\n".join(self.log(name).splitlines()[-lines:])

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def cluster(transactional_db: Any, subprocess_env: dict[str, str], tmp_path: Path,
            request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
        pytest.skip("end-to-end tests need DATABASE_URL=postgres://... and REDIS_URL (shared with subprocesses)")
    env = {
        **subprocess_env,
        "IMAGEGEN_BACKEND": QUICK,
        "IMAGEGEN_EMBEDDED_WORKER": "0",
        "IMAGEGEN_POLL_INTERVAL": "0.5",
        "THROTTLE_USER": "100000/min", "THROTTLE_SUBMIT": "100000/min", "THROTTLE_EVENTS": "100000/min",
        "THROTTLE_TOKEN": "100000/min", "THROTTLE_ANON": "100000/min",
        "IMAGEGEN_WS_CONNECTS_PER_MINUTE_USER": "100000", "IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP": "100000",
        "PYTHONPATH": str(BASE_DIR),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Cluster(env, logs)
    yield running
    running.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for name, _ in running.procs:
            print(f"--- {name} ---\n{running.tail(name)}")


@pytest.fixture
def make_user(django_user_model: Any) -> Any:
    def make() -> Any:
        # A random id keeps group names apart from other runs even without the prefix.
        uid = random.randint(10**6, 2**31 - 1)
        return django_user_model.objects.create_user(id=uid, username=f"e2e{uid}")

    return make
