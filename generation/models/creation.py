"""A submitted task created on PostgreSQL by one statement, and so in one round trip.

``GenerationTask.submit`` made six round trips after writing the input file (BEGIN; the
day's usage count carrying the turn reads and the NOTIFY; the insert; the queue position's
COUNT for the created event; the event; COMMIT): 4.1 of the 7.7 ms of a pick-up on a quiet
machine (docs/benchmarks/queue.md). Here they are one statement of data-modifying CTEs:

- ``counted``: the day's usage counter moves by one and its row stays locked until commit,
  as in ``DailyUsage.count_task``, but only if the counter still holds what this statement's
  snapshot saw, and only under ``IMAGEGEN_DAILY_TASKS_PER_USER``;
- ``inserted``: the task row, with its fair-sharing turn from the three index reads of
  ``GenerationTask.next_turn``;
- ``created``: its queue position (the COUNT of ``queue_position``) and its task JSON
  (``live_state()``): Python renders every field but the four that only the statement
  knows (the id, the position, the ETA built on it, the input's URL), which it fills in;
- whatever the receivers of ``task_creating`` add over ``created``: the event log's
  ``task_created`` event, its seq taken from the owner's counter in this same statement;
- and the NOTIFY, evaluated once per created row.

Outside a transaction the statement runs in autocommit: one statement is one transaction,
so the row, its event and the counter are durable together when it returns and its NOTIFY
is delivered at that commit. Inside the caller's transaction it runs under a savepoint, as
the transactional path does, and everything after it waits for that commit.

Why the counter's condition: every read of one statement sees the snapshot taken before it
waited for the counter row's lock. A submit of the same user that held that lock has
committed by then, unseen, and its task would be missing from this task's turn and queue
position. So the statement writes nothing unless the counter is as the snapshot saw it (it
refuses a spent quota the same way), and ``submit`` then takes the transactional path, whose
statements each see what committed before them and which raises ``QuotaExceeded`` itself.
Other users' submits never hold this lock; the ones still in flight are unseen by either
path's COUNT alike.
"""
from __future__ import annotations

import hashlib
import json
import re
import weakref
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Field
from django.dispatch import Signal

from .. import wakeup
from .links import task_url_parts
from .usage import DailyUsage, utc_day

if TYPE_CHECKING:
    from .task import GenerationTask

#: Sent while the statement is built, with ``statement`` (a ``CreationStatement``): a receiver
#: adds the CTEs whose writes must commit with the new task (``CreationStatement.add``).
task_creating = Signal()

#: ``GenerationTask.queued_eta`` in SQL over ``created``'s position: the same float operations
#: in the same order, and round() on a double rounds half to even there as in Python.
QUEUED_ETA_SQL = "round(greatest(%s::float8 * (1 + (a.position - 1)::float8 / %s::float8), %s::float8 + %s::float8))::int"

Then = Callable[["GenerationTask", dict[str, Any], tuple[Any, ...]], None]


def status_literal(status: str) -> str:
    """A task status as an SQL literal (``GenerationTask.Status`` values: lower-case letters)."""
    if not (status.isalpha() and status.islower()):
        raise ValueError(f"not a task status: {status!r}")
    return f"'{status}'"


@dataclass
class CreationStatement:
    """The statement's parts that receivers of ``task_creating`` add to."""

    task: GenerationTask
    ctes: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    returning: list[str] = field(default_factory=list)
    then: list[tuple[int, int, Then]] = field(default_factory=list)

    def add(self, ctes: str, params: Sequence[Any], returning: Sequence[str], then: Then) -> None:
        """Add ``ctes`` (``name AS (...)``, comma-separated), which may read ``created (id, user_id,
        state)`` (one row: the new task's id, its owner, its task JSON as jsonb) and must write
        only rows derived from it (a data-modifying CTE always runs). ``returning``: scalar
        expressions without parameters, read back with the task; ``then(task, state, values)``
        is called with their values once the statement has run (inside its transaction, if any)."""
        self.ctes.append(ctes)
        self.params.extend(params)
        self.then.append((len(self.returning), len(returning), then))
        self.returning.extend(returning)


