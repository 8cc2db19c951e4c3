"""A worker's claim on PostgreSQL as one statement in autocommit: one round trip, one commit.

The transactional claim (``claim_next``'s ``transaction.atomic()`` around
``set_transitions.claim_rows``) makes four round trips on the path of every pick-up:
psycopg's BEGIN, the claiming UPDATE, its events' statement (after Python rendered each
task's JSON), COMMIT. At a load of 11 they took 3.1, 2.0 and 5.0 ms of a 10.5 ms claim
(time marks, 40 pick-ups; docs/benchmarks/queue.md, 2026-12-02). Here one statement of
data-modifying CTEs does all of it:

- ``picked``: the claim query of ``claimable_ids`` (FOR UPDATE SKIP LOCKED, claim order);
- ``claimed``: those rows claimed, each with a fresh token, exactly as ``claim_rows`` does,
  unless one of them belongs to a batch (``has_batch``);
- ``claimed_state``: every claimed row with its task JSON rendered in SQL (``state_sql``:
  the very fields of ``render_state`` for a task just claimed, in UTC as ``_json_value``
  writes them, ``elapsed_time`` 0.0: the claim's own instant);
- whatever the receivers of ``tasks_claiming`` add over ``claimed_state`` (the event log's
  processing events, their seqs taken from the owners' counters in this statement).

Run outside a transaction, it commits as it returns: the claims, their tokens and their
events are durable together, and a lost answer leaves rows that ``Worker._claim`` finds as
this worker's, as before. The pushed events are the stored ones (their data read back). It
is prepared once per server session and runs on one generic plan for every limit
(``creation.execute_prepared``): planning it for its values cost more than running it.

Under a running cap (``IMAGEGEN_MAX_RUNNING_PER_USER``) the same statement claims, in a
transaction of two statements: the candidates picked and locked with a lock per user of
theirs, then the claim statement over the candidates that fit (``_claim_capped``).

It is used only where it writes exactly what the transactional claim writes: PostgreSQL,
no transaction open, Django's time zone UTC, a receiver recording the events, and no batch task
picked: a batch's counts and its ``batch_update`` event are recounted in Python under the
batch row's lock (``set_transitions._announce``). A statement that picked a batch task
claims nothing (its row locks end with it) and the caller claims transactionally; for a
while after that (``BATCHES_SEEN_FOR``) claims go straight to the transactional path, so a
queue of batch tasks does not pay a wasted statement at every claim.
"""
from __future__ import annotations

import datetime
import json
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField
from django.dispatch import Signal
from django.utils import timezone

from . import creation, set_transitions
from .links import task_url_parts
from .transition_log import log_transition

if TYPE_CHECKING:
    from .task import GenerationTask
    from .worker import WorkerProcess

#: Sent while the claim statement is built, with ``statement`` (a ``ClaimStatement``): a
#: receiver adds the CTEs whose writes must commit with the claims (``ClaimStatement.add``).
#: With no receiver adding any, claims stay transactional (their events come from
#: ``tasks_changed`` there).
tasks_claiming = Signal()

#: First key of the PostgreSQL advisory lock that serialises claims per user under
#: IMAGEGEN_MAX_RUNNING_PER_USER (the second key is the user id).
RUNNING_CAP_LOCK = 7_301_013

#: After a statement picked a batch task, how long claims take the transactional path.
BATCHES_SEEN_FOR = 5.0
_batches_seen = -BATCHES_SEEN_FOR  # time.monotonic() of the last one (per process)

Then = Callable[[list["GenerationTask"], list[dict[str, Any]], list[tuple[Any, ...]]], None]


@dataclass
class ClaimStatement:
    """The parts of the claim statement that receivers of ``tasks_claiming`` add to."""

    now: datetime.datetime  # the claim's time: every claimed row's started_at and updated_at
    ctes: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    returning: list[str] = field(default_factory=list)
    then: list[tuple[int, int, Then]] = field(default_factory=list)

    def add(self, ctes: str, params: Sequence[Any], returning: Sequence[str], then: Then) -> None:
        """Add ``ctes`` (``name AS (...)``, comma-separated), which may read ``claimed_state (id,
        user_id, priority, turn, state)`` (one row per claimed task, ``state`` its task JSON as
        jsonb) and must write only rows derived from it. ``returning``: expressions without
        parameters over ``cs`` (one claimed_state row), read back per task;
        ``then(tasks, states, values)`` is called once the statement has committed, with the
        tasks in claim order, their task JSON as stored and these expressions' values."""
        self.ctes.append(ctes)
        self.params.extend(params)
        self.then.append((len(self.returning), len(returning), then))
        self.returning.extend(returning)


