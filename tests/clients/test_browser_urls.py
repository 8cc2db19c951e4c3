"""A photo by its web address from the page, in Debian's Chromium against a real daphne + worker that fetch it
from a photo server on loopback."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import photo_variant
from .photo_server import FETCH_ENV, serve_photos
from .test_browser import CHROMIUM, App, browser, expect, in_thread  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not at /usr/bin/chromium"),
]


def test_a_photo_address_is_fetched_by_the_server_and_finishes_live_for_two_marketplaces(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path
) -> None:
    from generation.models import GenerationTask

    server = live_server_factory("local", IMAGEGEN_SEGMENTER="classical", **FETCH_ENV)
    with serve_photos({"/catalogue/red%20shoe.jpg": photo_variant(3)}) as (base, hits):
        app = App(browser, server, seller)
        app.sign_in()
        app.live()
        app.page.get_by_label("Marketplace").select_option("etsy")
        app.page.locator("#also-presets").get_by_label("Taobao").check()

        app.page.get_by_label("Or the photo's web address").fill(f"{base}/catalogue/red%20shoe.jpg")
        app.page.get_by_role("button", name="Fetch and process").click()

        card = app.cards("completed")
        expect(card).to_have_count(1, timeout=60_000)
    expect(card.locator("[data-field=title]")).to_have_text("red shoe.jpg")
    expect(card).to_contain_text("etsy + taobao")
    expect(card.locator("[data-field=outputs] > li")).to_have_count(2)
    # The photo the worker fetched is the card's "before" image, through the owner-only input download.
    expect(card.locator("img[data-field=before]")).to_have_attribute("src", re.compile(r"^blob:"))
    task_id = int(card.get_attribute("data-task-id"))
    assert ("GET", f"/api/tasks/{task_id}/input/") in app.requests
    assert hits == ["/catalogue/red%20shoe.jpg"]
    task = in_thread(lambda: GenerationTask.objects.get(pk=task_id))
    assert task.image_url == f"{base}/catalogue/red%20shoe.jpg" and task.user_id == seller.pk
    expect(app.page.get_by_label("Or the photo's web address")).to_have_value("")  # ready for the next one


def test_an_address_the_server_refuses_shows_its_reason_and_creates_nothing(
    live_server_factory: Any, seller: Any, browser: Any
) -> None:
    from generation.models import GenerationTask

    server = live_server_factory()  # the default guard: https only
    app = App(browser, server, seller)
    app.sign_in()
    app.live()

    field = app.page.get_by_label("Or the photo's web address")
    field.fill("http://127.0.0.1/private.jpg")
    app.page.get_by_role("button", name="Fetch and process").click()

    card = app.cards("rejected")
    expect(card).to_have_count(1)
    expect(card.locator(".error")).to_contain_text("image_url")
    expect(card.locator("[data-field=title]")).to_have_text("private.jpg")
    expect(field).to_have_value("http://127.0.0.1/private.jpg")  # kept, to be corrected
    assert in_thread(lambda: GenerationTask.objects.filter(user=seller).count()) == 0
