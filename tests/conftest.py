"""Shared fixtures: users, API clients, task factory, and images made in memory."""
from __future__ import annotations

import asyncio
import io
from typing import Any, Callable

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken


def _own_redis_per_xdist_worker() -> None:
    """Under pytest-xdist, give each worker its own Redis database and channel prefix.

    The test database is already per process (below), but every test clears the cache
    (a FLUSHDB on Redis) and Redis pub/sub channels span databases: two workers on one
    Redis would wipe each other's presence and rate counters, and a worker's pushes for
    user 1 would reach the other worker's sockets for its own user 1. Settings were read
    when pytest-django set Django up; no cache or layer has been opened yet, so the
    process's settings and the environment its subprocesses inherit are rewritten here."""
    import os
    from urllib.parse import urlsplit, urlunsplit

    from django.conf import settings as dj

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not getattr(dj, "REDIS_URL", ""):
        return
    n = int(worker[2:])
    parts = urlsplit(dj.REDIS_URL)
    base = int(parts.path.strip("/") or 0)
    url = urlunsplit(parts._replace(path=f"/{(base + 1 + n) % 16}"))
    prefix = f"{dj.CHANNEL_LAYER_PREFIX}-{worker}"
    os.environ["REDIS_URL"], os.environ["CHANNEL_LAYER_PREFIX"] = url, prefix
    dj.REDIS_URL, dj.CHANNEL_LAYER_PREFIX = url, prefix
    dj.CACHES["default"]["LOCATION"] = url
    layer = dj.CHANNEL_LAYERS["default"]["CONFIG"]
    layer["hosts"][0]["address"], layer["prefix"] = url, prefix


_own_redis_per_xdist_worker()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: Any) -> None:
    """A test database per pytest run (test_<name>_<pid>), so concurrent runs on one
    machine (developers, CI, xdist workers) never drop each other's database.

    On SQLite (no ``DATABASE_URL``: the embedded default) it is a file, as the embedded
    default's own database is, not Django's shared-cache in-memory one: there two threads
    writing at once fail at once with "database table is locked" (table locks ignore the
    busy timeout), which the thread-concurrency tests of the event log and claims hit."""
    import os

    from django.conf import settings
    from pytest_django.fixtures import _set_suffix_to_test_databases

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("sqlite") / "test.sqlite3")
    _set_suffix_to_test_databases(suffix=str(os.getpid()))


@pytest.fixture(scope="session", autouse=True)
def _drop_pool_connections(django_db_setup: Any, django_db_blocker: Any) -> Any:
    """At the very end, end the connections other threads still hold (async views and
    consumers read through pool threads, each with its own): PostgreSQL refuses to drop
    the test database while sessions remain. Only here: ended mid-run, they would break
    the next test that reaches one of those threads."""
    yield
    from tests.notifications.support import terminate_other_sessions

    with django_db_blocker.unblock():
        terminate_other_sessions()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item (``item.rep_call``), so fixtures that run
    servers can print their logs when the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings: Any, tmp_path: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.IMAGEGEN_RETRY_BASE_SECONDS = 0.0
    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {k: "100000/min" for k in rates}}


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    from django.core.cache import cache

    from generation.models import memo

    cache.clear()
    memo.forget()  # ETAs read memoized figures: one test's queue must not leak into the next


@pytest.fixture(autouse=True)
def _pushes_not_paused() -> None:
    """Each test starts with the publisher as after a working push: a slow failed push in an earlier
    test (a Redis outage test) pauses pushes for a moment (``skip_until``), and a failure is only
    logged as the first of an outage (``failing``), so a test run after one on the same process saw
    its pushes skipped, or its failure not logged."""
    from notifications.events import publisher

    publisher.skip_until = 0.0
    publisher.failing = 0


@pytest.fixture(autouse=True)
def _pushes_on_the_test_loop(request: Any) -> None:
    """With the in-memory channel layer (no ``REDIS_URL``: the embedded default), publish on
    the running test's event loop, as daphne's loop is used in production (``imagegen_site.asgi``
    attaches it): that layer only wakes consumers on the loop they run on, so a push from the
    publisher's own thread may never reach a test's consumer."""
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    if not asyncio.iscoroutinefunction(getattr(request.node, "obj", None)):
        return
    if not isinstance(get_channel_layer(), InMemoryChannelLayer):
        return
    request.getfixturevalue("_attach_publisher")


@pytest.fixture
async def _attach_publisher() -> Any:
    from notifications.events import publisher

    publisher.attach(asyncio.get_running_loop())
    yield
    sender = publisher.detach()
    if sender is not None:
        await asyncio.gather(sender, return_exceptions=True)


def product_photo(width: int = 640, height: int = 480, fmt: str = "JPEG", background: int = 235) -> bytes:
    """A plain-background product shot: a dark red rounded box with a highlight."""
    rgb = np.full((height, width, 3), background, dtype=np.uint8)
    y0, y1, x0, x1 = height // 4, 3 * height // 4, width // 3, 2 * width // 3
    rgb[y0:y1, x0:x1] = (150, 30, 40)
    rgb[y0 + 10 : y0 + 30, x0 + 10 : x1 - 10] = (220, 120, 120)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture
def photo_bytes() -> bytes:
    return product_photo()


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice", password="alice-pass-123")


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="bob", password="bob-pass-123")


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="carol", password="carol-pass-123", is_staff=True)


def bearer(user: Any) -> str:
    return f"Bearer {AccessToken.for_user(user)}"


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def auth_client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=bearer(user))
    return client


@pytest.fixture
def other_client(other_user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=bearer(other_user))
    return client


@pytest.fixture
def make_task(user: Any) -> Callable[..., Any]:
    from generation.engine.spec import parse_job
    from generation.models import GenerationTask

    def make(**overrides: Any) -> GenerationTask:
        owner = overrides.pop("user", user)
        options = overrides.pop("options", parse_job({}).to_options())
        task, _ = GenerationTask.submit(
            user=owner,
            image=SimpleUploadedFile("input.jpg", overrides.pop("image", product_photo())),
            content_type="image/jpeg",
            options=options,
            idempotency_key=overrides.pop("idempotency_key", None),
            priority=overrides.pop("priority", 0),
        )
        assert not overrides, f"unknown overrides {overrides}"
        return task

    return make


def require_postgresql(what: str) -> None:
    """Skip the calling test unless the test database is PostgreSQL (the README's test command sets
    ``DATABASE_URL=postgres://...``; CI always does): ``what`` names the PostgreSQL feature it needs."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip(f"{what} needs PostgreSQL (DATABASE_URL=postgres://...)")


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll a condition until it holds (or fail): synchronises on state, not on time."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def subprocess_env(settings: Any) -> dict[str, str]:
    """Environment for manage.py subprocesses sharing this test's database and media."""
    import os

    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ)
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    else:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    env["IMAGEGEN_RETRY_BASE_SECONDS"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers a test starts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    """True once something accepts connections on 127.0.0.1:``port``."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
