"""The generation queue's models: tasks and their transitions, worker rows, queue switches."""
from __future__ import annotations

from .batch import BATCH_PRIORITY, MAX_BATCH_IMAGES, Batch, BatchPart
from .claiming import ClaimStatement, tasks_claiming
from .creation import CreationStatement, task_creating
from .output import OutputRecord, TaskOutput, output_upload_to
from .queue import QueueControl
from .set_transitions import tasks_changed
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
    "BATCH_PRIORITY", "MAX_BATCH_IMAGES", "Batch", "BatchPart", "ClaimStatement", "CreationStatement", "task_creating",
    "tasks_claiming",
    "Completion", "DailyUsage", "GenerationTask", "IdempotencyKeyReused", "InvalidTransition", "LostClaim", "OutputRecord",
    "QueueControl", "QuotaExceeded", "TaskOutput", "TaskQuerySet", "UpstreamLimit", "Usage", "output_upload_to",
    "WorkerProcess", "WorkerQuerySet", "backoff_seconds", "tasks_changed", "input_upload_to", "mask_upload_to", "result_upload_to",
]
