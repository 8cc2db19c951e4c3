"""Client pieces that need no server: keys, file naming, error details, CLI arguments."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from imagegen_client import Client, ImagegenError
from imagegen_client.batch import chunk_key, discover
from imagegen_client.cli import build_parser


def test_the_batch_key_depends_on_the_photos_bytes_and_names_and_the_options(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"photo a")
    b.write_bytes(b"photo b")
    key = chunk_key([a, b], {"preset": "amazon"})

    assert key == chunk_key([a, b], {"preset": "amazon"})
    assert key != chunk_key([a, b], {"preset": "etsy"})
    assert key != chunk_key([b, a], {"preset": "amazon"})
    assert key != chunk_key([a], {"preset": "amazon"})
    b.write_bytes(b"photo b, edited")
    assert key != chunk_key([a, b], {"preset": "amazon"})
    assert len(key) <= 255  # the server's limit


def test_discover_lists_only_photos_in_name_order(tmp_path: Path) -> None:
    for name in ("shoe.jpg", "Bag.WEBP", "notes.txt", ".hidden.part", "hat.heic"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.jpg").mkdir()

    assert [p.name for p in discover(tmp_path)] == ["Bag.WEBP", "hat.heic", "shoe.jpg"]


def test_server_errors_carry_the_detail() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(409, json={"detail": "The task is completed."}))
    client = Client("http://server", token="t", transport=transport)
    with pytest.raises(ImagegenError) as caught:
        client.cancel(3)
    assert (caught.value.status_code, caught.value.detail) == (409, "The task is completed.")


def test_the_cli_reads_its_connection_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_URL", "http://example:9000")
    monkeypatch.setenv("IMAGEGEN_USERNAME", "alice")
    monkeypatch.setenv("IMAGEGEN_PASSWORD", "secret")
    args = build_parser().parse_args(["batch", "photos", "--out", "done", "--chunk-size", "20"])
    assert (args.url, args.username, args.password, args.chunk_size, args.preset) == (
        "http://example:9000", "alice", "secret", 20, "amazon")
    assert build_parser().parse_args(["batch", "photos", "--out", "done"]).chunk_size == 100
    for bad in ("0", "101"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["batch", "photos", "--out", "done", "--chunk-size", bad])


def test_submit_sends_the_engine_options_as_form_fields() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.read())
        return httpx.Response(201, json={"id": 1, "status": "pending"})

    client = Client("http://server", token="t", transport=httpx.MockTransport(handler))
    client.submit(b"PHOTO", filename="a.png", background="transparent", fit="original", shadow="keep",
                  hint_box=(10, 20, 300, 400))
    (body,) = seen
    for name, value in (("background", b"transparent"), ("fit", b"original"), ("shadow", b"keep"),
                        ("hint_box", b"10,20,300,400")):
        assert f'name="{name}"'.encode() + b"\r\n\r\n" + value in body
    assert b'name="preset"' not in body  # unset options are not sent: the server's defaults apply


def test_submit_sends_the_intake_options_and_prefer_wait_with_a_read_timeout_beyond_it() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        request.read()
        return httpx.Response(201, json={"id": 1, "status": "completed"})

    client = Client("http://server", token="t", timeout=10, transport=httpx.MockTransport(handler))
    client.submit(image_url="https://shop.example/p/42.jpg", client_ref="SKU-42", expires_in=600, wait=45)
    (request,) = seen
    body = request.content
    assert request.headers["Prefer"] == "wait=45"
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    for name, value in (("image_url", b"https://shop.example/p/42.jpg"), ("client_ref", b"SKU-42"),
                        ("expires_in", b"600")):
        assert f'name="{name}"'.encode() + b"\r\n\r\n" + value in body
    assert b'name="image"' not in body
    assert request.extensions["timeout"]["read"] >= 45 + 30
    with pytest.raises(ValueError, match="exactly one of image and image_url"):
        client.submit(b"PHOTO", image_url="https://shop.example/p/42.jpg")
    with pytest.raises(ValueError, match="exactly one of image and image_url"):
        client.submit()


def test_a_reused_idempotency_key_raises_with_its_code() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"detail": "This Idempotency-Key was already used", "code": "idempotency_key_reused"})

    client = Client("http://server", token="t", transport=httpx.MockTransport(handler))
    with pytest.raises(ImagegenError) as raised:
        client.submit(b"PHOTO", idempotency_key="k")
    assert (raised.value.status_code, raised.value.code) == (422, "idempotency_key_reused")
