"""The ``gemini`` backend: Gemini's image model puts the product on white, our pipeline finishes it.

Steps, with the progress reported at each real boundary:

1. decode the upload and segment its product *before* paying for a call (no
   product found locally means nothing to compare the answer with);
2. send a downscaled, upright JPEG of it with the prompt (10 %);
3. read the answer (60 %): a blocked prompt or a safety finish is a permanent
   ``safety_block``; an answer without an image part is ``no_image_returned``
   (transient: the worker retries it, then fails the task);
4. segment the product in the answer and compare it with the input's
   (``fidelity.compare_products``); an altered product fails the task with
   ``product_altered`` or, in ``flag`` mode, is recorded in the compliance report;
5. run the same finishing steps as the local backend for every output of the
   task (``compose.finish_all``: exact white, crop, fill, centre, encode and
   check the written bytes, up to 90 %), add the fidelity check to each
   output's compliance report, then 100 %. One model call serves every output.

The SDK's own retries stay off (no ``HttpRetryOptions``): the worker retries
transient errors with backoff, and two retry layers would multiply the waits.

Right before each call the fleet-wide gate (``IMAGEGEN_GEMINI_RPM``, when the
worker installed one) is asked for a slot; without one, and after a 429 that
names its delay (``RetryInfo`` or ``Retry-After``, which also holds the whole
fleet back that long), the backend raises ``UpstreamBusy``: the task waits, it
does not fail.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from types import ModuleType
from typing import Any, Mapping

import numpy as np
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from PIL import Image

from . import provenance
from .base import BackendConfig, EngineError, GenerationResult, ProgressCallback, UpstreamBusy
from .compose import finish_all
from .decode import load_rgb_alpha
from .fidelity import FidelityReport, FidelityThresholds, compare_products
from .cut import cut_product
from .encode import encode_mask
from .saliency import get_segmenter
from .spec import JobSpec

logger = logging.getLogger(__name__)

PROMPT = (
    "Product photo editing for an online marketplace listing. Place this exact product on a "
    "pure white background (RGB 255, 255, 255). Keep the product itself completely unchanged: "
    "the same shape, proportions, colours, materials, texture, printed text, labels and logos; "
    "do not redraw, restyle, retouch, add or remove anything on it, and do not change the "
    "viewing angle. Remove everything that is not the product (background, props, hands, "
    "surfaces and shadows cast on them). Keep the whole product in frame and uncropped. "
    "Return only the edited image."
)

#: The long side of the image sent. The model works at about 1 MP and answers
#: near 1024 px, so more only costs upload time (and the inline-data request
#: limit is 20 MB).
REQUEST_MAX_SIDE = 1536
REQUEST_JPEG_QUALITY = 95

FIDELITY_MODES = ("fail", "flag")

# A refusal of the model to draw the image, as opposed to "it drew nothing".
_SAFETY_FINISH_REASONS = {
    types.FinishReason.SAFETY,
    types.FinishReason.BLOCKLIST,
    types.FinishReason.PROHIBITED_CONTENT,
    types.FinishReason.SPII,
    types.FinishReason.IMAGE_SAFETY,
    types.FinishReason.IMAGE_PROHIBITED_CONTENT,
}


def _http_modules() -> list[ModuleType]:
    # The SDK sends through httpx2 when it is installed and httpx otherwise;
    # their exceptions are unrelated classes, so catch both.
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(__import__(name))
        except ImportError:
            pass
    return found


_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = tuple(m.TimeoutException for m in _http_modules())
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = tuple(m.TransportError for m in _http_modules())


class GeminiBackend:
    name = "gemini"

    def __init__(self, config: BackendConfig) -> None:
        if config.fidelity_mode not in FIDELITY_MODES:
            raise ValueError(f"fidelity_mode must be one of {FIDELITY_MODES}, not {config.fidelity_mode!r}")
        if config.gemini_timeout_ms <= 0:
            raise ValueError(f"gemini_timeout_ms must be positive, not {config.gemini_timeout_ms!r}")
        self.config = config
        self.fidelity_thresholds = FidelityThresholds(**config.extra.get("fidelity_thresholds", {}))
        self.segmenter = get_segmenter(config.segmenter)
        self._client: genai.Client | None = None
        if config.gemini_api_key:
            # One long-lived client per backend (and so per worker thread): a
            # client made per call can be garbage-collected mid-request.
            self._client = genai.Client(
                api_key=config.gemini_api_key,
                vertexai=False,
                http_options=types.HttpOptions(
                    base_url=config.gemini_base_url or None,
                    api_version=config.gemini_api_version or None,
                    timeout=config.gemini_timeout_ms,  # milliseconds
                ),
            )

    def engine_info(self) -> dict[str, str | None]:
        """Provenance: the segmenter that made the mask and judged fidelity, and the image model."""
        return provenance(self.name, self.segmenter, upstream_model=self.config.gemini_model)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def generate(
        self, image: bytes, job: JobSpec, progress: ProgressCallback
    ) -> GenerationResult:
        """The finished marketplace image, with ``checks["product_fidelity"]`` in its compliance.

        Raises :class:`EngineError`: ``upstream_timeout``/``upstream_error``
        (transient for timeouts, network, 429 and 5xx), ``safety_block``,
        ``no_image_returned`` (transient), ``product_altered`` and the local
        pipeline's own codes (``invalid_image``, ``no_product_found``...).
        Anything raised by ``progress`` propagates untouched.
        """
        if self._client is None:
            raise EngineError(
                "upstream_error", "The Gemini backend has no API key: set GEMINI_API_KEY.", transient=False
            )
        rgb, alpha = load_rgb_alpha(image)
        # The input's cut is made before paying for a call: a photo with no
        # product fails here, free. It is also the task's mask.
        in_cut = cut_product(rgb, alpha, hint_box=job.hint_box, segmenter=self.segmenter)

        request_image = _request_jpeg(rgb, alpha)
        progress(10)
        self._admit()
        started = time.monotonic()
        try:
            response = self._call(request_image)
        finally:
            if self.config.gemini_rate_gate is not None:
                self.config.gemini_rate_gate.finished()
        logger.info(
            "Gemini %s answered in %dms", self.config.gemini_model, (time.monotonic() - started) * 1000
        )
        progress(60)

        out_rgb, out_alpha = _decode_answer(_image_bytes(response))
        try:
            # The same segmenter on the answer: a shadow the model drew is told
            # apart from the product, so `shadow` applies to it like to a photo's.
            out_cut = cut_product(out_rgb, out_alpha, segmenter=self.segmenter)
        except EngineError as exc:
            if exc.code != "no_product_found":
                raise
            # Even in "flag" mode: with no product there is nothing to finish.
            raise EngineError(
                "product_altered", "The generated image does not show the product any more.", transient=False
            ) from exc

        report = compare_products(rgb, in_cut.matte, out_rgb, out_cut.matte, self.fidelity_thresholds)
        if not report.passed:
            logger.warning("Gemini altered the product (%s): %s", self.config.fidelity_mode, report.as_check())
            if self.config.fidelity_mode == "fail":
                raise EngineError("product_altered", report.describe(), transient=False)

        # The same finishing as the local backend; it reports 70 (composed) and 90 (encoded, checked).
        # The answer's own geometry: with fit=original the cut-out has the answer's size.
        # One model call for every output: its answer is cut once and rendered per output,
        # each report carrying the same fidelity check.
        result = finish_all(out_rgb, out_cut, job, progress, straight_alpha=out_alpha is not None, start=60)
        outputs = tuple(
            dataclasses.replace(o, compliance=_with_fidelity(o.compliance, report, o.preset)) for o in result.outputs
        )
        result = dataclasses.replace(
            result, compliance=outputs[0].compliance, outputs=outputs,
            mask=encode_mask(in_cut.matte), engine=self.engine_info(),
        )
        progress(100)
        return result

    def _admit(self) -> None:
        """Take a slot of the fleet's Gemini rate, immediately before the call it counts."""
        gate = self.config.gemini_rate_gate
        if gate is None:
            return
        wait = gate.acquire()
        if wait > 0:
            raise UpstreamBusy(wait, f"Waiting {wait:.1f} s for a slot of the fleet's Gemini rate limit.")

    def _call(self, request_image: bytes) -> types.GenerateContentResponse:
        """One generateContent call, its failures mapped to :class:`EngineError`."""
        assert self._client is not None
        try:
            return self._client.models.generate_content(
                model=self.config.gemini_model,
                contents=[types.Part.from_bytes(data=request_image, mime_type="image/jpeg"), PROMPT],
                config=types.GenerateContentConfig(
                    response_modalities=["IMAGE"],
                    candidate_count=1,
                    # No tools are declared; off, it cannot turn one call into several.
                    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
                ),
            )
        except genai_errors.APIError as exc:
            delay = retry_delay_seconds(exc) if exc.code == 429 else None
            if delay is not None:
                gate = self.config.gemini_rate_gate
                wait = gate.pause(delay) if gate is not None else delay
                raise UpstreamBusy(wait, f"Gemini asked to wait {delay:.1f} s (429).") from exc
            raise _api_error(exc) from exc
        except _TIMEOUT_ERRORS as exc:
            raise EngineError(
                "upstream_timeout",
                f"Gemini did not answer within {self.config.gemini_timeout_ms / 1000:g} s.",
                transient=True,
            ) from exc
        except _TRANSPORT_ERRORS as exc:
            raise EngineError(
                "upstream_error", f"Could not reach Gemini: {type(exc).__name__}: {exc}", transient=True
            ) from exc
        except (json.JSONDecodeError, genai_errors.UnknownApiResponseError) as exc:
            # A proxy's HTML error page or a cut-off body: the next try may well work.
            raise EngineError("upstream_error", "Gemini sent an unreadable answer.", transient=True) from exc


