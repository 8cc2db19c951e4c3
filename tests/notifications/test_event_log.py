"""Event.append: the per-user seq allocation and insert (one statement on PostgreSQL)."""
from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from notifications.models import Event, EventCounter


@pytest.mark.django_db
def test_append_numbers_each_users_events_from_one_and_stores_them(user, other_user):
    now = timezone.now()
    with transaction.atomic():
        first = Event.append(user_id=user.pk, task_id=7, type="task_created", data={"status": "pending"}, created_at=now)
        second = Event.append(user_id=user.pk, task_id=7, type="task_update", data={"progress": 40}, created_at=now)
        theirs = Event.append(user_id=other_user.pk, task_id=8, type="task_created", data={}, created_at=now)
    assert (first.seq, second.seq, theirs.seq) == (1, 2, 1)
    stored = Event.objects.get(pk=second.pk)
    assert (stored.user_id, stored.seq, stored.task_id, stored.type, stored.data) == (
        user.pk, 2, 7, "task_update", {"progress": 40})
    assert stored.as_message() == second.as_message()
    assert EventCounter.last_seq_for(user.pk) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_for_one_user_are_gapless_in_commit_order(user):
    commits: list[int] = []
    lock = threading.Lock()

    def append_many() -> None:
        try:
            for _ in range(25):
                with transaction.atomic():
                    event = Event.append(user_id=user.pk, task_id=1, type="task_update", data={},
                                         created_at=timezone.now())
                    # recorded while the counter row is still locked: this is the commit order
                    with lock:
                        commits.append(event.seq)
        finally:
            connection.close()

    threads = [threading.Thread(target=append_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    seqs = sorted(Event.objects.filter(user=user).values_list("seq", flat=True))
    assert seqs == list(range(1, 101))
    assert commits == sorted(commits)
