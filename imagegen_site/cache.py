"""The cache for advisory data: a Redis backend that fails open, and one instance per process.

Everything this project keeps in the cache is advisory: DRF throttle history,
WebSocket connection-rate windows, open-connection counts. When Redis is down,
Django's ``RedisCache`` raises on every call, which turns a push outage into
500s on ``POST /api/tasks/``. This backend answers as an empty cache instead
(reads miss, writes are dropped, counters start fresh), so limits stop limiting
for the duration and nothing else breaks.

After a failure it does not touch Redis for ``RETRY_AFTER`` seconds: a Redis
that hangs rather than refuses would otherwise cost every request a socket
timeout per cache call.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, TypeVar

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_AFTER = 5.0


class FailOpenRedisCache(RedisCache):
    def __init__(self, server: str, params: dict) -> None:
        super().__init__(server, params)
        self._down_until = 0.0
        self._state_lock = threading.Lock()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _call(self, fallback: T, op: Callable[[], T]) -> T:
        if not self.available:
            return fallback
        try:
            result = op()
        except (RedisError, OSError) as exc:
            with self._state_lock:
                was_up = self.available
                self._down_until = time.monotonic() + RETRY_AFTER
            if was_up:
                logger.warning("Cache unavailable (%s); failing open for %.0fs at a time", exc, RETRY_AFTER)
            return fallback
        return result

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return self._call(False, lambda: super(FailOpenRedisCache, self).add(key, value, timeout, version))

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._call(default, lambda: super(FailOpenRedisCache, self).get(key, default, version))

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        self._call(None, lambda: super(FailOpenRedisCache, self).set(key, value, timeout, version))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return self._call(False, lambda: super(FailOpenRedisCache, self).touch(key, timeout, version))

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._call(False, lambda: super(FailOpenRedisCache, self).delete(key, version))

    def get_many(self, keys: Any, version: int | None = None) -> dict:
        return self._call({}, lambda: super(FailOpenRedisCache, self).get_many(keys, version))

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self._call(False, lambda: super(FailOpenRedisCache, self).has_key(key, version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        # A counter that cannot be read counts as fresh: limits built on it admit.
        return self._call(delta, lambda: super(FailOpenRedisCache, self).incr(key, delta, version))

    def set_many(self, data: dict, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list:
        return self._call(list(data), lambda: super(FailOpenRedisCache, self).set_many(data, timeout, version))

    def delete_many(self, keys: Any, version: int | None = None) -> None:
        self._call(None, lambda: super(FailOpenRedisCache, self).delete_many(keys, version))

    def clear(self) -> None:
        self._call(None, lambda: super(FailOpenRedisCache, self).clear())


_process_caches: dict[str, BaseCache] = {}
_process_lock = threading.Lock()


def process_cache(alias: str = DEFAULT_CACHE_ALIAS) -> BaseCache:
    """One cache backend instance for the whole process, for code that runs per connection.

    ``django.core.cache.cache`` is context-local (an asgiref ``Local``): every
    WebSocket connection is an asyncio task with its own context, so it would
    build its own ``RedisCache`` with its own connection pool, about one Redis
    connection (and ~7 KB) per open socket. Redis connection pools are
    thread-safe, and so is ``LocMemCache``: one instance serves every thread.
    """
    backend = _process_caches.get(alias)
    if backend is None:
        with _process_lock:
            backend = _process_caches.get(alias) or caches.create_connection(alias)
            _process_caches[alias] = backend
    return backend


@receiver(setting_changed)
def _forget_process_caches(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":
        _process_caches.clear()
