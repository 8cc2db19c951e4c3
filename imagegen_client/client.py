"""A small typed client for the imagegen REST API (httpx) and its event stream.

Imports no Django: it speaks the public HTTP and WebSocket interface only, so it
works against any imagegen server from any Python 3.11+ with httpx and websockets.
"""
from __future__ import annotations

import asyncio
import builtins
import json
import mimetypes
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

import httpx

from .auth import ApiKeyAuth, TokenAuth
from .errors import ImagegenError
from .events import TERMINAL_STATUSES, EventStream

__all__ = ["Batch", "Client", "ImagegenError", "Task"]

_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


class Task(TypedDict):
    """A task as the REST API returns it (``error_code``: see :class:`~imagegen_client.errors.ErrorCode`)."""

    id: int
    status: str
    progress: int
    queue_position: int | None
    attempts: int
    error_message: str | None
    error_code: str | None
    options: dict[str, Any]
    input_image_url: str
    result_image_url: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str
    elapsed_time: float | None
    estimated_remaining_seconds: int | None
    compliance: dict[str, Any] | None
    #: Every rendered output once completed: {"name", "preset", "format", "width", "height", "bytes", "url",
    #: "compliance"}; the first is also ``result_image_url``/``compliance``.
    outputs: builtins.list[dict[str, Any]]


class Batch(TypedDict):
    """A batch as the REST API returns it (``tasks`` only in REST answers, not in events)."""

    id: int
    status: str  # pending, processing, completed, canceled
    counts: dict[str, int]  # pending, processing, completed, failed, canceled
    total: int
    progress: int
    tasks: list[int]
    options: dict[str, Any]
    client_ref: str | None
    archive_url: str
    created_at: str
    finished_at: str | None
    updated_at: str


#: A batch is finished in these states: its archive holds everything it will.
FINISHED_BATCH_STATUSES = frozenset({"completed", "canceled"})


def form_fields(options: Mapping[str, object]) -> dict[str, str]:
    """Task options as the form fields the server parses (docs/api.md, "Task options"):
    ``hint_box`` as ``x0,y0,x1,y1``, ``outputs`` as JSON, ``presets`` comma-separated, the
    rest as text; None is left out. Batches share this: ``str()`` of a list or tuple is
    Python's repr, which the server refuses."""
    fields: dict[str, str] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name == "hint_box" and isinstance(value, (list, tuple)):
            fields[name] = ",".join(str(int(v)) for v in value)
        elif name == "outputs" and isinstance(value, (list, tuple)):
            fields[name] = json.dumps([dict(o) for o in value])
        elif name == "presets" and isinstance(value, (list, tuple)):
            fields[name] = ",".join(str(p) for p in value)
        else:
            fields[name] = str(value)
    return fields


