"""The page's review card, its larger before/after view and the box a seller draws (Debian's Chromium).

The server runs ``ReviewBackend``: without a hint it doubts its cut (``needs_review``,
reasons, a failed ``fill`` check) and refuses a flat photo (``no_product_found``); with a
``hint_box`` it cuts exactly that box and reports a clean result.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from generation.models import GenerationTask

from .conftest import photo_variant
from .test_browser import CHROMIUM, App, browser, expect, in_thread, save_screenshot  # noqa: F401 (fixture)

REVIEW = "tests.generation.backends.ReviewBackend"
BLOB = re.compile(r"^blob:")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not at /usr/bin/chromium"),
]


def drag_box(app: App, share: tuple[float, float, float, float]) -> None:
    """Drag on the photo in the dialog from one corner to the other, as shares of its displayed size."""
    image = app.page.locator("#compare [data-field=compare-before]")
    expect(image).to_have_attribute("src", BLOB)
    app.page.wait_for_function("document.querySelector('#compare [data-field=compare-before]').naturalWidth > 0")
    bounds = image.bounding_box()
    assert bounds is not None
    x0, y0, x1, y1 = share
    mouse = app.page.mouse
    mouse.move(bounds["x"] + x0 * bounds["width"], bounds["y"] + y0 * bounds["height"])
    mouse.down()
    mouse.move(bounds["x"] + x1 * bounds["width"], bounds["y"] + y1 * bounds["height"], steps=6)
    mouse.up()


def drawn_box(app: App) -> list[int]:
    return [int(v) for v in app.page.locator("#hint-box").input_value().split(",")]


def close_to(actual: list[int], expected: list[int], slack: int = 3) -> bool:
    return all(abs(a - e) <= slack for a, e in zip(actual, expected, strict=True))


def tasks_of(user: Any) -> list[GenerationTask]:
    return in_thread(lambda: list(GenerationTask.objects.filter(user=user).order_by("id")))


def test_a_doubtful_cut_needs_a_look_and_a_drawn_box_makes_a_new_clean_task(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path  # noqa: F811
) -> None:
    server = live_server_factory(REVIEW)
    app = App(browser, server, seller)
    app.sign_in()
    app.live()
    photo = tmp_path / "mug-1.jpg"
    photo.write_bytes(photo_variant(0))  # 480 x 360
    app.page.set_input_files("#file-input", [str(photo)])

    card = app.page.locator(".card[data-review]")
    expect(card).to_have_count(1, timeout=60_000)
    expect(card.locator("[data-field=status]")).to_have_text("Needs a look")
    expect(card).not_to_contain_text("Done")
    expect(card.locator("[data-field=reasons] li")).to_have_text([
        "The cut-out touches the edge of the photo: part of the product may be missing.",
        "The outline of the product is unclear against this background.",
    ])
    # The compliance checks in words: which passed, which failed and by how much.
    card.locator("[data-field=checks-summary]").click()
    expect(card.locator("[data-field=checks-summary]")).to_have_text("Marketplace checks: 3 passed, 1 failed")
    fill = card.locator("li[data-check=fill]")
    expect(fill).to_have_attribute("data-state", "failed")
    expect(fill).to_have_text("Product size in the frame: failed, 62 % of the frame (expected 80 %–95 %)")
    expect(card.locator("li[data-check=background_white]")).to_have_text(
        "Pure white background: passed, no off-white pixels")
    save_screenshot(app, tmp_path, "review-card.png")

    card.get_by_role("button", name="Mark the product mug-1.jpg").click()
    dialog = app.page.locator("#compare")
    expect(dialog).to_be_visible()
    expect(dialog.locator("[data-field=compare-after]")).to_have_attribute("src", BLOB)
    app.page.wait_for_function("document.querySelector('#compare [data-field=compare-after]').naturalWidth > 0")
    send = dialog.get_by_role("button", name="Send again with this box")
    expect(send).to_be_disabled()
    drag_box(app, (0.2, 0.25, 0.8, 0.75))
    box = drawn_box(app)
    assert close_to(box, [96, 90, 384, 270]), box  # screen drag mapped to the photo's own pixels
    expect(dialog.locator("[data-field=box]")).to_be_visible()
    expect(send).to_be_enabled()
    save_screenshot(app, tmp_path, "review.png")

    send.click()
    expect(dialog).to_be_hidden()
    expect(app.cards()).to_have_count(2)
    expect(app.page.locator(".card[data-status=completed]:not([data-review])")).to_have_count(1, timeout=60_000)
    expect(app.page.locator(".card:not([data-review]) [data-field=status]")).to_have_text("Done")
    first, second = tasks_of(seller)
    assert first.needs_review is True and first.options["hint_box"] is None  # its history is kept
    assert second.needs_review is False and second.options["hint_box"] == box
    assert {k: v for k, v in second.options.items() if k != "hint_box"} == {
        k: v for k, v in first.options.items() if k != "hint_box"}
    assert second.input_image.read() == first.input_image.read()
    assert app.detail_requests() == []


def test_a_refused_photo_can_be_marked_and_sent_again(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path  # noqa: F811
) -> None:
    server = live_server_factory(REVIEW)
    app = App(browser, server, seller, width=390)  # phone width: the dialog stacks photo and form
    app.sign_in()
    app.live()
    flat = tmp_path / "plain.png"
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 200, 200)).save(buf, "PNG")
    flat.write_bytes(buf.getvalue())
    app.page.set_input_files("#file-input", [str(flat)])

    card = app.cards("failed")
    expect(card).to_have_count(1, timeout=60_000)
    expect(card.locator("[data-field=error]")).to_contain_text("No product was found in this photo")
    expect(card.get_by_role("button", name="Compare plain.png")).to_be_hidden()
    card.get_by_role("button", name="Mark the product plain.png").click()
    dialog = app.page.locator("#compare")
    expect(dialog.locator("[data-field=compare-after-figure]")).to_be_hidden()
    send = dialog.get_by_role("button", name="Send again with this box")
    # Typing works too (keyboard users); a box too small to frame anything cannot be sent.
    app.page.locator("#hint-box").fill("10,10,14,14")
    expect(send).to_be_disabled()
    app.page.locator("#hint-box").fill("30,20,270,180")
    expect(dialog.locator("[data-field=box]")).to_be_visible()
    expect(send).to_be_enabled()
    save_screenshot(app, tmp_path, "review-phone.png")
    print("screenshot:", tmp_path / "review-phone.png")
    send.click()
    expect(app.cards("completed")).to_have_count(1, timeout=60_000)
    refused, retried = tasks_of(seller)
    assert refused.status == "failed" and refused.error_code == "no_product_found"
    assert retried.status == "completed" and retried.options["hint_box"] == [30, 20, 270, 180]
