"""A few-second, per-process memo for table-level figures read on hot paths (ETAs are
computed for every task event and listing; a slightly stale figure is fine there)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_memo: dict[str, tuple[float, object]] = {}


def memoized(key: str, ttl: float, compute: Callable[[], T]) -> T:
    """``compute()``, or its value from less than ``ttl`` seconds ago under ``key``."""
    now = time.monotonic()
    hit = _memo.get(key)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]  # type: ignore[return-value]
    value = compute()
    _memo[key] = (now, value)
    return value


def forget() -> None:
    """Drop every memoized figure (tests: a figure must not outlive the data it came from)."""
    _memo.clear()
