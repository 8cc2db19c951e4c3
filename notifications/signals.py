"""The receivers tying task and batch changes to the event log (``generation`` never imports us)."""
from __future__ import annotations

from functools import partial
from typing import Any

from django.db import connections, transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from generation.models import (
    Batch, ClaimStatement, CreationStatement, GenerationTask, task_creating, tasks_changed, tasks_claiming,
)

from . import events


@receiver(post_save, sender=GenerationTask, dispatch_uid="notifications.record_task_event")
def record_task_event(sender: type[GenerationTask], instance: GenerationTask, created: bool, raw: bool = False,
                      using: str = "default", **kwargs: Any) -> None:
    if raw:  # loaddata: history, not news
        return
    # The event must commit with the change or not at all; a save outside a
    # transaction would let the two diverge (and the seq lock would not hold).
    if not connections[using].in_atomic_block:
        raise RuntimeError("Save GenerationTask inside transaction.atomic(): its event must commit with it.")
    event = events.record(instance, created)
    # Durable already; the push is only the fast path, so a failure must not raise.
    transaction.on_commit(partial(events.publish, event.user_id, event.as_message()), using=using, robust=True)


@receiver(tasks_changed, sender=GenerationTask, dispatch_uid="notifications.record_task_events")
def record_task_events(sender: type[GenerationTask], tasks: list[GenerationTask], using: str = "default",
                       **kwargs: Any) -> None:
    """A set-based change of several tasks (a worker's claim or its batch of results): one
    event per task, appended by one statement, and one push of them all after commit."""
    if not connections[using].in_atomic_block:
        raise RuntimeError("Change tasks inside transaction.atomic(): their events must commit with them.")
    messages = events.record_many(tasks)
    transaction.on_commit(partial(events.publish_many, messages), using=using, robust=True)


@receiver(task_creating, sender=GenerationTask, dispatch_uid="notifications.record_created_event")
def record_created_event(sender: type[GenerationTask], statement: CreationStatement, **kwargs: Any) -> None:
    """A submit's one statement (``generation.models.creation``): its ``task_created`` event is
    appended by that same statement, so it commits with the task or not at all."""
    events.append_created(statement)


@receiver(tasks_claiming, sender=GenerationTask, dispatch_uid="notifications.record_claimed_events")
def record_claimed_events(sender: type[GenerationTask], statement: ClaimStatement, **kwargs: Any) -> None:
    """A worker's one-statement claim (``generation.models.claiming``): each claimed task's
    processing event is appended by that same statement, so it commits with the claim or not at all."""
    events.append_claimed(statement)


@receiver(post_save, sender=Batch, dispatch_uid="notifications.record_batch_event")
def record_batch_event(sender: type[Batch], instance: Batch, created: bool, raw: bool = False,
                       using: str = "default", update_fields: frozenset[str] | None = None, **kwargs: Any) -> None:
    """A batch row changes only when its counts do (``Batch._recount``, or its creation):
    each save is a ``batch_update``; a save that moved its status into a finished one is
    also its ``batch_complete``."""
    if raw:
        return
    if not connections[using].in_atomic_block:
        raise RuntimeError("Save Batch inside transaction.atomic(): its event must commit with it.")
    finished = instance.is_finished and (created or update_fields is None or "status" in update_fields)
    for event in events.record_batch(instance, finished=finished):
        transaction.on_commit(partial(events.publish, event.user_id, event.as_message()), using=using, robust=True)