class Client:
    """imagegen API client.

    Authenticate with ``username``/``password`` (a token pair is fetched on first
    use and renewed when it expires) or with an existing access ``token`` (and
    optionally its ``refresh_token``). REST methods are synchronous and safe to
    call from several threads; :meth:`events` is an async iterator.

    >>> client = Client("http://localhost:8000", username="alice", password="...")
    >>> task = client.submit("shoe.jpg", preset="etsy")
    >>> client.wait(task["id"])["status"]
    'completed'
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        refresh_token: str | None = None,
        api_key: str | None = None,
        event_transport: Literal["websocket", "sse"] = "websocket",
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: Signs every request (sync and async): renews the token pair (:class:`TokenAuth`), or sends
        #: the ``api_key`` (:class:`ApiKeyAuth`, which never expires).
        self.auth: TokenAuth | ApiKeyAuth = (
            ApiKeyAuth(api_key) if api_key is not None
            else TokenAuth(self.base_url, username=username, password=password, token=token,
                           refresh_token=refresh_token))
        self._timeout = timeout
        #: The push transport :meth:`events` (and so :meth:`wait`) uses unless told otherwise.
        self.event_transport = event_transport
        self._async_transport = async_transport
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport, auth=self.auth)

    # --- Lifecycle and auth ----------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def access_token(self) -> str:
        """A usable access token (renewed first when it is about to expire), e.g. for a WebSocket of your own."""
        if isinstance(self.auth, ApiKeyAuth):
            raise ValueError("This client signs in with an API key, not with tokens.")
        return self.auth.sync_token(self._http)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send (signed and renewed by :attr:`auth`); raises ImagegenError on 4xx/5xx."""
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ImagegenError.from_response(response)
        return response

    # --- Tasks ---------------------------------------------------------------------------------
    def submit(
        self,
        image: str | os.PathLike[str] | bytes | None = None,
        *,
        preset: str | None = None,
        size: int | None = None,
        format: str | None = None,
        margin: float | None = None,
        background: str | None = None,
        fit: str | None = None,
        shadow: str | None = None,
        hint_box: tuple[int, int, int, int] | None = None,
        outputs: Sequence[Mapping[str, Any]] | None = None,
        presets: Sequence[str] | str | None = None,
        idempotency_key: str | None = None,
        filename: str | None = None,
        client_ref: str | None = None,
        expires_in: int | None = None,
        image_url: str | None = None,
        wait: int | None = None,
    ) -> Task:
        """Upload a photo (a path or its bytes), or name one by ``image_url``, and queue
        it; returns the new task.

        With ``idempotency_key``, a repeat returns the task the first call
        created (the server answers 200 instead of 201), so a retried or
        re-run submission never queues the same work twice; the same key with
        another photo or other options raises ImagegenError (422,
        ``code == "idempotency_key_reused"``). ``background``, ``fit``,
        ``shadow`` and ``hint_box`` (x0, y0, x1, y1 in the photo's pixels) are
        the engine's options, described in docs/api.md. ``client_ref`` (your
        SKU, at most 200 characters) comes back in the task and its events;
        ``expires_in`` (1-86400 s): not started by then, the task ends canceled
        with ``error_code == "expired"``. ``wait`` (1-60 s) asks the server to
        answer once the task is finished, or after that long (``Prefer: wait``):
        the returned task may still be pending or processing.

        Several outputs from one upload (one cut-out, rendered per output):
        ``outputs=[{"preset": "amazon"}, {"preset": "taobao", "name": "tb"}]``
        (at most 8; each with any of preset, size, format, margin,
        background, fit, shadow and a ``name``), or the shorthand
        ``presets=["amazon", "taobao"]``. The other options given here are
        every output's defaults. Fetch each with ``download(id, path, output=name)``.
        """
        if (image is None) == (image_url is None):
            raise ValueError("pass exactly one of image and image_url")
        files: dict[str, Any] | None = None
        if image is not None:
            if isinstance(image, bytes):
                data, name = image, filename or "photo"
            else:
                path = Path(image)
                data, name = path.read_bytes(), filename or path.name
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            files = {"image": (name, data, content_type)}
        fields = form_fields({
            "preset": preset, "size": size, "format": format, "margin": margin,
            "background": background, "fit": fit, "shadow": shadow, "hint_box": hint_box,
            "outputs": outputs, "presets": presets,
            "client_ref": client_ref, "expires_in": expires_in, "image_url": image_url,
        })
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        extra: dict[str, Any] = {}
        if wait is not None:
            headers["Prefer"] = f"wait={int(wait)}"
            # The answer may take the whole wait: the read timeout must outlast it.
            extra["timeout"] = httpx.Timeout(self._timeout, read=max(self._timeout, wait + 30.0))
        if files is None:
            # The endpoint takes multipart only: send the fields as parts without a file name.
            response = self._request("POST", "/api/tasks/", files={k: (None, v) for k, v in fields.items()},
                                     headers=headers, **extra)
        else:
            response = self._request("POST", "/api/tasks/", files=files, data=fields, headers=headers, **extra)
        task: Task = response.json()
        return task

    def get(self, task_id: int) -> Task:
        task: Task = self._request("GET", f"/api/tasks/{task_id}/").json()
        return task

    def list(self, status: str | None = None, *, limit: int | None = None) -> builtins.list[Task]:
        """The caller's tasks, newest first, following pagination (up to ``limit`` tasks)."""
        tasks: builtins.list[Task] = []
        params: dict[str, Any] | None = {"status": status} if status else {}
        url = "/api/tasks/"
        while url:
            body = self._request("GET", url, params=params).json()
            tasks.extend(body["results"])
            if limit is not None and len(tasks) >= limit:
                return tasks[:limit]
            url, params = body.get("next"), None  # "next" carries the query already
        return tasks

    def last_seq(self) -> int:
        """The caller's newest event seq now: events(after=this) misses nothing that happens later."""
        body = self._request("GET", "/api/tasks/", params={"page_size": 1}).json()
        return int(body["last_seq"])

    def cancel(self, task_id: int) -> Task:
        task: Task = self._request("POST", f"/api/tasks/{task_id}/cancel/").json()
        return task

    def retry(self, task_id: int) -> Task:
        task: Task = self._request("POST", f"/api/tasks/{task_id}/retry/").json()
        return task

    def download(self, task_id: int, path: str | os.PathLike[str], *, output: str | int | None = None) -> Path:
        """Save the result image (or the ``output`` of that name or index); returns where it went.

        ``path`` may be an existing directory (the file is named
        ``task-<id>.<ext>``, or ``task-<id>-<output>.<ext>`` for an ``output``) or a file path; a file path without a suffix gets
        the image's (``out/shoe`` -> ``out/shoe.jpg``). The bytes go to a
        temporary file renamed into place, so an interrupted download never
        leaves a half image that looks finished.
        """
        target = Path(path)
        params = {"output": str(output)} if output is not None else None
        with self._http.stream("GET", f"/api/tasks/{task_id}/result/", params=params) as response:
            if response.status_code >= 400:
                response.read()
                raise ImagegenError.from_response(response)
            extension = _EXTENSIONS.get(response.headers.get("content-type", "").split(";")[0].strip(), ".bin")
            if target.is_dir():
                target = target / (f"task-{task_id}-{output}{extension}" if output is not None
                                   else f"task-{task_id}{extension}")
            elif not target.suffix:
                target = target.with_name(target.name + extension)
            _write_streamed(response, target)
        return target

    # --- Batches ------------------------------------------------------------------------------
    def submit_batch(
        self,
        photos: Sequence[str | os.PathLike[str]] | None = None,
        *,
        image_urls: Sequence[str] | None = None,
        client_ref: str | None = None,
        idempotency_key: str | None = None,
        **options: object,
    ) -> Batch:
        """Queue up to 100 photos as one batch sharing ``options`` (``preset``, ``size``, ...
        as :meth:`submit`): either ``photos`` (paths, uploaded and streamed, not read into
        memory) or ``image_urls`` (``https://`` addresses the server fetches itself), not both.

        The server checks every part first and refuses the whole batch if one is bad:
        :class:`ImagegenError` with ``status_code`` 400 and ``errors`` naming each bad part
        (``image[0]`` is the first photo, ``image_urls[2]`` the third URL), and nothing is
        created. (A URL's photo is checked once fetched: a bad one fails its own task.)
        With ``idempotency_key`` a repeat returns the first batch (HTTP 200), as for :meth:`submit`."""
        if (photos is None) == (image_urls is None):
            raise ValueError("pass exactly one of photos and image_urls")
        fields = form_fields(options)
        if client_ref is not None:
            fields["client_ref"] = client_ref
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if image_urls is not None:
            if isinstance(image_urls, str):
                raise TypeError("image_urls is a list of URLs, not one URL")
            body: dict[str, object] = {**fields, "image_urls": list(image_urls)}
            url_batch: Batch = self._request("POST", "/api/batches/", json=body, headers=headers).json()
            return url_batch
        paths = [Path(p) for p in photos or ()]
        handles = [path.open("rb") for path in paths]
        try:
            files = [("image", (path.name, handle, mimetypes.guess_type(path.name)[0] or "application/octet-stream"))
                     for path, handle in zip(paths, handles)]
            response = self._request("POST", "/api/batches/", files=files, data=fields, headers=headers)
        finally:
            for handle in handles:
                handle.close()
        batch: Batch = response.json()
        return batch

    def get_batch(self, batch_id: int) -> Batch:
        batch: Batch = self._request("GET", f"/api/batches/{batch_id}/").json()
        return batch

    def cancel_batch(self, batch_id: int) -> Batch:
        batch: Batch = self._request("POST", f"/api/batches/{batch_id}/cancel/").json()
        return batch

    def download_archive(self, batch_id: int, path: str | os.PathLike[str]) -> Path:
        """Save the batch's ZIP (every completed output and ``manifest.csv``) at ``path``,
        through a temporary file renamed into place."""
        target = Path(path)
        with self._http.stream("GET", f"/api/batches/{batch_id}/archive/") as response:
            if response.status_code >= 400:
                response.read()
                raise ImagegenError.from_response(response)
            _write_streamed(response, target)
        return target

    # --- Events --------------------------------------------------------------------------------
    def events(self, after: int | None = None, **options: Any) -> EventStream:
        """Async iterator over the caller's events with ``seq > after`` (None: from now on).

        Reconnects with backoff (also after a 5xx or 429, honouring
        ``Retry-After``), resumes where it stopped, drops duplicates, fills gaps
        from ``/api/events/`` and long-polls when the WebSocket is unavailable;
        see :mod:`imagegen_client.events`. ``options`` tune it
        (``transport="sse"`` for Server-Sent Events, ``ping_interval``, ``fallback_after``, ...).
        """
        http = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout, transport=self._async_transport,
                                 auth=self.auth)
        options.setdefault("transport", self.event_transport)
        return EventStream(http, self.auth.source(http), after, close_http=True, **options)

    async def wait_async(self, task_id: int, timeout: float | None = None) -> Task:
        """Wait until the task is completed, failed or canceled; returns it then."""
        after = await asyncio.to_thread(self.last_seq)  # before reading the state: nothing can slip between
        task = await asyncio.to_thread(self.get, task_id)
        if task["status"] in TERMINAL_STATUSES:
            return task

        async def follow() -> Task:
            async for event in self.events(after=after):
                if event["type"] == "reset" or (
                    event.get("task_id") == task_id and event["data"]["status"] in TERMINAL_STATUSES
                ):
                    latest = await asyncio.to_thread(self.get, task_id)
                    if latest["status"] in TERMINAL_STATUSES:
                        return latest
            raise AssertionError("the event stream does not end")

        return await asyncio.wait_for(follow(), timeout)

    def wait(self, task_id: int, timeout: float | None = None) -> Task:
        """Blocking :meth:`wait_async` for scripts (not from inside a running event loop)."""
        return asyncio.run(self.wait_async(task_id, timeout))


def _write_streamed(response: httpx.Response, target: Path) -> None:
    """Write a streamed body to ``target`` through a temporary file renamed into place, so an
    interrupted download never leaves a partial file under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
