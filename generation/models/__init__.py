"""The generation queue's models: tasks and their transitions, worker rows, queue switches."""
from __future__ import annotations

from .queue import QueueControl
from .task import (
    Completion,
    GenerationTask,
    IdempotencyKeyReused,
    InvalidTransition,
    LostClaim,
    TaskQuerySet,
    backoff_seconds,
    input_upload_to,
    mask_upload_to,
    result_upload_to,
)
from .upstream import UpstreamLimit
from .usage import DailyUsage, QuotaExceeded, Usage
from .worker import WorkerProcess, WorkerQuerySet

__all__ = [
    "Completion", "GenerationTask", "IdempotencyKeyReused", "InvalidTransition", "LostClaim", "QueueControl", "TaskQuerySet",
    "WorkerProcess", "WorkerQuerySet", "backoff_seconds",
    "DailyUsage", "QuotaExceeded", "Usage", "UpstreamLimit", "input_upload_to", "mask_upload_to", "result_upload_to",
]
