"""The segmenters ``IMAGEGEN_SEGMENTER`` selects: a learned salient-object model, or none (classical).

``auto`` (the default) is the vendored U²-Net-P (``weights/u2netp.onnx``,
checked against ``weights/SHA256SUMS`` when it is loaded); ``classical``
is the border-model/GrabCut pipeline alone; anything else is the path of an
operator's ONNX model with the U²-Net convention: one 1x3xSxS float32 input
(RGB divided by the image's maximum, then ImageNet mean/std, NCHW) and a first
output whose channel 0 is the saliency map at the same SxS.

A model is loaded once per process and validated then (a bad path, a file
that is not ONNX, the wrong I/O, a checksum mismatch: ``ImproperlyConfigured``),
never in the middle of a task.

It runs on ONNX Runtime, the reference runtime for the format: U²-Net-P's
forward pass takes about half the CPU time of OpenCV's DNN module's faster
engine (the classic one) on these 2 cores, with the same answer to 5e-6
(docs/engine.md, "Runtime"), and it runs operators' exports that OpenCV's
importer does not. One session is shared by the process' threads (``run`` is
thread-safe). A model whose input declares a fixed side (U²-Net-P's 320)
has its height and width made symbolic when it is loaded, in memory only (the
file and its checksum are untouched), so the engine's larger look can run
the fully convolutional network at another side.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "u2netp.onnx"

#: The U²-Net family's input side.
INPUT_SIDE = 320
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _shipped_checksum(path: Path) -> str | None:
    sums = WEIGHTS_DIR / "SHA256SUMS"
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            return parts[0].lower()
    return None


def preprocess(rgb: np.ndarray, side: int = INPUT_SIDE) -> np.ndarray:
    """The U²-Net input blob for ``rgb`` (HxWx3 uint8): 1x3xSxS float32.

    Same steps as rembg, the reference the vendored weights were exported
    for: Lanczos resize to SxS (aspect not kept), divide by the image's
    maximum, ImageNet mean/std.
    """
    small = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
    small /= max(float(small.max()), 1e-6)
    small = (small - _MEAN) / _STD
    return np.ascontiguousarray(small.transpose(2, 0, 1)[None])


class ModelCannotRun(RuntimeError):
    """The model failed on an input (ONNX Runtime's errors share no base class but ``Exception``)."""


#: ONNX Runtime's error types for a model that cannot run an input (a side it cannot take, an
#: operator that fails at run time).
_RUN_ERRORS = tuple(getattr(ort.capi.onnxruntime_pybind11_state, n) for n in (
    "Fail", "InvalidArgument", "RuntimeException", "NotImplemented", "InvalidGraph"))


@dataclass
class Segmenter:
    """What produces the cut: ``name`` is "u2netp", "classical" or the operator's model file name.

    ``path`` is None for the classical pipeline, which has no learned model.
    """

    name: str
    path: Path | None = None
    model_sha256: str | None = None
    side: int = INPUT_SIDE
    session: ort.InferenceSession | None = None
    #: The session's image input and saliency output, read once at load (not per call).
    input_name: str = ""
    output_name: str = ""

    @property
    def model(self) -> str | None:
        return self.path.name if self.path is not None else None

    @property
    def learned(self) -> bool:
        return self.path is not None

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        assert self.session is not None
        try:
            return np.asarray(self.session.run([self.output_name], {self.input_name: blob})[0], np.float32)
        except _RUN_ERRORS as exc:
            raise ModelCannotRun(f"{self.name} at {blob.shape[-1]} px: {exc}") from exc

    def saliency(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """The model's saliency map for ``rgb`` (SxS float32, min-max normalised to 0..1) and its raw range.

        The raw range (max - min of the model's output) is kept because the
        normalisation stretches even a flat, nothing-salient answer to 0..1.
        """
        pred = self._forward(preprocess(rgb, self.side))[0, 0]
        lo, hi = float(pred.min()), float(pred.max())
        if hi - lo < 1e-6:
            return np.zeros_like(pred), 0.0
        return (pred - lo) / (hi - lo), hi - lo


CLASSICAL = Segmenter("classical")


def _session(path: Path) -> ort.InferenceSession:
    """An ONNX Runtime session for the model at ``path``, its image input's height and width symbolic."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError, or onnx's own on a truncated file
        raise ImproperlyConfigured(f"IMAGEGEN_SEGMENTER: {path} is not an ONNX model ({exc}).") from exc
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            # Names, not values: an exported network is traced at one side, but its convolutions
            # and resizes take their shapes from the input at run time.
            dims[2].dim_param, dims[3].dim_param = f"{value.name}_height", f"{value.name}_width"
    options = ort.SessionOptions()
    # One image at a time per call: a worker's threads each run their own call, and ONNX Runtime
    # spreads one call's convolutions over the cores (intra-op threads) already.
    options.inter_op_num_threads = 1
    # Memory patterns pre-plan one block per input shape on top of the arena: +170 MB resident for
    # U²-Net-P at 320 px, and again for 448, with no gain in speed measured here. Without them the
    # process holds what OpenCV's DNN module held (about 276 MB after 320 px calls, 437 after 448).
    options.enable_mem_pattern = False
    options.log_severity_level = 3  # its warnings about unused initialisers are the export's, not ours
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own errors share no public base class
        raise ImproperlyConfigured(f"IMAGEGEN_SEGMENTER: {path} is not an ONNX model ONNX Runtime can run ({exc}).") from exc


def _load_model(path: Path, *, name: str, expected_sha256: str | None) -> Segmenter:
    if not path.is_file():
        raise ImproperlyConfigured(f"IMAGEGEN_SEGMENTER: no model file at {path}.")
    checksum = _sha256(path)
    if expected_sha256 is not None and checksum != expected_sha256:
        raise ImproperlyConfigured(
            f"IMAGEGEN_SEGMENTER: {path.name} has SHA-256 {checksum}, not the {expected_sha256} "
            "listed in SHA256SUMS; restore the file (see weights/README.md)."
        )
    session = _session(path)
    seg = Segmenter(name, path, checksum, session=session, input_name=session.get_inputs()[0].name,
                    output_name=session.get_outputs()[0].name)
    # A probe with some texture, so that the answer is checked on more than a flat square.
    probe = np.random.default_rng(0).integers(0, 60, (seg.side, seg.side, 3), dtype=np.uint8)
    probe[seg.side // 4: 3 * seg.side // 4, seg.side // 4: 3 * seg.side // 4] += 150
    try:
        out = seg._forward(preprocess(probe, seg.side))
    except ModelCannotRun as exc:
        raise ImproperlyConfigured(
            f"IMAGEGEN_SEGMENTER: {path} is not an ONNX model that takes a 1x3x{seg.side}x{seg.side} "
            f"image ({exc.__cause__})."
        ) from exc
    if out.ndim != 4 or out.shape[0] != 1 or out.shape[2:] != (seg.side, seg.side):
        raise ImproperlyConfigured(
            f"IMAGEGEN_SEGMENTER: {path} returns shape {tuple(out.shape)}; a U²-Net style model "
            f"returns 1xCx{seg.side}x{seg.side} with the saliency map in channel 0."
        )
    if not np.isfinite(out).all():
        raise ImproperlyConfigured(f"IMAGEGEN_SEGMENTER: {path} returns NaN or infinite values.")
    logger.info("Segmenter %s loaded (%s, sha256 %s, ONNX Runtime %s)", name, path, checksum[:12], ort.__version__)
    return seg


_cache: dict[str, Segmenter] = {}
_cache_lock = threading.Lock()


def get_segmenter(setting: str) -> Segmenter:
    """The process-wide segmenter for an ``IMAGEGEN_SEGMENTER`` value (loaded and checked once)."""
    key = (setting or "auto").strip()
    if key == "classical":
        return CLASSICAL
    with _cache_lock:
        seg = _cache.get(key)
        if seg is None:
            if key == "auto":
                seg = _load_model(DEFAULT_MODEL, name="u2netp", expected_sha256=_shipped_checksum(DEFAULT_MODEL))
            else:
                path = Path(key).expanduser()
                seg = _load_model(path, name=path.name, expected_sha256=None)
            _cache[key] = seg
        return seg
