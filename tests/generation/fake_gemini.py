"""A local stand-in for Gemini's ``generateContent`` endpoint, driven by the real SDK in tests.

It speaks the REST wire format (``POST /{version}/models/{model}:generateContent``),
accepts the input image as standard or URL-safe base64 under ``inline_data`` or
``inlineData`` (the SDK sends snake case and URL-safe; other clients send camel
case), records every request, and answers as ``scenario`` says:

====================  ==========================================================
``image``             the input re-rendered on an off-white (250) background
                      with a little noise, scaled by ``output_scale``: the
                      product kept, as a faithful model would return it
``kept_shadow``       like ``image``, plus a soft contact shadow under the
                      product and a slight relighting (faithful, and what
                      real models often return)
``redrawn``           an ellipse of another colour where the product was
``recoloured``        the same product with its red and blue channels swapped
``bad_image``         an image part whose bytes are not an image
``http_400`` ...      that HTTP status with a Google-style error body
                      (400, 401, 403, 404, 429, 500, 503, 504)
``delay``             waits ``delay_s`` seconds, then answers like ``image``
``blocked``           ``promptFeedback.blockReason`` and no candidates
``image_safety``      a candidate with ``finishReason: IMAGE_SAFETY`` and no parts
``text_only``         a candidate whose only part is text
``not_json``          a 200 whose body is HTML, as a misrouted proxy would send
====================  ==========================================================

The ``delay`` wait is an :class:`threading.Event` that :meth:`FakeGemini.stop`
sets, so a test never waits for it to run out.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import cv2
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

_PATH = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):generateContent$")
_HTTP_ERRORS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request is missing required authentication credential."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
    404: ("NOT_FOUND", "models/unknown is not found for API version v1beta."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
OFF_WHITE = 250


def b64decode_any(text: str) -> bytes:
    """Standard or URL-safe base64, with or without padding."""
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass
class RecordedRequest:
    path: str
    version: str
    model: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]
    #: time.time() when the request arrived (the fleet's rate is checked against these).
    at: float = field(default_factory=time.time)

    def _parts(self) -> list[dict[str, Any]]:
        return [p for c in self.body.get("contents", []) for p in c.get("parts", [])]

    def inline_images(self) -> list[tuple[str, bytes]]:
        """``(mime_type, bytes)`` of every inline image, whatever the casing."""
        found = []
        for part in self._parts():
            blob = part.get("inline_data") or part.get("inlineData")
            if blob:
                mime = blob.get("mime_type") or blob.get("mimeType") or ""
                found.append((mime, b64decode_any(blob["data"])))
        return found

    def texts(self) -> list[str]:
        return [p["text"] for p in self._parts() if "text" in p]


@dataclass
class FakeGemini:
    scenario: str = "image"
    delay_s: float = 2.0
    output_scale: float = 0.8
    requests: list[RecordedRequest] = field(default_factory=list)
    #: Scenarios for the next requests, in order, before ``scenario`` applies again.
    script: list[str] = field(default_factory=list)
    #: With ``http_429``: the ``RetryInfo`` delay to name (e.g. ``"3s"``), or None for none.
    retry_delay: str | None = None

    def __post_init__(self) -> None:
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeGemini:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()  # let a "delay" answer go now, not delay_s later
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def wait_released(self) -> bool:
        return self._released.wait(self.delay_s)

    # --- answers ---------------------------------------------------------------

    def answer(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        """``(status, JSON body)`` for ``request`` under the current scenario."""
        with self._lock:
            scenario = self.script.pop(0) if self.script else self.scenario
        if scenario.startswith("http_"):
            status = int(scenario.removeprefix("http_"))
            name, message = _HTTP_ERRORS[status]
            error: dict[str, Any] = {"code": status, "message": message, "status": name}
            if status == 429 and self.retry_delay is not None:
                error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": self.retry_delay}]
            return status, {"error": error}
        if scenario == "blocked":
            return 200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "modelVersion": request.model}
        if scenario == "image_safety":
            return 200, _candidate({"role": "model"}, "IMAGE_SAFETY", request.model)
        if scenario == "text_only":
            parts = [{"text": "I can't help with editing this image."}]
            return 200, _candidate({"role": "model", "parts": parts}, "STOP", request.model)
        if scenario == "delay":
            self.wait_released()
            scenario = "image"
        images = request.inline_images()
        if not images:
            return 400, {"error": {"code": 400, "message": "No image in the request.", "status": "INVALID_ARGUMENT"}}
        source = np.asarray(Image.open(io.BytesIO(images[0][1])).convert("RGB"))
        if scenario == "bad_image":
            data = b"\x89PNG\r\n\x1a\n this is not really a PNG"
        else:
            data = _encode_png(render(source, scenario, self.output_scale))
        parts = [
            {"text": "Here is your product on a white background."},
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}},
        ]
        return 200, _candidate({"role": "model", "parts": parts}, "STOP", request.model)


def _candidate(content: dict[str, Any], finish: str, model: str) -> dict[str, Any]:
    return {
        "candidates": [{"content": content, "finishReason": finish, "index": 0}],
        "usageMetadata": {"promptTokenCount": 1290, "candidatesTokenCount": 1290, "totalTokenCount": 2580},
        "modelVersion": model,
    }


def _encode_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def backdrop_colour(rgb: np.ndarray) -> np.ndarray:
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
    return np.median(border, axis=0)


def product_mask(rgb: np.ndarray, tolerance: float = 40.0) -> np.ndarray:
    """Pixels far from the border's median colour: good enough for a plain synthetic
    backdrop (use ``scenes.plain``/``shadowed``/``transparent``, not a gradient or wood)."""
    return np.linalg.norm(rgb.astype(np.float32) - backdrop_colour(rgb), axis=2) > tolerance


def render(source: np.ndarray, scenario: str, scale: float) -> np.ndarray:
    """What the fake model draws for ``source``: see the module docstring."""
    rng = np.random.default_rng(1)
    mask = product_mask(source)
    out = np.full(source.shape, float(OFF_WHITE), dtype=np.float32)
    out += rng.normal(0.0, 1.0, source.shape)
    if scenario == "image":
        # Antialiased like a real rendering: edge pixels trade their share of
        # the old backdrop for the new one instead of being cut at a threshold.
        coverage = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)[..., None]
        swapped = source + (1.0 - coverage) * (OFF_WHITE - backdrop_colour(source))
        near = coverage[..., 0] > 0.02
        out[near] = swapped[near] + rng.normal(0.0, 2.0, (int(near.sum()), 3))
    elif scenario == "kept_shadow":
        coverage = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)[..., None]
        ys, xs = np.nonzero(mask)
        shadow = np.zeros(mask.shape, np.float32)
        half = int(0.6 * (xs.max() - xs.min()))
        cv2.ellipse(shadow, (int(xs.mean()), int(ys.max())), (half, max(3, mask.shape[0] // 40)), 0, 0, 360, 0.5, -1)
        shadow = cv2.GaussianBlur(shadow, (0, 0), mask.shape[0] / 80) * (1.0 - coverage[..., 0])
        out *= (1.0 - shadow)[..., None]
        relit = source * 1.06 + 4.0 + (1.0 - coverage) * (OFF_WHITE - backdrop_colour(source))
        near = coverage[..., 0] > 0.02
        out[near] = relit[near] + rng.normal(0.0, 2.0, (int(near.sum()), 3))
    elif scenario == "recoloured":
        out[mask] = source[mask][:, ::-1]
    elif scenario == "redrawn":
        ys, xs = np.nonzero(mask)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        ry, rx = (ys.max() - ys.min()) / 2, (xs.max() - xs.min()) / 3
        yy, xx = np.mgrid[: source.shape[0], : source.shape[1]]
        ellipse = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        out[ellipse] = (40, 160, 70)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    out_u8 = np.clip(out, 0, 255).astype(np.uint8)
    if scale != 1.0:
        h, w = out_u8.shape[:2]
        resized = Image.fromarray(out_u8).resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
        out_u8 = np.asarray(resized)
    return out_u8


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeGemini

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        logger.debug("fake gemini: " + format, *args)

    def do_POST(self) -> None:
        match = _PATH.match(self.path.split("?", 1)[0])
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not match:
            return self._send(404, {"error": {"code": 404, "message": f"No route {self.path}", "status": "NOT_FOUND"}})
        request = RecordedRequest(
            path=self.path,
            version=match["version"],
            model=match["model"],
            headers={k.lower(): v for k, v in self.headers.items()},
            body=json.loads(raw or b"{}"),
        )
        fake = self.server_fake
        fake.record(request)
        if fake.scenario == "not_json":
            return self._send_raw(200, b"<html><body>Gateway</body></html>", "text/html")
        status, body = fake.answer(request)
        self._send(status, body)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        self._send_raw(status, json.dumps(body).encode(), "application/json; charset=UTF-8")

    def _send_raw(self, status: int, payload: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (the timeout scenario): nothing to answer.
            pass