def create(task: GenerationTask, now: datetime) -> bool:
    """Insert the unsaved ``task`` (its input already stored), counted, turned, announced, with
    what receivers of ``task_creating`` add, by one statement. False: nothing was written (the
    quota is spent, or another submit of the same user moved the counter meanwhile)."""
    if connection.in_atomic_block:
        with transaction.atomic():  # a savepoint: a failure leaves the caller's transaction usable
            return _create(task, now)
    return _create(task, now)


@cache
def _insert_columns(model: type[GenerationTask]) -> tuple[list[Field], str, str]:
    """The fields the insert writes (all but the id and the turn), their column list, and a
    placeholder cast to each column's type (so the server binds each value as that type):
    made once, not at every submit (measured: a third of the submit's Python)."""
    q = connection.ops.quote_name
    fields = [f for f in model._meta.concrete_fields if not f.primary_key and f.attname != "turn"]
    return (fields, ", ".join(q(f.column) for f in fields),
            ", ".join(f"%s::{f.cast_db_type(connection)}" for f in fields))


def _create(task: GenerationTask, now: datetime) -> bool:
    model = type(task)
    q = connection.ops.quote_name
    table, usage = q(model._meta.db_table), q(DailyUsage._meta.db_table)
    day = utc_day(now)
    limit = settings.IMAGEGEN_DAILY_TASKS_PER_USER
    statement = CreationStatement(task)
    params: list[Any] = [task.user_id, day, task.user_id, day, *([limit] if limit else [])]
    counted = (
        f"counted AS (INSERT INTO {usage} AS u (user_id, day, tasks) VALUES (%s, %s, 1) "
        "ON CONFLICT (user_id, day) DO UPDATE SET tasks = u.tasks + 1 "
        f"WHERE u.tasks = (SELECT s.tasks FROM {usage} s WHERE s.user_id = %s AND s.day = %s)"
        f"{' AND u.tasks < %s' if limit else ''} RETURNING u.tasks)"
    )
    reads, read_params = model._turn_reads(task.user_id, task.priority, announce=False)
    fields, columns, values = _insert_columns(model)
    params += [f.get_db_prep_save(f.pre_save(task, True), connection) for f in fields] + read_params
    inserted = (
        f"inserted AS (INSERT INTO {table} ({columns}, {q('turn')}) SELECT {values}, "
        # ``_turn_from``, each read referenced once (twice would run its subquery twice);
        # GREATEST skips a NULL: no pending task of the user's yet.
        "GREATEST(r.last + 1, COALESCE(r.serving, r.lowest, 0)) "
        f"FROM counted, LATERAL (SELECT {reads}) AS r (last, serving, lowest) RETURNING id, user_id, priority, turn)"
    )
    # The task JSON but for what only the statement knows (placeholders, overwritten below).
    state = task.render_state(1)
    overrides = ["'id', i.id", "'queue_position', a.position"]
    override_params: list[Any] = []
    if task.input_image:
        overrides.append("'input_image_url', %s::text || i.id || %s::text")
        override_params += task_url_parts("task-input")
    typical, waiting = task.typical_seconds(), task.waiting_seconds()
    workers = task.eta_workers() if typical is not None else 1
    if typical is not None:  # else the ETA does not depend on the position: rendered already
        overrides.append(f"'estimated_remaining_seconds', {QUEUED_ETA_SQL}")
        override_params += [typical, workers, waiting, typical]
    params += [json.dumps(state, cls=DjangoJSONEncoder), *override_params]
    # queue_position's COUNT (``ahead_of``), as two ranges of the claim index: the higher
    # priorities, then this priority up to this turn. As one OR of the three cases the index
    # could not bound the scan, and the COUNT read every pending task (6.1 ms of a submit's
    # 9.0 behind another seller's 4,300, with a heap fetch each, for a position of 1-2).
    pending = status_literal(model.Status.PENDING)
    created = (
        f"created AS (SELECT i.id, i.user_id, i.turn, a.position, %s::jsonb || jsonb_build_object({', '.join(overrides)}) "
        f"AS state FROM inserted i, LATERAL (SELECT 1 "
        f"+ (SELECT count(*) FROM {table} t WHERE t.status = {pending} AND t.priority > i.priority) "
        f"+ (SELECT count(*) FROM {table} t WHERE t.status = {pending} AND t.priority = i.priority "
        # OFFSET 0: counted once, not once per use of the position (the JSON, the ETA, the row).
        "AND t.turn <= i.turn AND (t.turn < i.turn OR t.id < i.id)) AS position OFFSET 0) AS a)"
    )
    task_creating.send(sender=model, statement=statement)
    extra = "".join(f", {expr}" for expr in statement.returning)
    sql = (
        f"WITH {', '.join([counted, inserted, created, *statement.ctes])} "
        f"SELECT c.id, c.turn, c.position, pg_notify(%s::text, %s::text){extra} FROM created c"
    )
    deadline = task.expires_at is not None
    params += [*statement.params, wakeup.CHANNEL, wakeup.DEADLINE if deadline else ""]
    row = _run(sql, params)
    if row is None:
        return False
    pk, turn, position, _, *values = row
    task.pk, task.turn = pk, turn
    task._state.adding, task._state.db = False, connection.alias
    state.update(id=pk, queue_position=position)
    if task.input_image:
        state["input_image_url"] = task.get_input_url()
    if typical is not None:
        state["estimated_remaining_seconds"] = task.queued_eta(position, typical, workers, waiting)
    for start, count, then in statement.then:
        then(task, state, tuple(values[start:start + count]))
    # The task JSON as of its creation, once, for the caller's answer (the 201 body): the same
    # as its created event, without a second COUNT for the position (``live_state``).
    task._created_state = dict(state)
    return True


