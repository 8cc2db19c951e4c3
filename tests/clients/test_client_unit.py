"""Client pieces that need no server: keys, file naming, error details, CLI arguments."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from imagegen_client import Client, ImagegenError
from imagegen_client.batch import discover, existing_result, idempotency_key
from imagegen_client.cli import build_parser


def test_the_idempotency_key_depends_on_bytes_and_preset_only() -> None:
    assert idempotency_key(b"photo", "amazon") == idempotency_key(b"photo", "amazon")
    assert idempotency_key(b"photo", "amazon") != idempotency_key(b"photo", "etsy")
    assert idempotency_key(b"photo", "amazon") != idempotency_key(b"photo2", "amazon")
    assert len(idempotency_key(b"photo", "amazon")) <= 255  # the server's limit


def test_discover_keeps_colliding_names_apart_and_sees_finished_results(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    for name in ("shoe.jpg", "shoe.png", "bag.webp", "notes.txt"):
        (source / name).write_bytes(b"x")
    (out / "bag.png").write_bytes(b"done")
    (out / ".shoe_jpg.jpg.abc.part").write_bytes(b"half")

    items = discover(source, out)

    assert [(i.source.name, i.output_stem.name) for i in items] == [
        ("bag.webp", "bag"), ("shoe.jpg", "shoe_jpg"), ("shoe.png", "shoe_png"),
    ]
    assert [existing_result(i) for i in items] == [out / "bag.png", None, None]


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
    args = build_parser().parse_args(["batch", "photos", "--out", "done", "--concurrency", "2"])
    assert (args.url, args.username, args.password, args.concurrency, args.preset) == (
        "http://example:9000", "alice", "secret", 2, "amazon")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["batch", "photos", "--out", "done", "--concurrency", "0"])


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
