"""The CLI: its presets, and photos by URL (``submit --url``, ``batch`` from a file of URLs) against a real
daphne + worker that fetch them from a photo server on loopback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from generation.models import Batch, GenerationTask
from imagegen_client.batch import read_urls
from imagegen_client.cli import PRESETS, main

from tests.loopback_http import Script, running

from .conftest import photo_variant
from .photo_server import FETCH_ENV, serve_photos
from .test_client_live import run_cli

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_cli_offers_exactly_the_servers_presets() -> None:
    server = pytest.importorskip("generation.engine.presets", reason="the server is not in this tree")
    assert sorted(PRESETS) == sorted(server.PRESETS)


def test_a_url_list_skips_blank_lines_comments_and_repeats_and_keeps_fragments(tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("\ufeff# spring catalogue\nhttps://shop.example/a.jpg\n\n  https://shop.example/b.jpg#v2  \n"
                       "https://shop.example/a.jpg\n", encoding="utf-8")

    assert read_urls(listing) == ["https://shop.example/a.jpg", "https://shop.example/b.jpg#v2"]


def test_submit_url_wait_fetches_the_photo_and_prints_the_finished_task(
    live_server_factory: Any, seller: Any, tmp_path: Path
) -> None:
    server = live_server_factory(**FETCH_ENV)
    with serve_photos({"/p/shoe.jpg": photo_variant(2)}) as (base, hits):
        code, out, err = run_cli(server, seller, "submit", "--url", f"{base}/p/shoe.jpg", "--wait",
                                 "--preset", "etsy", "--out", str(tmp_path / "result"))

    assert code == 0, err
    task = json.loads(out)
    assert (task["status"], task["image_url"], task["options"]["preset"]) == ("completed", f"{base}/p/shoe.jpg", "etsy")
    assert hits == ["/p/shoe.jpg"]
    assert (tmp_path / "result.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("args", [(), ("shoe.jpg", "--url", "https://shop.example/shoe.jpg")])
def test_submit_needs_exactly_one_of_a_photo_and_a_url(args: tuple[str, ...], capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--url", "http://127.0.0.1:9", "--api-key", "unused", "submit", *args])

    assert exited.value.code == 2  # a usage error, before anything is sent
    assert "give a photo to upload or --url" in capsys.readouterr().err


def test_a_file_of_urls_goes_up_as_batches_leaves_out_a_refused_url_and_is_not_sent_twice(
    live_server_factory: Any, seller: Any, tmp_path: Path
) -> None:
    server = live_server_factory(**FETCH_ENV)
    photos = {f"/catalogue/sku-{i}.jpg": photo_variant(i) for i in range(3)}
    out_dir = tmp_path / "out"
    with serve_photos(photos) as (base, hits):
        listing = tmp_path / "urls.txt"
        listing.write_text("\n".join([*(base + path for path in photos), "ftp://shop.example/x.jpg"]) + "\n")

        code, out, err = run_cli(server, seller, "batch", str(listing), "--out", str(out_dir), "--chunk-size", "2")
        assert code == 1, err  # the ftp:// URL was refused at submit, and the run says so
        again, _, err = run_cli(server, seller, "batch", str(listing), "--out", str(out_dir), "--chunk-size", "2")

    assert again == 1, err
    batches = list(Batch.objects.filter(user=seller).order_by("id"))
    assert [b.total for b in batches] == [2, 1]  # [sku-0, sku-1], then [sku-2] once ftp:// was left out
    assert [b.status for b in batches] == ["completed", "completed"]
    assert GenerationTask.objects.filter(user=seller).count() == 3  # nothing submitted twice
    assert sorted(hits) == sorted(photos)  # each fetched once, by the worker
    names: list[str] = []
    for path in sorted(out_dir.glob("batch-*.zip")):
        with zipfile.ZipFile(path) as archive:
            names += [n for n in archive.namelist() if n != "manifest.csv"]
    assert sorted(names) == ["sku-0.jpg", "sku-1.jpg", "sku-2.jpg"]
    assert "3 done" in out and "ftp://shop.example/x.jpg" in out


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # `imagegen list | head -1`: the reader is gone; a traceback on stderr is noise, not news.
    script = Script()
    page = {"count": 2, "next": None, "previous": None, "last_seq": 2,
            "results": [{"id": 2, "status": "completed"}, {"id": 1, "status": "completed"}]}
    script.routes["/api/tasks/"] = (200, {"Content-Type": "application/json"}, json.dumps(page).encode())
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    with running("127.0.0.1", script) as base:
        done = subprocess.run([sys.executable, "-m", "imagegen_client", "--url", base, "--api-key", "igk_x", "list"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parents[2])
    os.close(write_end)
    assert script.hits == ["/api/tasks/"]
    assert (done.returncode, done.stderr) == (1, "")
