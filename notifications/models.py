"""The durable per-user event log: the source of truth for what a client has missed.

Each task change appends one ``Event`` in the same transaction as the change,
numbered by a per-user ``seq`` that is gapless and in commit order: the number
is taken from the user's ``EventCounter`` row with an UPDATE that holds the
row lock until commit, so two transactions of one user can never commit their
events out of order (a global sequence could).
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models


class EventCounter(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    last_seq = models.BigIntegerField(default=0)

    @classmethod
    def next_seq(cls, user_id: int) -> int:
        """Allocate the user's next seq; the row stays locked until the transaction ends."""
        table = connection.ops.quote_name(cls._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (user_id, last_seq) VALUES (%s, 1) "
                f"ON CONFLICT (user_id) DO UPDATE SET last_seq = {table}.last_seq + 1 "
                "RETURNING last_seq",
                [user_id],
            )
            return int(cursor.fetchone()[0])

    @classmethod
    def last_seq_for(cls, user_id: int) -> int:
        return cls.objects.filter(user_id=user_id).values_list("last_seq", flat=True).first() or 0


class Event(models.Model):
    class Type(models.TextChoices):
        CREATED = "task_created"
        UPDATE = "task_update"
        COMPLETE = "task_complete"
        FAILED = "task_failed"
        CANCELED = "task_canceled"
        # Events that are about no single task: a batch's counts, an endpoint of the owner's.
        BATCH_UPDATE = "batch_update"
        BATCH_COMPLETE = "batch_complete"
        WEBHOOK_DISABLED = "webhook_disabled"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    # A plain id, not a foreign key: events outlive purged tasks until retention removes them.
    # Null for events about no single task (batches, webhook endpoints).
    task_id = models.BigIntegerField(db_index=True, null=True, blank=True)
    type = models.CharField(max_length=32, choices=Type.choices)
    data = models.JSONField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["user_id", "seq"]
        constraints = [models.UniqueConstraint(fields=["user", "seq"], name="event_user_seq_unique")]

    def __str__(self) -> str:
        return f"{self.type} #{self.seq} (task {self.task_id})"

    @classmethod
    def append(cls, *, user_id: int, task_id: int | None, type: str, data: dict[str, Any], created_at: datetime) -> Event:
        """Append the user's next event inside the caller's transaction.

        On PostgreSQL the seq allocation and the insert are one statement (one round
        trip instead of two on the worker's hot path); elsewhere two.
        """
        if connection.vendor != "postgresql":
            seq = EventCounter.next_seq(user_id)
            return cls.objects.create(user_id=user_id, seq=seq, task_id=task_id, type=type, data=data,
                                      created_at=created_at)
        counter = connection.ops.quote_name(EventCounter._meta.db_table)
        table = connection.ops.quote_name(cls._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH next AS (INSERT INTO {counter} (user_id, last_seq) VALUES (%s, 1) "
                f"ON CONFLICT (user_id) DO UPDATE SET last_seq = {counter}.last_seq + 1 RETURNING last_seq) "
                f"INSERT INTO {table} (user_id, seq, task_id, type, data, created_at) "
                "SELECT %s, next.last_seq, %s, %s, %s::jsonb, %s FROM next RETURNING id, seq",
                [user_id, user_id, task_id, type, json.dumps(data, cls=DjangoJSONEncoder), created_at],
            )
            pk, seq = cursor.fetchone()
        event = cls(id=pk, user_id=user_id, seq=seq, task_id=task_id, type=type, data=data, created_at=created_at)
        event._state.adding = False
        return event

    def as_message(self) -> dict:
        return self.message(self.type, self.seq, self.task_id, self.timestamp_of(self.created_at), self.data)

    @staticmethod
    def timestamp_of(created_at: datetime) -> str:
        """An event's ``timestamp`` as clients see it."""
        return created_at.isoformat().replace("+00:00", "Z")

    @staticmethod
    def message(type: str, seq: int, task_id: int | None, timestamp: str, data: dict[str, Any]) -> dict:
        """The event as it is pushed and replayed (``as_message``), from its parts: a batch of
        appended events is pushed without an ``Event`` instance per row."""
        return {"type": type, "seq": seq, "task_id": task_id, "timestamp": timestamp, "data": data}
