"""The web page with several marketplaces for one upload, in Debian's Chromium against a real daphne + worker."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .test_browser import CHROMIUM, App, browser, expect, save_screenshot, write_photos  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not at /usr/bin/chromium"),
]


def test_one_upload_for_two_marketplaces_shows_each_output_with_its_report_and_download(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path
) -> None:
    server = live_server_factory("local", IMAGEGEN_SEGMENTER="classical")
    app = App(browser, server, seller)
    app.sign_in()
    app.live()

    app.page.get_by_label("Marketplace").select_option("taobao")
    app.page.locator("#also-presets").get_by_label("Pinduoduo").check()
    app.page.set_input_files("#file-input", [str(write_photos(tmp_path, 1)[0])])

    card = app.cards("completed")
    expect(card).to_have_count(1, timeout=60_000)
    expect(card).to_contain_text("taobao + pinduoduo")
    outputs = card.locator("[data-field=outputs] > li")
    expect(outputs).to_have_count(2)
    expect(outputs.nth(0)).to_contain_text("taobao 800 x 800 JPEG")
    expect(outputs.nth(0)).to_contain_text("meets taobao rules")
    expect(outputs.nth(1)).to_contain_text("pinduoduo 800 x 800 JPEG")
    expect(outputs.nth(1)).to_contain_text("meets pinduoduo rules")
    # Each output's own checks: Taobao's no-shadow rule is only in Taobao's list.
    expect(outputs.nth(0).locator("li[data-check=no_shadow]")).to_have_count(1)
    expect(outputs.nth(1).locator("li[data-check=no_shadow]")).to_have_count(0)

    with app.page.expect_download() as info:
        card.get_by_role("button", name="Download pinduoduo of mug-1.jpg").click()
    assert info.value.suggested_filename == "mug-1-pinduoduo.jpg"
    saved = tmp_path / "saved.jpg"
    info.value.save_as(saved)
    assert saved.read_bytes()[:3] == b"\xff\xd8\xff"
    assert ("GET", f"/api/tasks/{card.get_attribute('data-task-id')}/result/") in app.requests
    save_screenshot(app, tmp_path, "queue-outputs.png")
