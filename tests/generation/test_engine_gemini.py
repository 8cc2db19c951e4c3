"""The gemini backend, driven through the real google-genai SDK against a local fake server."""
from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.engine.base import BackendConfig, EngineError
from generation.engine.gemini import PROMPT, REQUEST_MAX_SIDE, GeminiBackend
from generation.engine.spec import parse_job
from tests.generation import scenes
from tests.generation.fake_gemini import FakeGemini

API_KEY = "test-key-123"
OPTIONS = parse_job({"preset": "amazon", "size": 1000})


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


def make_backend(base_url: str, **overrides: Any) -> GeminiBackend:
    settings: dict[str, Any] = {
        "gemini_api_key": API_KEY,
        "gemini_base_url": base_url,
        "gemini_api_version": "v1beta",
        "gemini_timeout_ms": 10_000,
        # These tests are about the wire protocol and the error mapping: the fast
        # classical cut is enough (test_engine_fidelity runs the default model).
        "segmenter": "classical",
    }
    return GeminiBackend(BackendConfig(**{**settings, **overrides}))


@pytest.fixture
def backend(fake: FakeGemini) -> Iterator[GeminiBackend]:
    b = make_backend(fake.base_url)
    yield b
    b.close()


@pytest.fixture
def photo() -> bytes:
    return scenes.plain().encode("JPEG", quality=95)


def failure(backend: GeminiBackend, image: bytes, progress: list[int] | None = None) -> EngineError:
    with pytest.raises(EngineError) as info:
        backend.generate(image, OPTIONS, (progress if progress is not None else []).append)
    return info.value


def test_it_returns_a_square_pure_white_image_that_passes_compliance(
    fake: FakeGemini, backend: GeminiBackend, photo: bytes
) -> None:
    progress: list[int] = []
    result = backend.generate(photo, OPTIONS, progress.append)

    assert progress == [10, 60, 78, 90, 100]  # the render step maps into 60..90 (compose.finish_all)
    assert (result.width, result.height, result.content_type) == (1000, 1000, "image/jpeg")
    written = np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB"))
    assert written.shape == (1000, 1000, 3)
    border = np.concatenate([written[:20].reshape(-1, 3), written[-20:].reshape(-1, 3),
                             written[:, :20].reshape(-1, 3), written[:, -20:].reshape(-1, 3)])
    assert (border == 255).all()  # the fake answered on off-white 250: finishing made it exact
    assert result.compliance is not None
    assert result.compliance["passed"] is True
    assert result.compliance["checks"]["product_fidelity"]["passed"] is True
    assert len(fake.requests) == 1


def test_the_request_carries_the_image_the_prompt_and_the_api_key(
    fake: FakeGemini, backend: GeminiBackend, photo: bytes
) -> None:
    backend.generate(photo, OPTIONS, lambda pct: None)

    [request] = fake.requests
    assert (request.version, request.model) == ("v1beta", "gemini-2.5-flash-image")
    assert request.headers["x-goog-api-key"] == API_KEY
    assert PROMPT in request.texts()
    assert "white" in PROMPT and "unchanged" in PROMPT
    [(mime, sent)] = request.inline_images()
    assert mime == "image/jpeg"
    sent_rgb = np.asarray(Image.open(io.BytesIO(sent)).convert("RGB"), dtype=np.float32)
    original = scenes.plain().rgb.astype(np.float32)
    assert sent_rgb.shape == original.shape
    assert np.abs(sent_rgb - original).mean() < 3.0
    assert request.body["generationConfig"]["responseModalities"] == ["IMAGE"]


