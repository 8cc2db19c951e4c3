"""The web page in Debian's Chromium (Playwright) against a real daphne + worker.

Never `playwright install`: the browser is /usr/bin/chromium. Screenshots go
to the test's tmp folder; with IMAGEGEN_SCREENSHOTS=1 also to docs/screenshots/.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlparse

import httpx
import pytest
from django.db import connection

from notifications.models import EventCounter

from .conftest import BASE_DIR, SLOW, LiveServer, photo_variant

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TASK_DETAIL = re.compile(r"/api/tasks/\d+/")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not at /usr/bin/chromium "
                       "(apt-get install chromium); .ci/run installs it"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
expect = sync_api.expect
T = TypeVar("T")


def in_thread(fn: Callable[[], T]) -> T:
    """ORM calls from a plain thread: Playwright's sync API keeps an event loop
    running on this one, which Django refuses to run queries under."""
    def call() -> T:
        try:
            return fn()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class App:
    """The page plus every request it made."""

    def __init__(self, browser: Any, server: LiveServer, user: Any, *, width: int = 1100) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.requests: list[tuple[str, str]] = []
        self.page.on("request", lambda r: self.requests.append((r.method, urlparse(r.url).path)))
        self.page.on("console", lambda m: print("console:", m.type, m.text))
        self.server = server
        self.user = user

    def sign_in(self) -> None:
        page = self.page
        page.goto(self.server.url + "/")
        page.get_by_label("Username").fill(self.user.username)
        page.get_by_label("Password").fill("seller-pass-123")
        page.get_by_role("button", name="Sign in").click()

    def live(self, state: str = "live") -> None:
        expect(self.page.locator("#connection")).to_have_attribute("data-state", state, timeout=30_000)

    def cards(self, status: str | None = None) -> Any:
        return self.page.locator(f".card[data-status={status}]" if status else ".card")

    def detail_requests(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if TASK_DETAIL.fullmatch(r[1])]

    def stats(self) -> dict[str, Any]:
        return dict(self.page.evaluate("({...window.imagegen.feed.stats, lastSeq: window.imagegen.feed.lastSeq})"))


def write_photos(folder: Path, count: int) -> list[Path]:
    paths = []
    for index in range(count):
        path = folder / f"mug-{index + 1}.jpg"
        path.write_bytes(photo_variant(index))
        paths.append(path)
    return paths


def save_screenshot(app: App, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    app.page.screenshot(path=str(path), full_page=True)
    if os.environ.get("IMAGEGEN_SCREENSHOTS") == "1":
        target = BASE_DIR / "docs" / "screenshots" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return path


def test_two_photos_finish_live_without_any_task_detail_request(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path
) -> None:
    server = live_server_factory("local")
    app = App(browser, server, seller)
    app.sign_in()
    app.live()

    app.page.get_by_label("Marketplace").select_option("etsy")
    app.page.set_input_files("#file-input", [str(p) for p in write_photos(tmp_path, 2)])

    expect(app.cards("completed")).to_have_count(2, timeout=60_000)
    results = app.page.locator(".card[data-status=completed] img[data-field=after]:not([data-empty])")
    expect(results).to_have_count(2)
    expect(app.cards()).to_have_count(2)
    expect(app.cards().first).to_contain_text("etsy")
    expect(app.page.locator(".card").filter(has_text="mug-1.jpg")).to_have_count(1)
    # The compliance report is not in events: a list request (never a detail one) brings it.
    expect(app.page.locator(".card").filter(has_text="meets etsy rules")).to_have_count(2)
    assert app.detail_requests() == []
    stats = app.stats()
    assert stats["applied"] == stats["lastSeq"] == in_thread(lambda: EventCounter.objects.get(user=seller).last_seq)

    save_screenshot(app, tmp_path, "queue.png")

    # A reload at phone width: still signed in, the same queue from one snapshot.
    app.page.set_viewport_size({"width": 390, "height": 900})
    app.page.reload()
    app.live()
    expect(app.cards("completed")).to_have_count(2)
    expect(app.page.locator(".card").filter(has_text="mug-2.jpg")).to_have_count(1)
    expect(app.page.locator("img[data-field=after]:not([data-empty])")).to_have_count(2)
    save_screenshot(app, tmp_path, "queue-phone.png")
    assert app.detail_requests() == []


def test_a_cut_socket_reconnects_and_the_card_finishes_once(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path
) -> None:
    server = live_server_factory(SLOW, TEST_BACKEND_SECONDS="3")
    app = App(browser, server, seller)
    app.sign_in()
    app.live()

    app.page.set_input_files("#file-input", [str(write_photos(tmp_path, 1)[0])])
    expect(app.cards("processing")).to_have_count(1, timeout=30_000)
    expect(app.page.locator(".card [data-field=meta]")).to_contain_text("%")
    save_screenshot(app, tmp_path, "queue-processing.png")
    app.page.evaluate("window.imagegen.feed.cut()")  # progress events keep coming while we are away

    expect(app.cards("completed")).to_have_count(1, timeout=60_000)
    expect(app.cards()).to_have_count(1)
    app.live()
    stats = app.stats()
    last_seq = in_thread(lambda: EventCounter.objects.get(user=seller).last_seq)
    assert stats["connects"] >= 2
    assert stats["applied"] == stats["lastSeq"] == last_seq  # each seq applied exactly once
    assert app.detail_requests() == []


def test_a_bad_file_shows_the_servers_error(live_server_factory: Any, seller: Any, browser: Any,
                                            tmp_path: Path) -> None:
    server = live_server_factory()
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"these are my notes, not a photo\n" * 10)
    # httpx's 5 s default is too short for a freshly started daphne's first request on a loaded machine.
    token = httpx.post(f"{server.url}/api/auth/token/", timeout=60,
                       json={"username": seller.username, "password": "seller-pass-123"}).json()["access"]
    said = httpx.post(f"{server.url}/api/tasks/", headers={"Authorization": f"Bearer {token}"}, timeout=60,
                      files={"image": ("notes.jpg", bad.read_bytes(), "image/jpeg")}).json()["detail"]
    app = App(browser, server, seller)
    app.sign_in()
    app.live()

    app.page.set_input_files("#file-input", [str(bad)])

    card = app.cards("rejected")
    expect(card).to_have_count(1)
    expect(card.locator(".error")).to_have_text(said)
    expect(card.get_by_role("button", name="Remove notes.jpg")).to_be_visible()
    card.get_by_role("button", name="Remove notes.jpg").click()
    expect(app.cards()).to_have_count(0)


def test_it_long_polls_when_the_websocket_is_blocked(live_server_factory: Any, seller: Any, browser: Any,
                                                    tmp_path: Path) -> None:
    server = live_server_factory()
    app = App(browser, server, seller)
    # A proxy that kills every WebSocket: the page must still follow its tasks.
    app.page.route_web_socket(re.compile(r".*/ws/notifications.*"), lambda ws: ws.close(code=1011))
    app.sign_in()
    app.live("polling")

    app.page.set_input_files("#file-input", [str(p) for p in write_photos(tmp_path, 2)])

    expect(app.cards("completed")).to_have_count(2, timeout=60_000)
    assert app.detail_requests() == []
    assert any(path == "/api/events/" for _, path in app.requests)
    stats = app.stats()
    assert stats["applied"] == stats["lastSeq"]


def test_cancel_then_retry_from_the_card(live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path) -> None:
    server = live_server_factory(SLOW, TEST_BACKEND_SECONDS="2")
    app = App(browser, server, seller)
    app.sign_in()
    app.live()
    app.page.set_input_files("#file-input", [str(write_photos(tmp_path, 1)[0])])
    expect(app.cards("processing")).to_have_count(1, timeout=30_000)

    app.page.get_by_role("button", name="Cancel mug-1.jpg").click()
    expect(app.cards("canceled")).to_have_count(1)
    app.page.get_by_role("button", name="Retry mug-1.jpg").click()

    expect(app.cards("completed")).to_have_count(1, timeout=60_000)
    expect(app.cards()).to_have_count(1)
    assert app.detail_requests() == []
    assert ("POST", f"/api/tasks/{app.page.locator('.card').get_attribute('data-task-id')}/retry/") in app.requests


def test_an_expiring_token_is_refreshed_in_band_without_a_reconnect(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path
) -> None:
    # Access tokens live 4 s: without an in-band refresh the server would close the socket (4001) at each expiry.
    server = live_server_factory(SLOW, TEST_BACKEND_SECONDS="9", JWT_ACCESS_SECONDS="4")
    app = App(browser, server, seller)
    app.sign_in()
    app.live()
    app.page.set_input_files("#file-input", [str(write_photos(tmp_path, 1)[0])])

    expect(app.cards("completed")).to_have_count(1, timeout=60_000)
    expect(app.page.locator("#login")).to_be_hidden()
    stats = app.stats()
    assert stats["connects"] == 1 and stats["refreshed"] >= 2  # one socket through three token lifetimes
    assert stats["applied"] == stats["lastSeq"] == in_thread(lambda: EventCounter.objects.get(user=seller).last_seq)
    assert ("POST", "/api/auth/token/refresh/") in app.requests


def test_lost_and_repeated_pushes_are_repaired_from_the_log(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path
) -> None:
    """A proxy between page and server drops some progress pushes and repeats others."""
    server = live_server_factory(SLOW, TEST_BACKEND_SECONDS="1.5")
    app = App(browser, server, seller)
    counts = {"dropped": 0, "repeated": 0}

    def proxy(ws: Any) -> None:
        upstream = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            event = json.loads(message)
            seq = event.get("seq")
            if event.get("type") == "task_update" and seq % 5 == 0:
                counts["dropped"] += 1  # later events of the same task always follow
                return
            ws.send(message)
            if seq is not None and seq % 3 == 0:
                counts["repeated"] += 1
                ws.send(message)

        upstream.on_message(from_server)

    app.page.route_web_socket(re.compile(r".*/ws/notifications.*"), proxy)
    app.sign_in()
    app.live()
    app.page.set_input_files("#file-input", [str(p) for p in write_photos(tmp_path, 2)])

    expect(app.cards("completed")).to_have_count(2, timeout=60_000)
    expect(app.cards()).to_have_count(2)
    stats = app.stats()
    assert counts["dropped"] > 0 and counts["repeated"] > 0
    # (a repeat of an event parked behind a gap is dropped there, uncounted)
    assert stats["gapFetches"] > 0 and stats["duplicates"] > 0
    assert stats["applied"] == stats["lastSeq"] == in_thread(lambda: EventCounter.objects.get(user=seller).last_seq)
    assert app.detail_requests() == []
