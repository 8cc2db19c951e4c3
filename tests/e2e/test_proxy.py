"""The shipped nginx config (deploy/nginx/imagegen.conf), run for real in front of two daphne processes.

The config is rendered, not rewritten: only the lines a machine decides (upstream ports, the listen
address, the certificate or plain HTTP, the static root) are substituted, each substitution must match
exactly as often as expected, and every location block, timeout and header reaches nginx as shipped.

Idle sockets: nginx closes a proxied connection that has been silent for ``proxy_read_timeout``
(60 s by default). Idling 65 s live would cost most of this module's time budget, so the shipped
values are asserted as nginx itself parses them (``nginx -T``), and one live test shows that the
``/ws/`` directive is the one that decides: with daphne's pings off, a quiet socket survives the
shipped config and is cut by a render that changes only that value to 2 s.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from generation.models import GenerationTask
from notifications.models import EventCounter
from tests.conftest import accepts, free_port, product_photo, wait_until
from tests.notifications.support import token_for

from .client import frame, open_ws, until_sync
from .conftest import BASE_DIR, Cluster

logger = logging.getLogger(__name__)
SHIPPED = BASE_DIR / "deploy" / "nginx" / "imagegen.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)")
pytestmark = [needs_nginx]
# The longest wait a long-poll may ask for (docs/realtime.md) and daphne's default ping interval.
LONG_POLL_MAX_WAIT = 30
DAPHNE_PING_INTERVAL = 20


def substitute(text: str, pattern: str, replacement: str | Callable[[re.Match[str]], str], count: int) -> str:
    new, found = re.subn(pattern, replacement, text, flags=re.M | re.S)
    assert found == count, f"the shipped config changed shape: {pattern!r} matched {found} times, not {count}"
    return new


def render_site(upstreams: list[int], port: int, static_root: Path, ws_read_timeout: str | None = None,
                tls: tuple[Path, Path] | None = None) -> str:
    """The shipped site at 127.0.0.1:``port`` in front of ``upstreams``: plain HTTP, or its own TLS
    lines with the ``tls`` (certificate, key) pair."""
    text = SHIPPED.read_text()
    text = substitute(text, r"^    server 127\.0\.0\.1:\d+ ([^;\n]*);\n(?:    server 127\.0\.0\.1:\d+ [^;\n]*;\n)*",
                      lambda m: "".join(f"    server 127.0.0.1:{p} {m.group(1)};\n" for p in upstreams), 1)
    text = substitute(text, r"^server \{\n    listen 80;.*?^\}\n", "", 1)  # the redirect to HTTPS
    text = substitute(text, r"^    listen 443 (ssl http2);\n",
                      lambda m: f"    listen 127.0.0.1:{port}{' ' + m.group(1) if tls else ''};\n", 1)
    text = substitute(text, r"^    listen \[::\]:443 ssl http2;\n", "", 1)
    if tls:
        text = substitute(text, r"^(    ssl_certificate +)\S+;", rf"\g<1>{tls[0]};", 1)
        text = substitute(text, r"^(    ssl_certificate_key +)\S+;", rf"\g<1>{tls[1]};", 1)
    else:
        text = substitute(text, r"^    ssl_[a-z_]+ [^\n]*;\n", "", 3)
    text = substitute(text, r"alias /srv/imagegen/staticfiles/;", f"alias {static_root}/;", 1)
    if ws_read_timeout is not None:
        text = substitute(text, r"(location /ws/ \{[^}]*proxy_read_timeout )3600s;", rf"\g<1>{ws_read_timeout};", 1)
    return text


def main_config(home: Path, site: Path) -> str:
    """What /etc/nginx/nginx.conf gives the site, with every path under ``home``."""
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "\n".join(f"    {kind}_temp_path {home / kind};" for kind in kinds)
    # As root the workers would drop to "nobody", which cannot read pytest's private tmp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}daemon off;\nworker_processes 1;\npid {home / 'nginx.pid'};\nerror_log {home / 'error.log'} info;\n"
            f"events {{ worker_connections 1024; }}\nhttp {{\n    access_log {home / 'access.log'};\n{temp}\n"
            f"    include {site};\n}}\n")


@dataclass
class Proxy:
    port: int
    home: Path

    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def write_config(home: Path, upstreams: list[int], **render: Any) -> tuple[Path, int]:
    home.mkdir(parents=True, exist_ok=True)
    static = home / "static"
    static.mkdir(exist_ok=True)
    (static / "probe.txt").write_text("static from nginx\n")
    port = free_port()
    site = home / "imagegen.conf"
    site.write_text(render_site(upstreams, port, static, **render))
    conf = home / "nginx.conf"
    conf.write_text(main_config(home, site))
    return conf, port


def start_nginx(cluster: Cluster, name: str, upstreams: list[int], **render: Any) -> Proxy:
    assert NGINX is not None
    home = cluster.logs.parent / name
    conf, port = write_config(home, upstreams, **render)
    proc = cluster.spawn(name, [NGINX, "-p", str(home), "-c", str(conf), "-e", str(home / "error.log")])
    wait_until(lambda: accepts(port) or proc.poll() is not None, timeout=10)
    assert proc.poll() is None, f"nginx exited:\n{cluster.tail(name)}\n{(home / 'error.log').read_text()}"
    return Proxy(port, home)


def proc_named(cluster: Cluster, name: str) -> subprocess.Popen[bytes]:
    return next(proc for proc_name, proc in reversed(cluster.procs) if proc_name == name)


async def submit(client: httpx.AsyncClient, base: str, token: str) -> httpx.Response:
    return await client.post(f"{base}/api/tasks/", headers={"Authorization": f"Bearer {token}"},
                             files={"image": ("shoe.jpg", product_photo(96, 80), "image/jpeg")})


def parsed_directives(conf: Path) -> dict[str, dict[str, str]]:
    """Per location of the site, the directives nginx itself reads (``nginx -T``), server level under ''."""
    assert NGINX is not None
    dump = subprocess.run([NGINX, "-T", "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "error.log")],
                          capture_output=True, text=True, check=True).stdout
    site = dump.split("# configuration file ")[-1]
    found: dict[str, dict[str, str]] = {"": {}}
    current = ""
    for line in site.splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("location"):
            current = line.removesuffix("{").strip()
            found[current] = {}
        elif line == "}":
            current = ""
        elif line.endswith(";") and " " in line:
            key, value = line.rstrip(";").split(None, 1)
            found[current].setdefault(key, value)
    return found


def seconds(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([smh]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]


def test_it_ships_timeouts_above_60s_unbuffered_streams_and_an_upload_limit_in_step(tmp_path: Path) -> None:
    conf, _ = write_config(tmp_path / "nginx", [free_port(), free_port()])
    check = subprocess.run([NGINX, "-t", "-p", str(conf.parent), "-c", str(conf), "-e", str(tmp_path / "e.log")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    parsed = parsed_directives(conf)
    ws, poll, sse = parsed["location /ws/"], parsed["location = /api/events/"], parsed["location = /api/events/stream/"]
    for streaming in (ws, sse):
        assert streaming["proxy_buffering"] == "off"
        # Above nginx's default 60 s and well above daphne's ping interval.
        assert seconds(streaming["proxy_read_timeout"]) >= 3600
        assert seconds(streaming["proxy_send_timeout"]) >= 3600
    assert poll["proxy_buffering"] == "off"
    assert seconds(poll["proxy_read_timeout"]) >= LONG_POLL_MAX_WAIT + DAPHNE_PING_INTERVAL
    assert seconds(parsed["location /"]["proxy_read_timeout"]) > 60
    limit = int(parsed[""]["client_max_body_size"].removesuffix("m")) * 1024 * 1024
    assert settings.IMAGEGEN_MAX_UPLOAD_BYTES < limit <= settings.IMAGEGEN_MAX_UPLOAD_BYTES + 1024 * 1024
    assert parsed[""]["proxy_set_header"].startswith("Host $http_host")
    # A batch is up to 100 uploads in one request (generation.models.MAX_BATCH_IMAGES).
    batches = int(parsed["location = /api/batches/"]["client_max_body_size"].removesuffix("m")) * 1024 * 1024
    assert batches >= 100 * settings.IMAGEGEN_MAX_UPLOAD_BYTES


@pytest.fixture
def fleet(cluster: Cluster) -> tuple[Cluster, int, int, Proxy]:
    # Both start at once: a daphne takes seconds to import the app, and this runs for most tests here.
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda name: cluster.daphne(name, options=("--proxy-headers",)),
                                 ["daphne-a", "daphne-b"])
    return cluster, first, second, start_nginx(cluster, "nginx", [first, second])


@pytest.fixture
def single(cluster: Cluster) -> tuple[int, Proxy]:
    """One daphne behind the shipped site, for what needs no second upstream (and so starts faster)."""
    port = cluster.daphne(options=("--proxy-headers",))
    return port, start_nginx(cluster, "nginx", [port])


@pytest.mark.django_db(transaction=True)
async def test_it_submits_through_nginx_and_pushes_every_event_live_over_the_proxied_websocket(
        fleet: Any, make_user: Any) -> None:
    cluster, _, _, proxy = fleet
    cluster.worker()
    user = await sync_to_async(make_user)()
    token = token_for(user)
    ws = await open_ws(proxy.port, token, after=0)
    assert (await until_sync(ws))[1]["type"] == "sync_complete"
    async with httpx.AsyncClient(timeout=30) as client:
        created = await submit(client, proxy.http(), token)
        assert created.status_code == 201, created.text
        static = await client.get(f"{proxy.http()}/static/probe.txt")
        media = await client.get(f"{proxy.http()}/media/anything.jpg")
    assert (static.status_code, static.text) == (200, "static from nginx\n")
    assert media.status_code == 404
    types = []
    while not types or types[-1] != "task_complete":
        message = await frame(ws, 30)
        assert message["task_id"] == created.json()["id"]
        types.append(message["type"])
    assert types[0] == "task_created" and "task_update" in types
    await ws.close()


@pytest.mark.django_db(transaction=True)
async def test_it_keeps_a_quiet_websocket_open_as_long_as_the_ws_location_says(
        cluster: Cluster, make_user: Any) -> None:
    # No daphne pings: only nginx's own timeout can end a silent socket.
    port = cluster.daphne(options=("--ping-interval", "3600"))
    shipped = start_nginx(cluster, "nginx", [port])
    short = start_nginx(cluster, "nginx-2s", [port], ws_read_timeout="2s")
    token = token_for(await sync_to_async(make_user)())
    kept = await open_ws(shipped.port, token)
    await until_sync(kept)
    started = time.monotonic()  # nginx's idle clock starts after this, with the last frame it relays
    cut = await open_ws(short.port, token)
    await until_sync(cut)
    with pytest.raises(ConnectionClosed):
        await frame(cut, timeout=10)
    assert 2 <= time.monotonic() - started < 8
    await kept.send(json.dumps({"type": "ping"}))
    assert await frame(kept, 5) == {"type": "pong"}
    await kept.close()


@pytest.mark.django_db(transaction=True)
async def test_it_delivers_a_push_through_nginx_within_50ms_of_the_direct_path(
        single: Any, make_user: Any, make_task: Any) -> None:
    first, proxy = single
    user = await sync_to_async(make_user)()
    token = token_for(user)
    direct_ws, proxied_ws = await open_ws(first, token, after=0), await open_ws(proxy.port, token, after=0)
    await until_sync(direct_ws)
    await until_sync(proxied_ws)
    ws_gaps, poll_gaps = [], []
    headers = {"Authorization": f"Bearer {token}"}

    async def arrival_of_frame(ws: Any) -> float:
        await frame(ws, 10)
        return time.monotonic()

    async def arrival_of_poll(client: httpx.AsyncClient, base: str, after: int) -> float:
        answer = await client.get(f"{base}/api/events/", params={"after": after, "wait": 10}, headers=headers)
        assert answer.status_code == 200 and answer.json()["events"], answer.text
        return time.monotonic()

    async with httpx.AsyncClient(timeout=30) as direct, httpx.AsyncClient(timeout=30) as proxied:
        for _ in range(5):
            after = await sync_to_async(EventCounter.last_seq_for)(user.pk)
            waiting = [asyncio.ensure_future(coro) for coro in (
                arrival_of_frame(direct_ws), arrival_of_frame(proxied_ws),
                arrival_of_poll(direct, f"http://127.0.0.1:{first}", after),
                arrival_of_poll(proxied, proxy.http(), after))]
            committed = time.monotonic()
            await sync_to_async(make_task)(user=user)  # no worker: one task_created event per round
            ws_direct, ws_proxied, poll_direct, poll_proxied = await asyncio.gather(*waiting)
            assert max(ws_direct, ws_proxied, poll_direct, poll_proxied) - committed < 2  # a push, not a timeout
            ws_gaps.append(ws_proxied - ws_direct)
            poll_gaps.append(poll_proxied - poll_direct)
    logger.info("through nginx minus direct, ms: websocket %s, long-poll %s",
                [round(g * 1000, 1) for g in ws_gaps], [round(g * 1000, 1) for g in poll_gaps])
    assert statistics.median(ws_gaps) < 0.05, ws_gaps
    assert statistics.median(poll_gaps) < 0.05, poll_gaps
    for ws in (direct_ws, proxied_ws):
        await ws.close()


@pytest.mark.django_db(transaction=True)
async def test_server_sent_events_pass_nginx_unbuffered_with_keep_alives_and_resume(
        cluster: Cluster, make_user: Any, make_task: Any) -> None:
    port = cluster.daphne(options=("--proxy-headers",), IMAGEGEN_SSE_KEEPALIVE_SECONDS="0.5")
    proxy = start_nginx(cluster, "nginx", [port])
    user = await sync_to_async(make_user)()
    headers = {"Authorization": f"Bearer {token_for(user)}"}
    gaps, ids, comments = [], [], 0

    async def lines(response: httpx.Response) -> Any:
        async for line in response.aiter_lines():
            yield line

    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream("GET", f"http://127.0.0.1:{port}/api/events/stream/?after=0",
                                 headers=headers) as direct, \
                client.stream("GET", f"{proxy.http()}/api/events/stream/?after=0", headers=headers) as proxied:
            assert proxied.status_code == 200 and proxied.headers["content-type"] == "text/event-stream"
            streams = {"direct": lines(direct), "proxied": lines(proxied)}

            async def next_event(name: str) -> tuple[str, float]:
                nonlocal comments
                while True:
                    line = await anext(streams[name])
                    if line.startswith(":") and name == "proxied":
                        comments += 1  # a keep-alive made it through
                    if line.startswith("id: "):
                        return line[4:], time.monotonic()

            assert (await next_event("direct"))[0] == (await next_event("proxied"))[0] == "0"  # sync_complete
            for _ in range(3):
                waiting = [asyncio.ensure_future(next_event(n)) for n in ("direct", "proxied")]
                committed = time.monotonic()
                await sync_to_async(make_task)(user=user)  # no worker: one task_created event each
                (direct_id, at_direct), (proxied_id, at_proxied) = await asyncio.gather(*waiting)
                assert direct_id == proxied_id and at_proxied - committed < 2  # pushed, not buffered
                ids.append(int(proxied_id))
                gaps.append(at_proxied - at_direct)
            async def keep_alive() -> None:  # quiet now: the next line through nginx is a keep-alive comment
                nonlocal comments
                while not (await anext(streams["proxied"])).startswith(":"):
                    pass
                comments += 1

            await asyncio.wait_for(keep_alive(), 10)
        # EventSource's reconnect: the original URL plus Last-Event-ID, which wins.
        await sync_to_async(make_task)(user=user)
        async with client.stream("GET", f"{proxy.http()}/api/events/stream/?after=0",
                                 headers={**headers, "Last-Event-ID": str(ids[-1])}) as resumed:
            streams["proxied"] = lines(resumed)
            assert (await next_event("proxied"))[0] == "4"  # only the one it missed, then sync_complete
            assert (await next_event("proxied"))[0] == "4"
    assert ids == [1, 2, 3]
    assert comments >= 1
    logger.info("SSE through nginx minus direct, ms: %s", [round(g * 1000, 1) for g in gaps])
    assert statistics.median(gaps) < 0.05, gaps


@pytest.mark.django_db(transaction=True)
async def test_it_refuses_a_too_large_upload_with_json_and_foreign_origins_or_hosts_behind_the_proxy(
        single: Any, make_user: Any) -> None:
    first, proxy = single
    token = token_for(await sync_to_async(make_user)())
    limit = settings.IMAGEGEN_MAX_UPLOAD_BYTES
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=60) as client:
        refused_by_nginx = await client.post(f"{proxy.http()}/api/tasks/", headers=headers,
                                             files={"image": ("big.jpg", b"\xff" * (limit + 2 * 1024 * 1024))})
        refused_by_api = await client.post(f"{proxy.http()}/api/tasks/", headers=headers,
                                           files={"image": ("big.jpg", b"\xff" * (limit + 1))})
        foreign_host = await client.get(f"{proxy.http()}/healthz", headers={"Host": "evil.example"})
        own_host = await client.get(f"{proxy.http()}/healthz")
    assert refused_by_nginx.status_code == 413
    assert refused_by_nginx.headers["content-type"].startswith("application/json")
    assert "larger than this server accepts" in refused_by_nginx.json()["detail"]
    assert refused_by_api.status_code == 400
    assert f"the limit is {limit} bytes" in refused_by_api.json()["detail"]
    assert await sync_to_async(GenerationTask.objects.count)() == 0
    assert (foreign_host.status_code, own_host.status_code) == (400, 200)

    # The Origin check sees the host and port the browser used, through the proxy.
    page = await open_ws(proxy.port, token, origin=proxy.http())
    assert (await until_sync(page))[1]["type"] == "sync_complete"
    await page.close()
    for foreign in (f"http://127.0.0.1:{first}", "http://evil.example"):
        refused = await open_ws(proxy.port, token, origin=foreign)
        with pytest.raises(ConnectionClosed) as closed:
            await frame(refused, 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003


@pytest.mark.django_db(transaction=True)
async def test_a_restart_of_one_daphne_loses_no_event_for_clients_that_reconnect(
        fleet: Any, make_user: Any) -> None:
    cluster, first, _, proxy = fleet
    cluster.worker()
    user = await sync_to_async(make_user)()
    token = token_for(user)
    seen: list[list[int]] = [[] for _ in range(4)]
    reconnects = [0] * 4
    done = asyncio.Event()

    async def follow(index: int) -> None:
        """A client as docs/realtime.md asks: on any close, reconnect with after=<last seq seen>."""
        while not done.is_set():
            try:
                ws = await open_ws(proxy.port, token, after=seen[index][-1] if seen[index] else 0)
                while not done.is_set():
                    message = json.loads(await ws.recv())
                    if "seq" in message:
                        seen[index].append(message["seq"])
            except (ConnectionClosed, OSError):
                reconnects[index] += 1

    # Round robin puts these four sockets two on each daphne.
    followers = [asyncio.ensure_future(follow(i)) for i in range(4)]
    created: list[int] = []
    async with httpx.AsyncClient(timeout=30) as client:
        async def submit_some(count: int) -> None:
            for _ in range(count):
                answer = await submit(client, proxy.http(), token)
                assert answer.status_code == 201, answer.text
                created.append(answer.json()["id"])

        await submit_some(3)
        daphne_a = proc_named(cluster, "daphne-a")
        daphne_a.send_signal(signal.SIGTERM)
        await sync_to_async(daphne_a.wait)(15)
        await submit_some(3)  # while it is down: nginx sends everything to the other one
        await sync_to_async(cluster.daphne)("daphne-a", port=first, options=("--proxy-headers",))
        await submit_some(3)
    await sync_to_async(wait_until)(
        lambda: GenerationTask.objects.filter(pk__in=created, status="completed").count() == len(created), timeout=60)
    final = await sync_to_async(EventCounter.last_seq_for)(user.pk)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while any(not s or s[-1] < final for s in seen) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    done.set()
    for follower in followers:
        follower.cancel()
    for received in seen:
        assert received == list(range(1, final + 1))
    assert any(reconnects), reconnects  # the sockets on daphne-a were closed and came back


OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (Debian: apt-get install openssl)")
@pytest.mark.django_db(transaction=True)
async def test_behind_the_shipped_tls_server_an_admin_logs_in_and_a_page_opens_its_websocket(
        cluster: Cluster, django_user_model: Any, tmp_path: Path) -> None:
    assert OPENSSL is not None
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = cluster.daphne(options=("--proxy-headers",), BEHIND_TLS_PROXY="1")
    proxy = start_nginx(cluster, "nginx-tls", [port], tls=(cert, key))
    site = f"https://127.0.0.1:{proxy.port}"
    # Hashed as daphne's own PASSWORD_HASHERS can check (this process is set to a fast one it lacks).
    hasher = PBKDF2PasswordHasher()
    admin = await sync_to_async(django_user_model.objects.create)(
        username="ops", password=hasher.encode("ops-pass-123", hasher.salt(), iterations=1000),
        is_staff=True, is_superuser=True)
    tls = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=tls, timeout=30) as client:
        form = await client.get(f"{site}/admin/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        login = await client.post(f"{site}/admin/login/?next=/admin/",
                                  headers={"Origin": site, "Referer": str(form.url)},
                                  data={"username": "ops", "password": "ops-pass-123", "csrfmiddlewaretoken": csrf,
                                        "next": "/admin/"})
    # Django saw HTTPS: CSRF's Origin check passed (a 403 otherwise; daphne --proxy-headers takes the scheme
    # from X-Forwarded-Proto, and BEHIND_TLS_PROXY trusts it as well) and the cookies are marked secure
    # (BEHIND_TLS_PROXY alone).
    assert (login.status_code, login.headers.get("location")) == (302, "/admin/"), login.text[:500]
    assert "secure" in login.headers["set-cookie"].lower()
    ws = await connect(f"wss://127.0.0.1:{proxy.port}/ws/notifications?token={token_for(admin)}", ssl=tls,
                       origin=site, open_timeout=30)  # type: ignore[arg-type]
    assert (await until_sync(ws))[1]["type"] == "sync_complete"
    await ws.close()
