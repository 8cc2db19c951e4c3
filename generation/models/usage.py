"""Per-user usage counters and the daily task quota (``IMAGEGEN_DAILY_TASKS_PER_USER``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone as dt_timezone
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models
from django.db.models import Sum

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class QuotaExceeded(Exception):
    """The user has used up today's task quota; ``retry_after`` seconds until the next UTC midnight."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"Daily task quota of {limit} reached; it resets at 00:00 UTC.")
        self.limit = limit
        self.retry_after = retry_after


def utc_day(now: datetime) -> date:
    """Quota days are UTC calendar days, whatever TIME_ZONE says: one boundary for the whole fleet."""
    return now.astimezone(dt_timezone.utc).date()


def next_utc_midnight(now: datetime) -> datetime:
    return datetime.combine(utc_day(now) + timedelta(days=1), time.min, tzinfo=dt_timezone.utc)


def seconds_to_next_utc_midnight(now: datetime) -> int:
    """Retry-After of a spent quota: whole seconds, rounded up, so a client waiting it is in the new day."""
    return max(math.ceil((next_utc_midnight(now) - now).total_seconds()), 1)


@dataclass(frozen=True)
class Usage:
    today: int
    this_month: int


class DailyUsage(models.Model):
    """How many tasks a user created on one UTC day. A counter, not a count of task rows:
    retention deletes old tasks, and the row's lock is what keeps concurrent submits of
    one user from overshooting the quota. Not task state: plain saves, no events."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    tasks = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "day"], name="daily_usage_user_day")]
        verbose_name_plural = "daily usage"

    def __str__(self) -> str:
        return f"{self.user_id} on {self.day}: {self.tasks}"

    @classmethod
    def count_task(cls, user: AbstractBaseUser, now: datetime, tasks: int = 1, *, also: str = "",
                   also_params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """Count ``tasks`` new tasks (a batch counts each) for ``user`` or raise ``QuotaExceeded``. Call inside the
        transaction that inserts the task: one upsert increments the day's counter and
        keeps its row locked until that transaction ends, so a concurrent submit of the
        same user waits for it and then sees its count (and a refused or failed submit
        rolls its increment back with everything else).

        ``also``: further expressions (scalar subqueries) for the upsert's ``RETURNING``, so the
        caller's own reads ride in this round trip (``GenerationTask.submit``'s turn reads);
        their values are returned, in order."""
        table = connection.ops.quote_name(cls._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (user_id, day, tasks) VALUES (%s, %s, %s) "
                f"ON CONFLICT (user_id, day) DO UPDATE SET tasks = {table}.tasks + EXCLUDED.tasks "
                f"RETURNING tasks{', ' + also if also else ''}",
                [user.pk, utc_day(now), tasks, *also_params],
            )
            counted, *extra = cursor.fetchone()
        limit = settings.IMAGEGEN_DAILY_TASKS_PER_USER
        if limit and int(counted) > limit:
            raise QuotaExceeded(limit, seconds_to_next_utc_midnight(now))
        return tuple(extra)

    @classmethod
    def check_quota(cls, user: AbstractBaseUser, now: datetime) -> None:
        """The unlocked early check (before an upload is stored): raises ``QuotaExceeded``
        when today's quota is already spent. ``count_task`` is the authoritative one."""
        limit = settings.IMAGEGEN_DAILY_TASKS_PER_USER
        if limit and cls.used_today(user, now) >= limit:
            raise QuotaExceeded(limit, seconds_to_next_utc_midnight(now))

    @classmethod
    def used_today(cls, user: AbstractBaseUser, now: datetime) -> int:
        """Tasks the user created on this UTC day (one index read; ``usage_for`` adds the month)."""
        return cls.objects.filter(user=user, day=utc_day(now)).values_list("tasks", flat=True).first() or 0

    @classmethod
    def usage_for(cls, user: AbstractBaseUser, now: datetime) -> Usage:
        day = utc_day(now)
        month = cls.objects.filter(user=user, day__gte=day.replace(day=1), day__lte=day)
        return Usage(today=cls.used_today(user, now), this_month=month.aggregate(n=Sum("tasks"))["n"] or 0)