#: A named delay longer than this is taken as this: a task re-checks at least hourly.
MAX_RETRY_DELAY = 3600.0
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def retry_delay_seconds(exc: genai_errors.APIError) -> float | None:
    """The delay a 429 names: Google's ``RetryInfo`` detail (``"retryDelay": "17s"``) or an
    HTTP ``Retry-After`` header (seconds). None when it names none (the SDK itself ignores both)."""
    body = exc.details if isinstance(exc.details, dict) else {}
    error = body.get("error", body)
    for detail in (error.get("details") if isinstance(error, dict) else None) or []:
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            raw = detail.get("retryDelay")
            try:
                if isinstance(raw, str) and raw.endswith("s"):
                    return min(max(float(raw[:-1]), 0.0), MAX_RETRY_DELAY)
                if isinstance(raw, dict):
                    seconds = float(raw.get("seconds", 0)) + float(raw.get("nanos", 0)) / 1e9
                    return min(max(seconds, 0.0), MAX_RETRY_DELAY)
            except (TypeError, ValueError):
                pass
    headers = getattr(getattr(exc, "response", None), "headers", None)
    header = headers.get("retry-after") if headers is not None else None
    if header is not None:
        try:
            return min(max(float(header), 0.0), MAX_RETRY_DELAY)
        except ValueError:
            return None  # an HTTP date: rare from Google; treated as no delay named
    return None


