"""``Prefer: wait=N`` on ``POST /api/tasks/``: answer once the task is finished, or after N seconds.

The wait is asynchronous: the submit itself runs in the default thread pool for
the few milliseconds it takes, then the request waits on the task's own events
with no thread held and nothing polled, and finally reads the task once more.

Where the waiting lives: the events are the realtime side's (``notifications``),
and ``generation`` never imports it. So this module defines the hook
(``wait_for_task_with``) and ``NotificationsConfig.ready()`` registers the wait on
the user's event group into it, the way it registers ``last_seq`` and the event
purge. The HTTP part (the header, the answer) stays here with the other task
endpoints. Without a registered waiter (``notifications`` not installed) the
preference is simply not applied, as RFC 7240 allows: no ``Preference-Applied``.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

logger = logging.getLogger(__name__)

PREFER_HEADER = "Prefer"
MAX_WAIT = 60

#: ``await waiter(user_id, task_id, timeout, finished)`` returns when the task's
#: finishing event arrived or ``timeout`` seconds passed; ``finished()`` reads the
#: task's state (the waiter calls it once it listens, so a task that finished
#: before cannot be missed).
TaskWaiter = Callable[[int, int, float, Callable[[], Awaitable[bool]]], Awaitable[None]]

_waiter: TaskWaiter | None = None

def wait_for_task_with(waiter: TaskWaiter | None) -> None:
    """Register how a request waits for a task's finishing event (``notifications.apps``)."""
    global _waiter
    _waiter = waiter


def parse_prefer_wait(values: str | None) -> int | None:
    """The seconds of a ``wait`` preference (RFC 7240), None without one.

    Other preferences (``respond-async``, ``return=minimal``...) are ignored, as
    the RFC asks. A ``wait`` that is not a whole number of seconds from 1 to 60
    raises ValueError (the API's 400 naming the header): silently not waiting
    would look like a task that never finishes.
    """
    if not values:
        return None
    for preference in values.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        raw = value.strip().strip('"')
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_WAIT:
            raise ValueError(f"wait must be a whole number of seconds from 1 to {MAX_WAIT}, not {raw!r}.")
        return int(raw)
    return None


def waits(request: HttpRequest) -> int | None:
    """The valid wait of a submit request, else None (a bad one is the view's 400)."""
    if request.method != "POST":
        return None
    try:
        return parse_prefer_wait(request.headers.get(PREFER_HEADER))
    except ValueError:
        return None


def _task_body(task_id: int) -> dict[str, Any] | None:
    from .models import GenerationTask

    task = GenerationTask.objects.filter(pk=task_id).first()
    return task.live_state() if task is not None else None


def _is_finished(task_id: int) -> bool:
    from .models import GenerationTask

    return GenerationTask.objects.filter(pk=task_id, status__in=GenerationTask.FINISHED).exists()


# Off Django's per-request sync thread: in the default pool, with stale
# connections closed around each call (as the long-poll reads the log).
_atask_body = database_sync_to_async(_task_body, thread_sensitive=False)
_ais_finished = database_sync_to_async(_is_finished, thread_sensitive=False)


def waiting_submit(view: Callable[..., HttpResponse]) -> Callable[..., Awaitable[HttpResponse]]:
    """Wrap the tasks collection view (list + create) so a submit may wait.

    Without a valid ``Prefer: wait`` the request goes to the view exactly as
    Django would send a sync view. With one, the view runs in the shared
    thread pool and the wait that follows is a coroutine.
    """

    @functools.wraps(view)  # keeps the DRF view's attributes (cls, actions) for the schema
    async def collection(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        wait = waits(request)
        if wait is None or _waiter is None:
            return await sync_to_async(view)(request, *args, **kwargs)
        deadline = time.monotonic() + wait
        response = await database_sync_to_async(view, thread_sensitive=False)(request, *args, **kwargs)
        data = getattr(response, "data", None)
        if response.status_code not in (200, 201) or not isinstance(data, dict) or "id" not in data:
            return response
        task_id, user_id = int(data["id"]), int(request.user.pk)
        if data.get("status") not in ("completed", "failed", "canceled"):
            remaining = deadline - time.monotonic()
            if remaining > 0:
                await _waiter(user_id, task_id, remaining, functools.partial(_ais_finished, task_id))
            body = await _atask_body(task_id)
            if body is not None:  # purged meanwhile: answer what the submit saw
                response.data = body  # DRF renders .data after the view returns
        response["Preference-Applied"] = f"wait={wait}"
        return response

    return csrf_exempt(collection)
