"""Coalescing the per-connection reads of many connections into one query per batch.

A reconnect storm (a proxy or a restart cutting every client at once) and a mass gap fill (every socket
finding a hole after a Redis blip) each ask the database or the cache the same small question once per
connection: whose token is this, what is this user's newest seq, which events follow seq N. One thread
hop and one round trip each, through a thread pool of a few threads, queue hundreds of handshakes behind
each other (measured: 1,000 connects at once on one daphne took 4-10 s, most of it waiting for PostgreSQL
round trips of three queries per connect).

A :class:`Batcher` collects the keys asked for while its previous call is in flight (or within the same
turn of the event loop) and answers all of them with one call of ``load_many`` in a worker thread: at
idle a lookup costs what it did (one hop), under a storm the batches grow instead of the queue.
"""
from __future__ import annotations

import asyncio
import weakref
from typing import Callable, Generic, Hashable, TypeVar

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Batcher(Generic[K, V]):
    """``await batcher.load(key)``: the value ``load_many(keys)[key]`` (``default`` when absent),
    ``load_many`` called once for every key asked for meanwhile, at most ``max_batch`` keys a call,
    one call in flight per event loop. An exception of ``load_many`` is raised to every caller of
    that batch."""

    def __init__(self, load_many: Callable[[list[K]], dict[K, V]], *, default: V, max_batch: int = 500,
                 database: bool = True) -> None:
        self.load_many = load_many
        self.default = default
        self.max_batch = max_batch
        # In the default thread pool, not Django's one sync thread (which serves sync HTTP views);
        # the database variant also closes the thread's stale connections around the call.
        self._call = (database_sync_to_async if database else sync_to_async)(load_many, thread_sensitive=False)
        # Per event loop: a future belongs to its loop, and a process may run more than one
        # (daphne's, plus a loop per async_to_sync call from a sync thread).
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _State[K, V]] = weakref.WeakKeyDictionary()
        self.calls = 0  # load_many calls so far (tests and benchmarks read it)

    async def load(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _State()
        future: asyncio.Future[V] = loop.create_future()
        state.pending.setdefault(key, []).append(future)
        if state.runner is None or state.runner.done():
            state.runner = loop.create_task(self._run(state))
        return await future

    async def _run(self, state: _State[K, V]) -> None:
        while state.pending:
            await asyncio.sleep(0)  # the callers of this turn of the loop join the batch
            keys = list(state.pending)[: self.max_batch]
            waiting = {key: state.pending.pop(key) for key in keys}
            try:
                self.calls += 1
                found = await self._call(keys)
            except BaseException as exc:  # noqa: BLE001 - handed to the callers, who handle it as before
                for futures in waiting.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for key, futures in waiting.items():
                value = found.get(key, self.default)
                for future in futures:
                    if not future.done():  # its connection went meanwhile
                        future.set_result(value)


class _State(Generic[K, V]):
    """One event loop's waiting lookups and the task that answers them."""

    def __init__(self) -> None:
        self.pending: dict[K, list[asyncio.Future[V]]] = {}
        self.runner: asyncio.Task[None] | None = None