def applies() -> bool:
    """Whether ``claim`` may be tried here (see the module's docstring)."""
    return (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and settings.USE_TZ
        and timezone.get_current_timezone_name() == "UTC"
        and time.monotonic() - _batches_seen >= BATCHES_SEEN_FOR
    )


def claim(model: type[GenerationTask], worker: WorkerProcess, limit: int,
          exclude: Collection[int]) -> list[tuple[GenerationTask, uuid.UUID]] | None:
    """Claim up to ``limit`` tasks (none of ``exclude``) by one statement; ``(task, token)`` in
    claim order. None: not claimed this way (see ``applies``; a batch task was picked; no
    receiver records the events): claim transactionally instead."""
    global _batches_seen
    if not applies():
        return None
    now = timezone.now()
    statement = ClaimStatement(now)
    tasks_claiming.send(sender=model, statement=statement)
    if not statement.ctes:
        return None
    cap = settings.IMAGEGEN_MAX_RUNNING_PER_USER
    if cap:
        with transaction.atomic():
            rows = _claim_capped(model, worker, limit, exclude, statement, cap)
    else:
        sql, params = _statement(model, worker, limit, exclude, statement)
        with connection.cursor() as cursor:
            set_transitions._fast_timestamps(cursor)
            # Prepared, and run on its generic plan: planning it for its values took 1.0-1.3 ms
            # at a load of 16, more than running it (EXPLAIN ANALYZE beside 20,000 finished tasks).
            creation.execute_prepared(cursor, "claim", sql, params, before=set_transitions._ordered_claim_prefix(cursor))
            rows = cursor.fetchall()
    ncols = len(model._meta.concrete_fields)
    if rows and rows[0][0]:  # a batch task among the picked rows: nothing was claimed
        _batches_seen = time.monotonic()
        return None
    rows = [row for row in rows if row[1] is not None]  # no row claimed: one row of NULLs
    tasks = set_transitions._as_tasks(model, [row[1:1 + ncols] for row in rows])
    states = [json.loads(row[1 + ncols]) for row in rows]
    extra = [tuple(row[2 + ncols:]) for row in rows]
    order = sorted(range(len(tasks)), key=lambda i: (-tasks[i].priority, tasks[i].turn, tasks[i].pk))
    tasks, states, extra = [tasks[i] for i in order], [states[i] for i in order], [extra[i] for i in order]
    for task in tasks:
        task.worker = worker  # the row's worker, so the log line names it without a query
        log_transition(task, set_transitions.CLAIM_FIELDS)  # committed already: logged now
    if tasks:
        for start, count, then in statement.then:
            then(tasks, states, [values[start:start + count] for values in extra])
    return [(task, task.claim_token) for task in tasks]


