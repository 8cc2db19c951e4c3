"""A real server for the client tests: ``daphne`` plus ``manage.py runworker``
as subprocesses on the test PostgreSQL database and the Redis of ``REDIS_URL``
(its database number too, so runs from several checkouts keep apart)."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from tests.conftest import accepts, free_port, product_photo, wait_until

BASE_DIR = Path(django_settings.BASE_DIR)
QUICK = "tests.generation.backends.QuickBackend"
SLOW = "tests.generation.backends.SlowBackend"


def redis_up(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class LiveServer:
    env: dict[str, str]
    logs: Path
    port: int = field(default_factory=free_port)
    web: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(args, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_web(self) -> None:
        self.web = self._spawn("daphne", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                                          "imagegen_site.asgi:application"])
        web = self.web
        wait_until(lambda: accepts(self.port) or web.poll() is not None, timeout=30)
        if web.poll() is not None:
            raise AssertionError(f"daphne exited:\n{self.tail('daphne')}")

    def start_worker(self) -> None:
        self.worker = self._spawn("worker", [sys.executable, "manage.py", "runworker", "--concurrency", "2",
                                             "--worker-id", f"clients-{self.port}"])

    def kill_web(self) -> None:
        """A crash, not a shutdown: every socket drops at once, nothing says goodbye."""
        assert self.web is not None
        self.web.kill()
        self.web.wait(10)
        wait_until(lambda: not accepts(self.port), timeout=10)

    def stop(self) -> None:
        for proc in (self.web, self.worker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.web, self.worker):
            if proc is None:
                continue
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture
def live_server_factory(transactional_db: Any, subprocess_env: dict[str, str], tmp_path: Path,
                        request: pytest.FixtureRequest) -> Iterator[Callable[..., LiveServer]]:
    """``start(backend=..., **env)`` runs daphne and a worker; both stop before the database is flushed."""
    if connection.vendor != "postgresql":
        pytest.skip("live-server tests share the test database with subprocesses: run them with "
                    "DATABASE_URL=postgres://... (an in-memory SQLite test database cannot be shared)")
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url or not redis_up(redis_url):
        pytest.skip("live-server tests need REDIS_URL (a reachable Redis) for the cross-process channel layer")
    servers: list[LiveServer] = []

    def start(backend: str = QUICK, **extra: str) -> LiveServer:
        env = {
            **subprocess_env,
            "REDIS_URL": redis_url,
            "IMAGEGEN_BACKEND": backend,
            "IMAGEGEN_EMBEDDED_WORKER": "0",
            "IMAGEGEN_POLL_INTERVAL": "0.2",
            "THROTTLE_USER": "100000/min", "THROTTLE_SUBMIT": "100000/min",
            "THROTTLE_EVENTS": "100000/min", "THROTTLE_TOKEN": "100000/min", "THROTTLE_ANON": "100000/min",
            "IMAGEGEN_WS_CONNECTS_PER_MINUTE_USER": "100000",
            "IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP": "100000",
            "PYTHONPATH": str(BASE_DIR),
            **extra,
        }
        logs = tmp_path / f"server-{len(servers)}"
        logs.mkdir()
        server = LiveServer(env=env, logs=logs)
        servers.append(server)
        server.start_web()
        server.start_worker()
        return server

    yield start
    for server in servers:
        server.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for server in servers:
            print(f"--- daphne ---\n{server.tail('daphne')}\n--- worker ---\n{server.tail('worker')}")


@pytest.fixture
def seller(django_user_model: Any) -> Any:
    # A random id: Redis pub/sub channels are shared by every test run on this
    # machine, and group names are per user id; keep ours from meeting another's.
    user = django_user_model.objects.create_user(
        id=random.randint(10**6, 2**31 - 1), username=f"seller{random.randint(0, 10**9)}"
    )
    # The test settings hash with MD5, which the server subprocesses do not accept:
    # store a PBKDF2 hash they can verify (few iterations, so logins stay fast).
    user.password = PBKDF2PasswordHasher().encode("seller-pass-123", "clientsalt", iterations=1000)
    user.save(update_fields=["password"])
    return user


def photo_variant(index: int, fmt: str = "JPEG") -> bytes:
    """Distinct product shots (different bytes, so different idempotency keys)."""
    return product_photo(width=480 + 16 * index, height=360 + 8 * index, fmt=fmt)

