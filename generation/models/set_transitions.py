"""Set-based transitions: a worker's batch of tasks claimed, or completed, by one SQL statement.

A no-op drain spent most of its Python time in the ORM's per-row ``save()`` and the
``post_save`` path behind it (57 % of the workers' GIL time, issue 13). Here a claim of
up to ``MAX_BATCH`` tasks is one ``UPDATE ... RETURNING`` that gives every row its own
claim token, and recording their results is one ``UPDATE ... FROM (VALUES ...)`` that
only touches rows whose claim still holds: the fence is in the ``WHERE``. No ``post_save``
fires, so the change announces itself with ``tasks_changed`` (inside its transaction),
and the event log's receiver appends one event per task in one statement, the seqs taken
per user in that statement (``notifications.signals``). Everything else a ``_save`` does
is kept: the structured log line per task, and the batch rows locked after the task rows
and recounted after the events (the lock order of ``generation.models.batch``).

Both statements are plain SQL that PostgreSQL and SQLite (3.35+: ``RETURNING``, ``UPDATE
... FROM``) both run; ``FOR UPDATE SKIP LOCKED`` is compiled by Django only where it exists.
"""
from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models.fields.files import FieldFile
from django.dispatch import Signal
from django.utils import timezone

from .output import TaskOutput
from .transition_log import log_transition

if TYPE_CHECKING:
    from .task import Completion, GenerationTask
    from .worker import WorkerProcess

#: Sent inside the transaction of a set-based change, after the rows are written, with
#: ``tasks`` (the changed tasks as now stored, in the order their events must take). The
#: receiver must record one event per task in this transaction (``post_save`` does not fire).
tasks_changed = Signal()

CLAIM_FIELDS = ("status", "worker", "claim_token", "attempts", "progress", "started_at", "finished_at")
COMPLETE_FIELDS = (
    "status", "progress", "result_image", "result_content_type", "compliance", "mask_image", "engine",
    "needs_review", "error_code", "error_message", "finished_at", "claim_token",
)
# The per-row values of a completion, in the order of the VALUES list.
_COMPLETION_COLUMNS = ("result_image", "result_content_type", "compliance", "mask_image", "engine", "needs_review")


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _returning(model: type[GenerationTask]) -> str:
    # Unqualified: SQLite allows no table name in RETURNING (the VALUES columns are prefixed
    # ``v_`` so that no name is ambiguous on PostgreSQL).
    return ", ".join(_q(f.column) for f in model._meta.concrete_fields)


@lru_cache(maxsize=8)
def _converters(model: type[models.Model], vendor: str) -> tuple[tuple[int, tuple[Callable, ...], Any], ...]:
    """Per concrete field that needs one, what the ORM applies to a fetched value (the
    backend's converters, then the field's ``from_db_value``: JSON text to Python here)."""
    table = model._meta.db_table
    found = []
    for i, field in enumerate(model._meta.concrete_fields):
        col = field.get_col(table)
        convs = (*connection.ops.get_db_converters(col), *field.get_db_converters(connection))
        if convs:
            found.append((i, convs, col))
    return tuple(found)


def _fast_timestamps(cursor: Any) -> None:
    """Load ``timestamptz`` with psycopg's C loader on this cursor. Django registers a Python
    subclass of it (to set ``tzinfo``), which parses each value in Python: a claim or a
    completion of 100 rows reads 500 of them (measured: a third of loading the rows). The
    C loader gives the connection's time zone, so only where that is UTC, as Django's is."""
    if connection.vendor != "postgresql" or connection.timezone is not datetime.timezone.utc:
        return
    raw = getattr(cursor, "cursor", cursor)  # Django's CursorWrapper around the psycopg cursor
    pgconn = getattr(getattr(raw, "connection", None), "pgconn", None)
    if pgconn is None or pgconn.parameter_status(b"TimeZone") != b"UTC":
        return
    from psycopg.types.datetime import TimestamptzLoader

    raw.adapters.register_loader("timestamptz", TimestamptzLoader)  # the C one where psycopg has it


