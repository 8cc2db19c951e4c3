"""The backend interface every generation engine implements.

Pure image work: nothing here (or anywhere under ``engine/``) imports a Django
model or publishes an event. The worker hands a backend the input bytes, the
parsed :class:`~generation.engine.spec.JobSpec` and a progress callback; the backend returns the finished,
encoded image or raises :class:`EngineError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from .spec import JobSpec

from ..errors import ErrorCode

#: Called by a backend at real stage boundaries with a percentage (0-100).
#: It may raise (for example when the task was canceled meanwhile): backends
#: must let any exception from it propagate and must not catch it broadly.
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class RenderedOutput:
    """One output of a task, encoded: what ``outputs`` in the task JSON describes."""

    name: str
    preset: str
    format: str  # "jpeg" | "png" | "webp"
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    compliance: dict[str, Any] | None = None

    @property
    def needs_review(self) -> bool:
        return bool((self.compliance or {}).get("needs_review", False))


@dataclass(frozen=True)
class GenerationResult:
    data: bytes
    content_type: str  # "image/jpeg", "image/png", "image/webp"
    extension: str  # "jpg", "png", "webp" (no dot)
    width: int
    height: int
    #: {"preset": str, "passed": bool, "checks": {name: {"passed": bool, "value": ..., ...}},
    #: "needs_review": bool, "cut_confidence": float, "review_reasons": [{"code", "message"}]} or None
    compliance: dict[str, Any] | None = None
    #: 8-bit greyscale PNG of the product mask at the input's resolution (after EXIF orientation), or None.
    mask: bytes | None = None
    #: What made the result: {"backend", "segmenter", "model", "model_sha256", "version"}.
    engine: dict[str, Any] = field(default_factory=dict)
    #: Every output of the job in its order, the first being the fields above; empty from a
    #: backend that renders one output only (the fields above are then that output).
    outputs: tuple[RenderedOutput, ...] = ()

    @property
    def needs_review(self) -> bool:
        """Whether the engine itself doubts the cut-out (a person should look) in any output."""
        if self.outputs:
            return any(o.needs_review for o in self.outputs)
        return bool((self.compliance or {}).get("needs_review", False))

    def rendered(self, job: JobSpec) -> tuple[RenderedOutput, ...]:
        """The outputs to store, named after ``job``'s (a single-output result is ``job``'s first)."""
        if self.outputs:
            return self.outputs
        first = job.outputs[0]
        fmt = {"jpg": "jpeg"}.get(self.extension, self.extension)
        return (RenderedOutput(first.name, first.preset, fmt, self.data, self.content_type, self.extension,
                               self.width, self.height, self.compliance),)


class EngineError(Exception):
    """A generation failure with a machine-readable code.

    ``transient`` errors (network, timeouts, HTTP 429/5xx, no image returned)
    are retried by the worker with backoff; permanent ones fail the task at once.
    ``code`` is an :class:`~generation.errors.ErrorCode` (or its value): a code outside
    the enum raises ValueError here, where the bug is, not in a client that meets it.
    """

    def __init__(self, code: ErrorCode | str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.transient = transient


class UpstreamBusy(Exception):
    """The upstream service may not be called now: the fleet's rate limit has no slot, or the
    service itself answered 429 naming a delay. Not a failure of the task: the worker puts it
    back to wait ``retry_after`` seconds, and the attempt does not count."""

    def __init__(self, retry_after: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = max(float(retry_after), 0.0)
        self.reason = reason


class RateGate(Protocol):
    """A fleet-wide gate in front of an upstream API (``IMAGEGEN_GEMINI_RPM``). The engine
    only calls it; where its state lives (the database) is the queue's business."""

    def acquire(self) -> float:
        """0: call now (the call is counted). Otherwise seconds until a slot is expected."""
        ...

    def finished(self) -> None:
        """The calling thread's admitted call has ended (answered or failed): it keeps its
        slot for a window from now, as the upstream may have counted it at any moment since."""
        ...

    def pause(self, seconds: float) -> float:
        """The upstream asked everyone to wait ``seconds``: hold the whole fleet back that long.
        Returns how long the caller itself should wait."""
        ...


class InvalidOptions(ValueError):
    """Task options rejected at submit time (becomes a 400 naming ``field``, never a failed task).

    ``str(exc)`` is a full sentence for the seller.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Backend(Protocol):
    name: str

    def generate(
        self, image: bytes, job: JobSpec, progress: ProgressCallback
    ) -> GenerationResult: ...


@dataclass
class BackendConfig:
    """Settings a backend may use; built from Django settings by ``get_backend``."""

    gemini_api_key: str = ""
    gemini_model: str = "gemini-2.5-flash-image"
    gemini_base_url: str = ""
    gemini_api_version: str = ""
    gemini_timeout_ms: int = 60_000
    fidelity_mode: str = "fail"  # "fail" or "flag"
    segmenter: str = "auto"  # IMAGEGEN_SEGMENTER: "auto", "classical" or an ONNX model's path
    #: The fleet-wide gate for Gemini calls (None: call freely, as a backend built outside a worker does).
    gemini_rate_gate: RateGate | None = None
    extra: dict[str, Any] = field(default_factory=dict)