def _claim_capped(model: type[GenerationTask], worker: WorkerProcess, limit: int, exclude: Collection[int],
                  statement: ClaimStatement, cap: int) -> list[tuple[Any, ...]]:
    """The claim under IMAGEGEN_MAX_RUNNING_PER_USER, inside the caller's transaction; the
    claim statement's rows (none when nothing was picked).

    The claim query's own exclusion of users at the cap reads the running counts without a
    lock, so two workers claiming at once could both take one user's last slot. Two
    statements, whatever the number of users: the candidate rows picked and locked (the claim
    query, which skips rows other workers hold) and a transaction lock per user of theirs,
    taken in user order (so two claims cannot deadlock: the second waits for the first to
    commit); then the claim statement, its picked rows those candidates within each
    user's room counted afresh (a statement's snapshot is taken as it starts, so after the
    locks: every claim that held one has committed and its tasks are counted). Before this,
    a claim under a cap read and checked its rows in Python with a lock and a count per user:
    7 round trips and 13-15 ms for a claim of 20 against the one statement's 6-7 ms, and a
    drain at about half the rate (docs/benchmarks/queue.md, 2026-12-03)."""
    q = connection.ops.quote_name
    table = q(model._meta.db_table)
    pick_sql, pick_params = set_transitions.claimable_ids(model, limit, exclude, statement.now, literal_status=True)
    with connection.cursor() as cursor:
        set_transitions._fast_timestamps(cursor)
        # The candidates and a lock per user of theirs in one round trip: the aggregate reads
        # the users sorted, so the locks are taken in user order. The planner setting before it
        # is SET LOCAL: it holds for the claim statement too.
        creation.execute_prepared(
            cursor, "claim_pick", f"WITH p (picked_id) AS ({pick_sql}), "
            f"c AS (SELECT t.id, t.{q(model._meta.get_field('user').column)} AS owner FROM {table} t "
            "WHERE t.id = ANY (ARRAY(SELECT picked_id FROM p))) "
            "SELECT (SELECT array_agg(c.id) FROM c), (SELECT count(pg_advisory_xact_lock(%s, o.owner)) "
            "FROM (SELECT DISTINCT c.owner FROM c ORDER BY c.owner) o)", [*pick_params, RUNNING_CAP_LOCK],
            before=set_transitions._ordered_claim_prefix(cursor),
        )
        candidates = cursor.fetchone()[0]
        if not candidates:
            return []
        sql, params = _statement(model, worker, limit, exclude, statement,
                                 picked=(_within_cap_sql(model), [candidates, cap]))
        creation.execute_prepared(cursor, "claim_capped", sql, params)
        return cursor.fetchall()


@lru_cache(maxsize=4)
def _within_cap_sql(model: type[GenerationTask]) -> str:
    """The ids among the candidates (parameter 1, an array) that fit under the cap (parameter
    2): each user's first ones in claim order, as many as the user has room for."""
    q = connection.ops.quote_name
    table = q(model._meta.db_table)
    col = {name: q(model._meta.get_field(name).column) for name in ("priority", "turn", "user")}
    processing = creation.status_literal(model.Status.PROCESSING)
    return (
        f"SELECT s.id FROM (SELECT t.id, t.{col['user']} AS owner, row_number() OVER (PARTITION BY t.{col['user']} "
        f"ORDER BY t.{col['priority']} DESC, t.{col['turn']}, t.id) AS n FROM {table} t "
        "WHERE t.id = ANY (%s::bigint[])) s "
        f"WHERE s.n <= %s - (SELECT count(*) FROM {table} r WHERE r.{col['user']} = s.owner AND r.status = {processing})"
    )


def _statement(model: type[GenerationTask], worker: WorkerProcess, limit: int, exclude: Collection[int],
               statement: ClaimStatement, picked: tuple[str, list[Any]] | None = None) -> tuple[str, list[Any]]:
    """The claim statement and its parameters; ``picked``: the SQL and parameters of the ids it
    claims, instead of the claim query's next ``limit`` (without ``exclude``)."""
    if picked is None:
        picked = set_transitions.claimable_ids(model, limit, exclude, statement.now, literal_status=True)
    picked_sql, picked_params = picked
    ts = model._meta.get_field("started_at").get_db_prep_save(statement.now, connection)
    worker_id = model._meta.get_field("worker").get_db_prep_save(worker.pk, connection)
    sql = _statement_sql(model, picked_sql, tuple(statement.ctes), tuple(statement.returning))
    params = [*picked_params, model.Status.PROCESSING, worker_id, ts, ts, *state_params(model), *statement.params]
    return sql, params