def test_it_sends_the_photo_upright_and_downscaled(fake: FakeGemini, backend: GeminiBackend) -> None:
    fake.scenario = "http_400"  # only the request matters here
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    photo = scenes.plain(2400, 1800).encode("JPEG", quality=90, exif=exif)

    failure(backend, photo)

    [(_, sent)] = fake.requests[0].inline_images()
    assert Image.open(io.BytesIO(sent)).size == (REQUEST_MAX_SIDE * 1800 // 2400, REQUEST_MAX_SIDE)


def test_it_puts_a_transparent_cut_out_on_white_before_sending(fake: FakeGemini, backend: GeminiBackend) -> None:
    fake.scenario = "http_400"
    failure(backend, scenes.transparent().encode("PNG"))

    [(_, sent)] = fake.requests[0].inline_images()
    corner = np.asarray(Image.open(io.BytesIO(sent)).convert("RGB"))[:10, :10]
    assert corner.min() >= 250  # white, not the black stored under alpha 0


@pytest.mark.parametrize(
    ("scenario", "code", "transient"),
    [
        ("http_429", "upstream_error", True),
        ("http_500", "upstream_error", True),
        ("http_503", "upstream_error", True),
        ("http_504", "upstream_timeout", True),
        ("not_json", "upstream_error", True),
        ("http_400", "upstream_error", False),
        ("http_401", "upstream_error", False),
        ("http_403", "upstream_error", False),
        ("http_404", "upstream_error", False),
        ("blocked", "safety_block", False),
        ("image_safety", "safety_block", False),
        ("text_only", "no_image_returned", True),
        ("bad_image", "no_image_returned", True),
    ],
)
def test_each_upstream_failure_maps_to_its_code_without_sdk_retries(
    fake: FakeGemini, backend: GeminiBackend, photo: bytes, scenario: str, code: str, transient: bool
) -> None:
    fake.scenario = scenario
    progress: list[int] = []

    err = failure(backend, photo, progress)

    assert (err.code, err.transient) == (code, transient)
    assert len(fake.requests) == 1  # the worker owns retries, not the SDK
    assert progress == ([10] if scenario.startswith("http_") or scenario == "not_json" else [10, 60])


@pytest.mark.parametrize(
    ("scenario", "words"),
    [
        ("http_403", ["403", "PERMISSION_DENIED", "GEMINI_API_KEY"]),
        ("http_404", ["404", "GEMINI_MODEL"]),
        ("http_429", ["429", "quota"]),
        ("blocked", ["PROHIBITED_CONTENT"]),
        ("image_safety", ["IMAGE_SAFETY"]),
        ("text_only", ["without an image", "I can't help"]),
    ],
)
def test_the_error_message_says_what_happened(
    fake: FakeGemini, backend: GeminiBackend, photo: bytes, scenario: str, words: list[str]
) -> None:
    fake.scenario = scenario
    message = failure(backend, photo).message
    for word in words:
        assert word in message
    assert API_KEY not in message


def test_it_honours_the_timeout_in_milliseconds(fake: FakeGemini, photo: bytes) -> None:
    # The fake answers after 60 s: read as seconds, 500 would wait for that answer.
    fake.scenario, fake.delay_s = "delay", 60.0
    backend = make_backend(fake.base_url, gemini_timeout_ms=500)
    started = time.monotonic()

    err = failure(backend, photo)

    elapsed = time.monotonic() - started
    assert (err.code, err.transient) == ("upstream_timeout", True)
    assert "0.5 s" in err.message
    assert elapsed < 30, f"gave up after {elapsed:.2f}s, the fake only answers after 60 s"
    backend.close()


def test_a_refused_connection_is_a_transient_upstream_error(photo: bytes) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = make_backend(f"http://127.0.0.1:{port}")

    err = failure(backend, photo)

    assert (err.code, err.transient) == ("upstream_error", True)
    assert "ConnectError" in err.message


def test_without_an_api_key_it_fails_permanently_and_sends_nothing(fake: FakeGemini, photo: bytes) -> None:
    backend = make_backend(fake.base_url, gemini_api_key="")
    err = failure(backend, photo)
    assert (err.code, err.transient) == ("upstream_error", False)
    assert "GEMINI_API_KEY" in err.message
    assert fake.requests == []


def test_a_photo_without_a_findable_product_fails_before_any_call(
    fake: FakeGemini, backend: GeminiBackend
) -> None:
    err = failure(backend, scenes.low_contrast().encode("PNG"))
    assert (err.code, err.transient) == ("no_product_found", False)
    assert fake.requests == []


def test_an_exception_from_the_progress_callback_propagates(backend: GeminiBackend, photo: bytes) -> None:
    class Canceled(Exception):
        pass

    def progress(pct: int) -> None:
        if pct == 60:
            raise Canceled

    with pytest.raises(Canceled):
        backend.generate(photo, OPTIONS, progress)


def test_one_backend_serves_several_calls_with_its_one_client(
    fake: FakeGemini, backend: GeminiBackend, photo: bytes
) -> None:
    client = backend._client
    for _ in range(2):
        assert backend.generate(photo, OPTIONS, lambda pct: None).compliance is not None
    assert backend._client is client
    assert len(fake.requests) == 2


def test_it_refuses_an_unknown_fidelity_mode() -> None:
    with pytest.raises(ValueError, match="fidelity_mode"):
        GeminiBackend(BackendConfig(gemini_api_key=API_KEY, fidelity_mode="ignore"))


def test_several_outputs_cost_one_model_call_and_each_carries_the_fidelity_check(
    fake: FakeGemini, backend: GeminiBackend, photo: bytes
) -> None:
    job = parse_job({"presets": "amazon,taobao,zalando", "size": ""})
    progress: list[int] = []
    result = backend.generate(photo, job, progress.append)
    assert len(fake.requests) == 1
    assert [(o.name, o.width, o.height) for o in result.outputs] == [
        ("amazon", 2000, 2000), ("taobao", 800, 800), ("zalando", 1801, 2600)]
    for output in result.outputs:
        assert output.compliance is not None and output.compliance["passed"] is True, output.compliance
        assert output.compliance["checks"]["product_fidelity"]["passed"] is True
    assert result.compliance == result.outputs[0].compliance and result.data == result.outputs[0].data
    assert progress == sorted(progress) and progress[-1] == 100