def _ordered_claim_prefix(cursor: Any) -> str:
    """A planner setting for the claim's transaction, sent with the claim (one round trip).

    The claim reads the pending rows in claim order from ``task_claim_turn_idx`` and stops
    after ``limit``. On statistics taken while few tasks were pending (a queue filled
    faster than autovacuum re-analyses it: any large batch of submissions) the planner
    expects a handful of rows and picks a bitmap scan of the whole partial index plus a
    sort instead: every claim then reads and sorts every pending row (measured: 5.4 ms a
    claim at 4,600 pending, against 0.1 ms in index order). Without bitmap scans the
    ordered index scan is the cheap plan whatever the estimate. Only where the statements
    go as one simple query (psycopg's client-side binding, Django's default)."""
    if connection.vendor != "postgresql":
        return ""
    from psycopg import ClientCursor

    if not isinstance(getattr(cursor, "cursor", None), ClientCursor):
        return ""
    return "SET LOCAL enable_bitmapscan = off; "


def _fetch_tasks(model: type[GenerationTask], sql: str, params: Sequence[Any], *, claim: bool = False) -> list[GenerationTask]:
    """The rows a ``RETURNING`` of every concrete column gives, as instances: what
    ``Manager.raw`` makes of them, without its per-row machinery (a third of its cost).
    ``claim``: the statement is a claim (``_ordered_claim_prefix``)."""
    with connection.cursor() as cursor:
        _fast_timestamps(cursor)
        prefix = _ordered_claim_prefix(cursor) if claim else ""
        cursor.execute(prefix + sql, params)
        if prefix:
            cursor.cursor.nextset()  # past the SET's result, to the claim's rows
        rows = cursor.fetchall()
    return _as_tasks(model, rows)


def _as_tasks(model: type[GenerationTask], rows: Sequence[Sequence[Any]]) -> list[GenerationTask]:
    """Rows of every concrete column, in field order, as instances (``_fetch_tasks``)."""
    converters = _converters(model, connection.vendor)
    names = [f.attname for f in model._meta.concrete_fields]
    tasks = []
    for row in rows:
        if converters:
            row = list(row)
            for i, convs, col in converters:
                for conv in convs:
                    row[i] = conv(row[i], col, connection)
        tasks.append(model.from_db(connection.alias, names, row))
    return tasks


def _rows_cte(alias: str, columns: Sequence[tuple[str, models.Field]], rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """``alias (column, ...) AS (...)`` for a ``WITH``: ``rows`` (Python values of the
    ``columns``' fields) as a table, each column typed as its field. On PostgreSQL one
    JSON document read by ``jsonb_to_recordset``: as a ``VALUES`` list every value is a
    parameter that psycopg quotes in Python, one by one on the client (measured: a 100-task
    completion and its outputs are 1,800 of them, a quarter of recording them). Elsewhere
    that ``VALUES`` list."""
    names = [name for name, _ in columns]
    if connection.vendor == "postgresql":
        types = ", ".join(f"{name} {field.cast_db_type(connection)}" for name, field in columns)
        document = json.dumps([dict(zip(names, map(_json_ready, row))) for row in rows])
        return f"{alias} AS (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS x ({types}))", [document]
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    params = [field.get_db_prep_save(value, connection) for row in rows for (_, field), value in zip(columns, row)]
    return f"{alias} ({', '.join(names)}) AS (VALUES {', '.join([row_sql] * len(rows))})", params


def _json_ready(value: Any) -> Any:
    # A claim token, or a file's name (a FieldFile); every other value here is JSON already.
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, FieldFile):
        return value.name
    return value


