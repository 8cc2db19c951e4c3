"""The page's batches in Debian's Chromium: a folder as one batch, live progress, the archive."""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from generation.models import Batch, GenerationTask

from .conftest import SLOW
from .test_browser import CHROMIUM, App, browser, expect, in_thread, save_screenshot, write_photos  # noqa: F401

BATCH_DETAIL = re.compile(r"/api/batches/\d+/")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not at /usr/bin/chromium"),
]


def test_a_dropped_folder_becomes_one_batch_followed_live_and_its_archive_downloads(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path
) -> None:
    server = live_server_factory(SLOW, TEST_BACKEND_SECONDS="1")
    folder = tmp_path / "catalogue"
    folder.mkdir()
    write_photos(folder, 3)
    (folder / "notes.txt").write_text("not a photo: the page leaves it out")
    app = App(browser, server, seller)
    app.sign_in()
    app.live()

    app.page.set_input_files("#folder-input", str(folder))  # a webkitdirectory input: the whole folder

    card = app.page.locator("#batches .batch")
    expect(card).to_have_count(1, timeout=30_000)
    expect(card).to_contain_text("3 photos")
    expect(card.locator("[data-field=counts]")).to_contain_text("working", timeout=30_000)
    expect(card.locator("[data-field=status]")).to_have_text("completed", timeout=60_000)
    expect(card.locator("[data-field=counts]")).to_contain_text("3 done")
    expect(card.locator("progress")).to_have_attribute("value", "100")
    batch = in_thread(lambda: Batch.objects.get(user=seller))
    assert batch.total == 3 and batch.status == "completed"
    # Progress came from batch events: the page never asked for the batch again.
    assert [r for r in app.requests if BATCH_DETAIL.fullmatch(r[1])] == []
    save_screenshot(app, tmp_path, "batch.png")

    with app.page.expect_download() as download_info:
        card.get_by_role("button", name="Download archive").click()
    download = download_info.value
    assert download.suggested_filename == f"batch-{batch.pk}.zip"
    archive = zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes()))
    assert sorted(archive.namelist()) == ["manifest.csv", "mug-1.jpg", "mug-2.jpg", "mug-3.jpg"]


def test_a_batch_with_a_bad_photo_names_it_and_creates_nothing(
    live_server_factory: Any, seller: Any, browser: Any, tmp_path: Path
) -> None:
    server = live_server_factory()
    photos = write_photos(tmp_path, 2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    app = App(browser, server, seller)
    app.sign_in()
    app.live()

    app.page.set_input_files("#batch-files", [str(p) for p in [*photos, broken]])

    error = app.page.locator("#batch-error")
    expect(error).to_be_visible(timeout=30_000)
    expect(error).to_contain_text("Nothing was sent")
    expect(error.locator("li")).to_have_count(1)
    expect(error.locator("li")).to_contain_text("broken.jpg")
    expect(app.page.locator("#batches .batch")).to_have_count(0)
    assert in_thread(lambda: (Batch.objects.count(), GenerationTask.objects.count())) == (0, 0)
