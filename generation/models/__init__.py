"""The generation queue's models: tasks and their transitions, worker rows, queue switches."""
from __future__ import annotations

from .batch import BATCH_PRIORITY, MAX_BATCH_IMAGES, Batch, BatchPart
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
from .worker import WorkerProcess, WorkerQuerySet

__all__ = [
    "BATCH_PRIORITY", "MAX_BATCH_IMAGES", "Batch", "BatchPart",
    "Completion", "GenerationTask", "IdempotencyKeyReused", "InvalidTransition", "LostClaim", "QueueControl", "TaskQuerySet",
    "WorkerProcess", "WorkerQuerySet", "backoff_seconds", "input_upload_to", "mask_upload_to", "result_upload_to",
]