#: The statements prepared on each server session: psycopg connection -> statement names.
_prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _run(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    """Run the statement and return its row (``execute_prepared``).

    Planning this statement for its values took 1.5-1.9 ms on the server, twice its execution
    (EXPLAIN, load 10); its generic plan is as good as a custom one because every status test
    is a literal (``status_literal``), so each read goes through the partial index made for
    it. With the statuses as parameters a generic plan could use none of them and read every
    row of a status (4.7-7.2 ms, against 1.3 ms, beside 25,000 finished tasks:
    docs/benchmarks/queue.md), which is why each run was planned for its values until then."""
    with connection.cursor() as cursor:
        execute_prepared(cursor, "create", sql, params)
        return cursor.fetchone()


def force_generic_plans(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created``: the new server session runs its prepared statements on their generic
    plans (``execute_prepared``). Set as the session starts, in autocommit: a SET made with the
    first PREPARE, inside a transaction that then rolled back, was undone while the PREPARE (not
    transactional) stayed, and the session's statements were planned for their values again."""
    if connection.vendor == "postgresql" and not settings.DATABASE_LISTEN_URL:
        with connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_generic_plan")


@lru_cache(maxsize=64)
def _statement_name(kind: str, sql: str) -> str:
    return f"imagegen_{kind}_{hashlib.sha1(sql.encode()).hexdigest()[:16]}"


def execute_prepared(cursor: Any, kind: str, sql: str, params: list[Any], before: str = "") -> None:
    """Execute ``sql`` (``%s`` placeholders) on ``cursor`` as a prepared statement: prepared
    once per server session and then executed by name, so it is parsed and planned once.
    Django leaves psycopg's own preparing off (for poolers), so this is SQL's PREPARE; its
    EXECUTE goes through Django's cursor like any query. Not behind a transaction-mode pooler
    (``DATABASE_LISTEN_URL`` set): the next transaction may run on another server session,
    which never saw the PREPARE; there the statement is sent as it is.

    Every EXECUTE runs the statement's one generic plan (``plan_cache_mode =
    force_generic_plan``, set for the session as it connects: ``force_generic_plans``; only
    these statements are prepared on it): a statement prepared here must test statuses as literals, never as
    parameters. ``before``: statements sent ahead of it in the same query (a ``SET LOCAL``
    for the plan, applied whenever PostgreSQL re-plans it); the cursor is left at the
    statement's own rows."""
    if settings.DATABASE_LISTEN_URL:
        cursor.execute(before + sql, params)
    else:
        name = _statement_name(kind, sql)
        session = _prepared.setdefault(connection.connection, set())
        if name not in session:
            numbered = iter(range(1, len(params) + 1))
            cursor.execute(f"PREPARE {name} AS " + re.sub(r"%s", lambda _: f"${next(numbered)}", sql))
            session.add(name)
        cursor.execute(f"{before}EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)
    if before:
        cursor.cursor.nextset()  # past the results of ``before``