@lru_cache(maxsize=64)
def _statement_sql(model: type[GenerationTask], picked_sql: str, ctes: tuple[str, ...], returning: tuple[str, ...]) -> str:
    """The statement's text, made once per shape: building it cost 1.0-1.6 ms of Python at a
    load of 15, on the path of every pick-up (only its parameters change between claims)."""
    q = connection.ops.quote_name
    table = q(model._meta.db_table)
    names = [q(f.column) for f in model._meta.concrete_fields]
    extra = "".join(f", {expr}" for expr in returning)
    return (
        # As in ``claim_rows``: the CTE's column is named (a bare "id" in the subquery would be
        # the outer table's), and the picked ids are looked up as one array by primary key.
        f"WITH picked (picked_id) AS ({picked_sql}), "
        # Each lookup of the picked ids is ``= ANY (ARRAY(SELECT ...))``, a value computed once:
        # joined to a CTE of the array instead, the planner read the whole table for each
        # (bool_or over the picked rows, so that only the primary key can find them: a test
        # of batch_id in the WHERE let the planner walk the batch_id index instead).
        f"batched AS (SELECT coalesce(bool_or(b.batch_id IS NOT NULL), false) AS has_batch FROM {table} b "
        "WHERE b.id = ANY (ARRAY(SELECT picked_id FROM picked))), "
        f"claimed AS (UPDATE {table} SET status = %s, worker_id = %s, claim_token = gen_random_uuid(), "
        "attempts = attempts + 1, progress = 0, started_at = %s, finished_at = NULL, updated_at = %s "
        "WHERE id = ANY (ARRAY(SELECT picked_id FROM picked)) AND NOT (SELECT has_batch FROM batched) "
        f"RETURNING {', '.join(names)}), "
        f"claimed_state AS (SELECT {', '.join(f'c.{n}' for n in names)}, {state_sql(model, 'c')} AS state FROM claimed c), "
        f"{', '.join(ctes)} "
        f"SELECT batched.has_batch, {', '.join(f'cs.{n}' for n in names)}, cs.state::text{extra} "
        "FROM batched LEFT JOIN claimed_state cs ON true"
    )


def _timestamp_sql(expr: str) -> str:
    """``_json_value`` of a timestamp in UTC: ISO 8601, microseconds only when not zero, "Z"."""
    return (
        f"CASE WHEN {expr} IS NULL THEN NULL ELSE to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
        f"|| CASE WHEN mod(extract(microseconds FROM {expr})::bigint, 1000000) = 0 THEN '' "
        f"ELSE to_char({expr} AT TIME ZONE 'UTC', '.US') END || 'Z' END"
    )


def state_params(model: type[GenerationTask]) -> list[Any]:
    """The parameters of ``state_sql``, in order: what the input's URL has before and after
    the id, and the ETA of a task just claimed (from the typical run time, a 10 s old figure)."""
    typical = model.typical_seconds()
    head, tail = task_url_parts("task-input")
    # ``estimated_remaining_seconds`` of a processing task with elapsed_time 0.0
    return [head, tail, None if typical is None else max(int(round(typical)), 0)]


@lru_cache(maxsize=8)
def state_sql(model: type[GenerationTask], alias: str) -> str:
    """``render_state(None)`` of a row just claimed (alias ``alias``), as a jsonb expression
    (parameters: ``state_params``): what Python renders for a processing task at the
    instant of its claim (no queue position, no result or outputs, ``elapsed_time`` 0.0 and
    the ETA that gives). Every field of ``LIVE_FIELDS`` is here or this raises: a new field
    must be rendered in both (tests/generation/test_claiming.py compares the two)."""
    q = connection.ops.quote_name
    derived: dict[str, str] = {
        "queue_position": "NULL::int",
        "elapsed_time": "0.0",
        "estimated_remaining_seconds": "%s::int",
        "input_image_url": f"CASE WHEN {alias}.{q('input_image')} <> '' THEN %s::text || {alias}.id || %s::text END",
        "result_image_url": "NULL::text",
        "outputs": "'[]'::jsonb",
        "batch": f"{alias}.{q('batch_id')}",
    }
    # The parameters come in ``state_params``' order.
    if list(model.LIVE_FIELDS).index("input_image_url") > list(model.LIVE_FIELDS).index("estimated_remaining_seconds"):
        raise AssertionError("state_params gives the input's URL before the ETA")
    fields = {f.name: f for f in model._meta.concrete_fields}
    pairs = []
    for name in model.LIVE_FIELDS:
        if name in derived:
            expr = derived[name]
        elif name in fields:
            column = f"{alias}.{q(fields[name].column)}"
            expr = _timestamp_sql(column) if isinstance(fields[name], DateTimeField) else column
        else:
            raise AssertionError(f"the claim statement cannot render the task field {name!r}")
        pairs.append(f"'{name}', {expr}")
    # jsonb_build_object takes at most 100 arguments: built in parts of 20 pairs, joined.
    parts = [f"jsonb_build_object({', '.join(pairs[i:i + 20])})" for i in range(0, len(pairs), 20)]
    return " || ".join(parts)