def _insert(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """Insert ``objs`` (their ids left unset) in one statement. ``bulk_create`` compiles the
    same INSERT with per-object and per-field machinery that cost as much as the completion's
    UPDATE itself; these rows are not read back by this process."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    source, params = _rows_cte("o", [(f"o_{f.column}", f) for f in fields], [[getattr(obj, f.attname) for f in fields] for obj in objs])
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {source} INSERT INTO {_q(model._meta.db_table)} ({', '.join(_q(f.column) for f in fields)}) "
            f"SELECT {', '.join(f'o_{f.column}' for f in fields)} FROM o",
            params,
        )


def _new_token_sql() -> str:
    """A fresh random claim token per row, made by the database (the rows are only known there)."""
    if connection.vendor == "postgresql":
        return "gen_random_uuid()"  # core since PostgreSQL 13
    return "lower(hex(randomblob(16)))"  # SQLite stores a UUIDField as 32 hex digits


def claim_rows(
    model: type[GenerationTask], worker: WorkerProcess, picked: tuple[str, Sequence[Any]]
) -> list[tuple[GenerationTask, uuid.UUID]]:
    """Claim the pending rows that the query ``picked`` (SQL and params selecting ids, locking
    them with ``FOR UPDATE SKIP LOCKED`` where the database has it) selects, in one statement.
    Returns ``(task, token)`` in claim order. Call inside the claim's transaction."""
    picked_sql, picked_params = picked
    now = timezone.now()
    table = _q(model._meta.db_table)
    if connection.vendor == "postgresql":
        # The picked ids as one array, looked up by primary key. As ``id IN (SELECT ...) AND
        # status = 'pending'`` the planner, on statistics that expect a few pending rows, made
        # it a nested-loop semi join over every pending row that rescans the picked rows for
        # each (auto_explain: 30-80 ms a claim at a few thousand pending, most of the
        # database's CPU in a drain). No status test: every picked row is pending and stays
        # so, locked by this transaction since the CTE took it (FOR UPDATE re-checks the
        # WHERE on the row it locks), and the test would let the planner scan the pending
        # index again.
        where = "id = ANY (ARRAY(SELECT picked_id FROM picked))"
        params_tail: list[Any] = []
    else:
        where = "id IN (SELECT picked_id FROM picked) AND status = %s"
        params_tail = [model.Status.PENDING]
    sql = (
        # The CTE's column is named here: a bare "id" in the subquery would be the outer
        # table's (a correlated subquery that claims every pending row).
        f"WITH picked (picked_id) AS ({picked_sql}) "
        f"UPDATE {table} SET status = %s, worker_id = %s, claim_token = {_new_token_sql()}, "
        "attempts = attempts + 1, progress = 0, started_at = %s, finished_at = NULL, updated_at = %s "
        f"WHERE {where} RETURNING {_returning(model)}"
    )
    ts = model._meta.get_field("started_at").get_db_prep_save(now, connection)
    worker_id = model._meta.get_field("worker").get_db_prep_save(worker.pk, connection)
    params = [*picked_params, model.Status.PROCESSING, worker_id, ts, ts, *params_tail]
    tasks = sorted(_fetch_tasks(model, sql, params, claim=True), key=lambda t: (-t.priority, t.turn, t.pk))
    for task in tasks:
        task.worker = worker  # the row's worker, so the log line names it without a query
    _announce(model, tasks, CLAIM_FIELDS, model.Status.PENDING)
    return [(task, task.claim_token) for task in tasks]


def complete_rows(
    model: type[GenerationTask], results: Sequence[tuple[GenerationTask, uuid.UUID, Completion]]
) -> tuple[list[GenerationTask], set[int]]:
    """Complete every ``(task, token, completion)`` whose claim still holds, in one statement
    (a lost claim is not in its ``WHERE``: canceled or taken back, the row is left as it is),
    then insert the kept tasks' outputs in one more. Returns the completed tasks (as stored,
    in the order given) and the ids whose claim was lost. Call inside a transaction."""
    if not results:
        return [], set()
    now = timezone.now()
    table = _q(model._meta.db_table)
    fields = {name: model._meta.get_field(name) for name in ("id", "claim_token", *_COMPLETION_COLUMNS)}
    columns = [("v_id", fields["id"]), ("v_token", fields["claim_token"]),
               *((f"v_{name}", fields[name]) for name in _COMPLETION_COLUMNS)]
    source, params = _rows_cte("v", columns, [
        (task.pk, token, done.result_name, done.content_type, done.compliance, done.mask_name, done.engine,
         done.needs_review)  # in _COMPLETION_COLUMNS' order
        for task, token, done in results
    ])

    def cast(name: str, column: str = "") -> str:
        # VALUES columns take their type from the rows: a column of NULLs is text on PostgreSQL.
        return f"CAST(v.{column or 'v_' + name} AS {fields[name].cast_db_type(connection)})"

    sets = ", ".join(f"{_q(name)} = {cast(name)}" for name in _COMPLETION_COLUMNS)
    sql = (
        f"WITH {source} "
        f"UPDATE {table} SET status = %s, progress = 100, {sets}, error_code = NULL, error_message = NULL, "
        "finished_at = %s, claim_token = NULL, updated_at = %s "
        f"FROM v WHERE {table}.id = v.v_id AND {table}.status = %s AND {table}.claim_token = {cast('claim_token', 'v_token')} "
        f"RETURNING {_returning(model)}"
    )
    ts = model._meta.get_field("finished_at").get_db_prep_save(now, connection)
    params += [model.Status.COMPLETED, ts, ts, model.Status.PROCESSING]
    stored = {task.pk: task for task in _fetch_tasks(model, sql, params)}
    kept = [stored[task.pk] for task, _, _ in results if task.pk in stored]
    lost = {task.pk for task, _, _ in results if task.pk not in stored}
    done_by_id = {task.pk: done for task, _, done in results}
    # Every output of the batch in one insert, before the events that list them.
    outputs: list[TaskOutput] = []
    for task in kept:
        mine = [TaskOutput.from_record(task, i, r) for i, r in enumerate(done_by_id[task.pk].outputs)]
        task._outputs_cache = mine or None
        outputs += mine
    if outputs:
        _insert(TaskOutput, outputs)
    _announce(model, kept, COMPLETE_FIELDS, model.Status.PROCESSING)
    return kept, lost


def _announce(model: type[GenerationTask], tasks: list[GenerationTask], fields: tuple[str, ...], old: str) -> None:
    """What ``GenerationTask._save`` does after writing one row, for a set of rows written at
    once (all of them from status ``old``): the log line of each, their batches locked (after
    the task rows, before the owner's event counter), the events (the receiver of
    ``tasks_changed``: one call for each run of tasks outside batches), and after each batch
    task's event its batch's ``batch_update`` (``Batch.count_move``), as one by one."""
    if not tasks:
        return
    for task in tasks:
        log_transition(task, fields)
    batch_ids = sorted({task.batch_id for task in tasks if task.batch_id is not None})
    if not batch_ids:
        tasks_changed.send(sender=model, tasks=tasks)
        return
    batch_model = model.batch.field.related_model
    locked = {b.pk: b for b in batch_model.objects.select_for_update().filter(pk__in=batch_ids).order_by("id")}
    run: list[GenerationTask] = []
    for task in tasks:
        if task.batch_id is None:
            run.append(task)
            continue
        if run:
            tasks_changed.send(sender=model, tasks=run)
            run = []
        tasks_changed.send(sender=model, tasks=[task])
        locked[task.batch_id].count_move(old, task.status)
    if run:
        tasks_changed.send(sender=model, tasks=run)
    for batch in locked.values():
        batch.recount()  # the stored counts were stale (a row changed by hand): set them right


def picked_ids(query: Any) -> tuple[str, Sequence[Any]]:
    """The SQL and params of a queryset of task ids, for ``claim_rows``."""
    return query.values_list("pk", flat=True).query.sql_with_params()


def claimable_ids(model: type[GenerationTask], limit: int, exclude: Collection[int],
                  now: datetime.datetime | None = None, *, literal_status: bool = False) -> tuple[str, Sequence[Any]]:
    """The locking query of the next ``limit`` claimable ids (``TaskQuerySet.claimable_locked``).
    Compiled by the ORM once per shape (``_claim_template``), then only its parameters change:
    compiling the queryset at every claim cost 0.8-1.1 ms, on the path of every pick-up.
    ``literal_status``: the pending status in the SQL as a literal, not a parameter (for a
    prepared statement's generic plan, which can use the partial claim index only then), and
    the LIMIT a parameter, the last one (one prepared statement for every limit)."""
    exclude = list(exclude)
    template = _claim_template(model, limit, len(exclude), settings.IMAGEGEN_MAX_RUNNING_PER_USER, connection.vendor)
    params = list(template.params)
    now = template.prep_now(now or timezone.now())
    for i in template.now_at:
        params[i] = now
    for i, pk in zip(template.exclude_at, exclude):
        params[i] = pk
    if not literal_status:
        return template.sql, params
    return template.literal_sql, [*(p for i, p in enumerate(params) if i not in template.status_at), limit]


#: Stand-ins compiled in place of the claim's time and excluded ids, so their parameters can be
#: found in the compiled query (no claim runs at this instant; no task has a negative id).
_MARK_NOW = datetime.datetime(2000, 1, 1, 0, 0, 0, 123457, tzinfo=datetime.timezone.utc)
_MARK_ID = -7_301_013_000


@dataclass(frozen=True)
class _ClaimTemplate:
    sql: str
    params: tuple[Any, ...]
    now_at: tuple[int, ...]  # the positions of the claim's time (run_after, expires_at)
    exclude_at: tuple[int, ...]  # the positions of the excluded ids, in order
    prep_now: Callable[[datetime.datetime], Any]
    status_at: tuple[int, ...]  # the position of the pending status
    literal_sql: str  # ``sql`` with that status as a literal (its parameter left out), LIMIT a parameter


@lru_cache(maxsize=256)
def _claim_template(model: type[GenerationTask], limit: int, excluded: int, cap: int | None, vendor: str) -> _ClaimTemplate:
    """``claimable_locked`` compiled with the stand-ins (``cap`` and ``vendor`` only key the
    cache: both change the compiled SQL). The LIMIT is part of the SQL, so each ``limit`` is a
    shape of its own (at most ``MAX_BATCH`` of them)."""
    marks = [_MARK_ID - i for i in range(excluded)]
    # Django compiles FOR UPDATE only inside a transaction; the one-statement claim
    # (``claiming``) runs in autocommit, and nothing is executed here.
    with transaction.atomic(savepoint=False):
        sql, params = picked_ids(model.objects.claimable_locked(limit, marks, now=_MARK_NOW))
    field = model._meta.get_field("run_after")

    def prep_now(value: datetime.datetime) -> Any:
        return field.get_db_prep_value(value, connection)

    marked_now = prep_now(_MARK_NOW)
    now_at = tuple(i for i, p in enumerate(params) if type(p) is type(marked_now) and p == marked_now)
    exclude_at = tuple(next(i for i, p in enumerate(params) if type(p) is int and p == m) for m in marks)
    if len(now_at) != 2:  # run_after <= now, expires_at > now: a changed queryset must change this too
        raise AssertionError(f"the claim query's time is at {now_at}, expected two places")
    status_at = tuple(i for i, p in enumerate(params) if isinstance(p, str) and p == model.Status.PENDING)
    if vendor != "postgresql":  # the literal form is for PostgreSQL's prepared claim only (``claiming``)
        return _ClaimTemplate(sql, tuple(params), now_at, exclude_at, prep_now, status_at, "")
    pieces = sql.split("%s")
    if len(status_at) != 1 or len(pieces) != len(params) + 1:
        raise AssertionError(f"the claim query's status is at {status_at}, expected one place")
    from .creation import status_literal

    literal = pieces[0] + "".join(
        (status_literal(params[i]) if i in status_at else "%s") + piece for i, piece in enumerate(pieces[1:])
    )
    # ... and its LIMIT a parameter (the last one), so one prepared statement serves every limit.
    head, found, tail = literal.partition(f" LIMIT {limit} ")
    if not found or "%s" in tail or f" LIMIT {limit} " in tail:
        raise AssertionError("the claim query's LIMIT is not where the literal form expects it")
    literal = f"{head} LIMIT %s {tail}"
    return _ClaimTemplate(sql, tuple(params), now_at, exclude_at, prep_now, status_at, literal)