def _api_error(exc: genai_errors.APIError) -> EngineError:
    """Map an HTTP error answer: 429/5xx/408 may pass, other 4xx will not without a fix."""
    status = exc.code or 0
    upstream = f"{status} {exc.status or ''}: {str(exc.message or '')[:300]}".strip()
    if status in (408, 504):
        return EngineError("upstream_timeout", f"Gemini timed out ({upstream}).", transient=True)
    if status == 429:
        return EngineError("upstream_error", f"Gemini rate limit or quota reached ({upstream}).", transient=True)
    if status >= 500:
        return EngineError("upstream_error", f"Gemini is unavailable ({upstream}).", transient=True)
    if status in (401, 403):
        hint = "check GEMINI_API_KEY and that the key may use this model"
    elif status == 404:
        hint = "check GEMINI_MODEL and GEMINI_API_VERSION"
    else:
        hint = "the request was refused"
    return EngineError("upstream_error", f"Gemini rejected the request ({upstream}); {hint}.", transient=False)


def _request_jpeg(rgb: np.ndarray, alpha: np.ndarray | None) -> bytes:
    """The upright, downscaled JPEG sent to the model; a cut-out is first put on white."""
    im = Image.fromarray(rgb)
    if alpha is not None:
        white = Image.new("RGB", im.size, (255, 255, 255))
        im = Image.composite(im, white, Image.fromarray(alpha))
    if max(im.size) > REQUEST_MAX_SIDE:
        im.thumbnail((REQUEST_MAX_SIDE, REQUEST_MAX_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=REQUEST_JPEG_QUALITY)
    return buf.getvalue()


def _image_bytes(response: types.GenerateContentResponse) -> bytes:
    """The image of the answer, or the right :class:`EngineError` for its absence."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        detail = feedback.block_reason_message or feedback.block_reason
        raise EngineError("safety_block", f"Gemini blocked the request ({detail}).", transient=False)
    texts: list[str] = []
    finish_reason: Any = None
    for candidate in response.candidates or []:
        finish_reason = candidate.finish_reason
        if finish_reason in _SAFETY_FINISH_REASONS:
            raise EngineError(
                "safety_block", f"Gemini refused to draw the image ({finish_reason.value}).", transient=False
            )
        parts = (candidate.content.parts if candidate.content else None) or []
        # Thinking models may send draft images flagged as thoughts; the final one comes last.
        for part in reversed(parts):
            blob = part.inline_data
            if not part.thought and blob and blob.data and (blob.mime_type or "").startswith("image/"):
                return blob.data
        texts += [p.text for p in parts if p.text]
    said = f'; it said: "{" ".join(texts)[:200]}"' if texts else ""
    reason = getattr(finish_reason, "value", finish_reason) or "none"
    raise EngineError(
        "no_image_returned", f"Gemini answered without an image (finish reason {reason}){said}.", transient=True
    )


def _decode_answer(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        return load_rgb_alpha(data)
    except EngineError as exc:
        if exc.code != "invalid_image":
            raise
        raise EngineError("no_image_returned", "Gemini returned an unreadable image.", transient=True) from exc


def _with_fidelity(
    compliance: dict[str, Any] | None, report: FidelityReport, preset: str
) -> dict[str, Any]:
    """The compliance report with the fidelity check added.

    An altered product that reached this point (``flag`` mode) also fails the
    report as a whole and is repeated under ``"fidelity"``: a listing that shows
    another product is not marketplace-ready, whatever its background.
    """
    out = dict(compliance or {"preset": preset, "passed": True, "checks": {}})
    check = report.as_check()
    check["status"] = "passed" if check["passed"] else "failed"
    out["checks"] = {**(out.get("checks") or {}), "product_fidelity": check}
    if not report.passed:
        out["fidelity"] = check
        out["passed"] = False
    return out
