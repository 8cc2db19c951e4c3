"""Independent steps of one task run beside each other, on the process' few spare threads.

Most of the engine's work after the model pass is one step after another on one core (OpenCV
spreads some calls over both, NumPy none), while the machine has two. Where a step's result is
not needed until later (the stored mask's PNG while the output is rendered, encoded and checked;
the review signals while the edge is refined), :func:`beside` starts it on a shared thread and the
caller collects it with ``.result()`` when it needs it. OpenCV, zlib and NumPy's array loops
release the GIL, so the two really run at once (docs/engine.md, "Runtime").

A step run here must not itself wait for another step run here (the pool is small and shared by
every task of the process); an exception it raises comes out of ``.result()``.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: Threads shared by every task of the process: a worker runs a few tasks at once, each with at
#: most two side steps in flight; a step that finds them all busy waits its turn (still correct,
#: only less overlapped).
SIDE_THREADS = 4

_pool = ThreadPoolExecutor(max_workers=SIDE_THREADS, thread_name_prefix="engine-side")


def beside(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Start ``fn(*args, **kwargs)`` on a side thread; its result (or exception) from ``.result()``."""
    return _pool.submit(fn, *args, **kwargs)
