"""The segmenters ``IMAGEGEN_SEGMENTER`` selects: a learned salient-object model, or none (classical).

``auto`` (the default) is the vendored U²-Net-P (``weights/u2netp.onnx``,
checked against ``weights/SHA256SUMS`` when it is loaded); ``classical``
is the border-model/GrabCut pipeline alone; anything else is the path of an
operator's ONNX model with the U²-Net convention: one 1x3xSxS float32 input
(RGB divided by the image's maximum, then ImageNet mean/std, NCHW) and a first
output whose channel 0 is the saliency map at the same SxS.

A model is loaded once per process and validated then (a bad path, a file
that is not ONNX, the wrong I/O, a checksum mismatch: ``ImproperlyConfigured``),
never in the middle of a task. ``cv2.dnn`` networks keep per-call state and
are not safe to share between threads, so each thread gets its own copy of
the parsed network (4.6 MB for U²-Net-P), built on its first forward pass.

OpenCV 5 has two DNN engines. The classic one runs U²-Net-P in about 70% of
the new one's CPU time, but its plain ``forward()`` returns the graph's last
output, not its first, so the saliency output is always asked for by name.
Each model is run on both engines once at load, and the classic engine is
used only when its answer matches the new one's (:data:`ENGINE_TOLERANCE`).
"""
from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "u2netp.onnx"

#: The U²-Net family's input side.
INPUT_SIDE = 320
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
#: Largest difference (output units) between the engines' answers on the load
#: probe for the faster classic engine to be used (U²-Net-P: 7e-5, float rounding).
ENGINE_TOLERANCE = 1e-3


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


@dataclass
class Segmenter:
    """What produces the cut: ``name`` is "u2netp", "classical" or the operator's model file name.

    ``path`` is None for the classical pipeline, which has no learned model.
    """

    name: str
    path: Path | None = None
    model_sha256: str | None = None
    side: int = INPUT_SIDE
    #: ``cv2.dnn.ENGINE_CLASSIC`` or ``ENGINE_NEW``, chosen at load.
    engine: int = cv2.dnn.ENGINE_NEW
    _local: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    @property
    def model(self) -> str | None:
        return self.path.name if self.path is not None else None

    @property
    def learned(self) -> bool:
        return self.path is not None

    def _net(self) -> tuple[cv2.dnn.Net, str]:
        """This thread's network and the name of its first output."""
        cached = getattr(self._local, "net", None)
        if cached is None:
            assert self.path is not None
            cached = _read(self.path, self.engine)
            self._local.net = cached
        return cached

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        net, output = self._net()
        net.setInput(blob)
        return np.asarray(net.forward(output), np.float32)

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


def _read(path: Path, engine: int) -> tuple[cv2.dnn.Net, str]:
    net = cv2.dnn.readNetFromONNX(str(path), engine=engine)
    return net, net.getUnconnectedOutLayersNames()[0]


def _faster_engine(path: Path, blob: np.ndarray, reference: np.ndarray) -> int:
    """The classic engine when it gives the new engine's answer on ``blob``, else the new one."""
    try:
        net, output = _read(path, cv2.dnn.ENGINE_CLASSIC)
        net.setInput(blob)
        out = np.asarray(net.forward(output))
    except cv2.error as exc:
        logger.info("Segmenter %s: the classic DNN engine cannot run it (%s)", path.name, exc.err or exc)
        return cv2.dnn.ENGINE_NEW
    if out.shape != reference.shape or not np.allclose(out, reference, rtol=0, atol=ENGINE_TOLERANCE):
        logger.info("Segmenter %s: the classic DNN engine's answer differs; using the new engine", path.name)
        return cv2.dnn.ENGINE_NEW
    return cv2.dnn.ENGINE_CLASSIC


def _load_model(path: Path, *, name: str, expected_sha256: str | None) -> Segmenter:
    if not path.is_file():
        raise ImproperlyConfigured(f"IMAGEGEN_SEGMENTER: no model file at {path}.")
    checksum = _sha256(path)
    if expected_sha256 is not None and checksum != expected_sha256:
        raise ImproperlyConfigured(
            f"IMAGEGEN_SEGMENTER: {path.name} has SHA-256 {checksum}, not the {expected_sha256} "
            "listed in SHA256SUMS; restore the file (see weights/README.md)."
        )
    seg = Segmenter(name, path, checksum)
    # A probe with some texture, so that both engines' answers are compared on more than a flat square.
    probe = np.random.default_rng(0).integers(0, 60, (seg.side, seg.side, 3), dtype=np.uint8)
    probe[seg.side // 4: 3 * seg.side // 4, seg.side // 4: 3 * seg.side // 4] += 150
    blob = preprocess(probe, seg.side)
    try:
        out = seg._forward(blob)
    except cv2.error as exc:
        raise ImproperlyConfigured(
            f"IMAGEGEN_SEGMENTER: {path} is not an ONNX model that takes a 1x3x{seg.side}x{seg.side} "
            f"image ({exc.err or exc})."
        ) from exc
    if out.ndim != 4 or out.shape[0] != 1 or out.shape[2:] != (seg.side, seg.side):
        raise ImproperlyConfigured(
            f"IMAGEGEN_SEGMENTER: {path} returns shape {tuple(out.shape)}; a U²-Net style model "
            f"returns 1xCx{seg.side}x{seg.side} with the saliency map in channel 0."
        )
    if not np.isfinite(out).all():
        raise ImproperlyConfigured(f"IMAGEGEN_SEGMENTER: {path} returns NaN or infinite values.")
    engine = _faster_engine(path, blob, out)
    if engine != seg.engine:
        seg = Segmenter(name, path, checksum, engine=engine)
    logger.info("Segmenter %s loaded (%s, sha256 %s, %s DNN engine)", name, path, checksum[:12],
                "classic" if engine == cv2.dnn.ENGINE_CLASSIC else "new")
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
