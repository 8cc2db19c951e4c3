"""``batch DIR --out DIR``: a folder of photos through the batches API, resumably.

``batch URLS.txt --out DIR`` does the same for a file of photo addresses, one
``https://`` URL a line (blank lines and ``#`` comments skipped): the server
fetches them (``{"image_urls": [...]}``), and archive entries are named after the
file name at the end of each URL.

The photos go up in batches of at most 100 (``POST /api/batches/``); the run then
follows the event stream until every batch is finished and saves each batch's
ZIP archive (its outputs and ``manifest.csv``) as ``OUT/batch-<id>.zip``.

Safe to interrupt (Ctrl-C) and run again:

* ``OUT/.imagegen-batch.json`` records which photos went into which batch, and is
  rewritten (atomically) after every upload and download; a re-run continues
  from it and never submits a photo twice;
* each upload carries an ``Idempotency-Key`` made from its photos' bytes and the
  options, so even an upload whose answer was lost to the interruption returns
  the same batch (HTTP 200) instead of a second one;
* archives are written to a temporary file and renamed.

A photo the server refuses (not an image, too small, a URL it will not fetch, ...)
would make its whole batch a 400 naming it: the run leaves it out, says why, and
sends the rest. (A URL's photo is checked once fetched: a bad one fails its own task.)
Batch progress comes from ``batch_update``/``batch_complete`` events (never by
polling): the cursor is taken before the first upload or state read, so no
change can happen unseen.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .client import FINISHED_BATCH_STATUSES, Batch, Client
from .errors import ImagegenError

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"})
CHUNK = 100  # the server's limit per batch
STATE_NAME = ".imagegen-batch.json"
_PART = re.compile(r"^image(?:_urls)?\[(\d+)\]$")  # image[i] (uploads) or image_urls[i] (URLs)


def discover(source_dir: Path) -> list[Path]:
    """The photos in ``source_dir``, sorted by name."""
    return sorted(p for p in source_dir.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def read_urls(path: Path) -> list[str]:
    """The photo URLs of a list file, in its order, each once; blank lines and ``#`` comments skipped."""
    # Whole-line comments only: a URL may hold a "#" fragment.
    lines = (line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


@dataclass
class Chunk:
    files: list[str]  # photo names inside the source folder (or the list's URLs), in upload order
    batch_id: int | None = None
    archive: str | None = None  # file name in the output folder, once saved
    status: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class State:
    """What a run has done so far, kept in the output folder."""

    source: str
    options: dict[str, str]
    chunks: list[Chunk] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # photo name -> the server's reason

    @classmethod
    def load(cls, path: Path) -> State | None:
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        chunks = [Chunk(**c) for c in raw.pop("chunks", [])]
        return cls(**raw, chunks=chunks)

    def save(self, path: Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out, indent=1)
        os.replace(tmp, path)

    @property
    def placed(self) -> set[str]:
        return {name for chunk in self.chunks for name in chunk.files} | set(self.refused)


def chunk_key(paths: list[Path], options: dict[str, str]) -> str:
    """Same photos (by content and name) and options, same key: the server then returns the first batch."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return "batch-" + digest.hexdigest()


def url_chunk_key(urls: list[str], options: dict[str, str]) -> str:
    """Same URLs (in order) and options, same key."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for url in urls:
        digest.update(url.encode() + b"\0")
    return "batch-urls-" + digest.hexdigest()


class BatchRun:
    def __init__(self, client: Client, source: Path, out: Path, options: dict[str, str], console: Console,
                 chunk: int = CHUNK) -> None:
        self.client = client
        self.chunk = chunk
        self.source = source
        self.out = out
        self.state_path = out / STATE_NAME
        self.console = console
        self.by_url = source.is_file()  # a list of URLs, not a folder of photos
        state = State.load(self.state_path)
        if state is not None and (state.source != str(source.resolve()) or state.options != options):
            raise SystemExit(f"{self.state_path} belongs to another run (another folder or other options): "
                             "use another --out, or delete that file to start over.")
        self.state = state or State(source=str(source.resolve()), options=options)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), console=console,
        )
        self.bar = self.progress.add_task("Processing", total=0, failed=0)
        self.finished = asyncio.Event()

    # --- Upload ------------------------------------------------------------------------------
    def plan(self) -> None:
        """New photos (all of them on a first run) go into new chunks of at most 100."""
        found = read_urls(self.source) if self.by_url else [p.name for p in discover(self.source)]
        new = [name for name in found if name not in self.state.placed]
        for start in range(0, len(new), self.chunk):
            self.state.chunks.append(Chunk(files=new[start:start + self.chunk]))
        self.state.save(self.state_path)

    def upload(self, chunk: Chunk) -> None:
        while chunk.files and chunk.batch_id is None:
            try:
                if self.by_url:
                    batch = self.client.submit_batch(image_urls=chunk.files, **self.state.options,
                                                     idempotency_key=url_chunk_key(chunk.files, self.state.options))
                else:
                    paths = [self.source / name for name in chunk.files]
                    batch = self.client.submit_batch(paths, idempotency_key=chunk_key(paths, self.state.options),
                                                     **self.state.options)
            except ImagegenError as exc:
                bad = {int(m.group(1)): v for k, v in exc.errors.items() if (m := _PART.match(k))}
                if exc.status_code != 400 or not bad:
                    raise
                for index, reason in bad.items():
                    name = chunk.files[index]
                    self.state.refused[name] = str(reason[0] if isinstance(reason, list) and reason else reason)
                chunk.files = [name for i, name in enumerate(chunk.files) if i not in bad]
                self.state.save(self.state_path)
                continue
            self.record(chunk, batch)
        if not chunk.files:
            self.state.chunks.remove(chunk)
        self.state.save(self.state_path)

    # --- Following -----------------------------------------------------------------------------
    def record(self, chunk: Chunk, batch: dict[str, Any] | Batch) -> None:
        chunk.batch_id, chunk.status, chunk.counts = batch["id"], batch["status"], dict(batch["counts"])

    def chunk_of(self, batch_id: int) -> Chunk | None:
        return next((c for c in self.state.chunks if c.batch_id == batch_id), None)

    def show(self) -> None:
        total = sum(len(c.files) for c in self.state.chunks)
        done = sum(c.counts.get(k, 0) for c in self.state.chunks for k in ("completed", "failed", "canceled"))
        failed = sum(c.counts.get(k, 0) for c in self.state.chunks for k in ("failed", "canceled"))
        self.progress.update(self.bar, total=total, completed=done, failed=failed + len(self.state.refused))

    def waiting(self) -> list[Chunk]:
        return [c for c in self.state.chunks if c.archive is None]

    async def settle(self, chunk: Chunk) -> None:
        """The batch finished: save its archive once."""
        if chunk.archive is not None or chunk.status not in FINISHED_BATCH_STATUSES:
            return
        assert chunk.batch_id is not None
        name = f"batch-{chunk.batch_id}.zip"
        chunk.archive = name  # before awaiting: a second event must not download again
        try:
            await asyncio.to_thread(self.client.download_archive, chunk.batch_id, self.out / name)
        except BaseException:
            chunk.archive = None
            raise
        self.state.save(self.state_path)
        if not self.waiting():
            self.finished.set()

    async def reload(self) -> None:
        for chunk in self.waiting():
            assert chunk.batch_id is not None
            self.record(chunk, await asyncio.to_thread(self.client.get_batch, chunk.batch_id))
            await self.settle(chunk)
        self.show()

    async def follow(self, after: int) -> None:
        async with aclosing(aiter(self.client.events(after=after))) as stream:
            async for event in stream:
                if event["type"] == "reset":  # events were purged before we read them
                    await self.reload()
                    continue
                if event["type"] not in ("batch_update", "batch_complete"):
                    continue
                data: dict[str, Any] = dict(event["data"])
                chunk = self.chunk_of(data["id"])
                if chunk is None or chunk.archive is not None:
                    continue
                self.record(chunk, data)
                self.show()
                await self.settle(chunk)

    async def run(self, timeout: float | None) -> State:
        self.plan()
        with self.progress:
            # The cursor first: whatever happens to our batches after it reaches us.
            after = await asyncio.to_thread(self.client.last_seq)
            for chunk in list(self.state.chunks):
                if chunk.batch_id is None:
                    await asyncio.to_thread(self.upload, chunk)
            self.show()
            if not self.waiting():
                return self.state
            follower = asyncio.create_task(self.follow(after))
            try:
                await self.reload()  # batches that finished before the cursor (a resumed run)
                if self.waiting():
                    done = asyncio.create_task(self.finished.wait())
                    finished, _ = await asyncio.wait({follower, done}, timeout=timeout,
                                                     return_when=asyncio.FIRST_COMPLETED)
                    done.cancel()
                    if follower in finished:
                        follower.result()  # the stream died: raise why
            finally:
                follower.cancel()
        return self.state


def run_batch(client: Client, source_dir: Path, out_dir: Path, *, options: dict[str, str], chunk: int = CHUNK,
              timeout: float | None = None, console: Console | None = None) -> State:
    console = console or Console(stderr=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(BatchRun(client, source_dir, out_dir, options, console, chunk).run(timeout))


def failed_count(state: State) -> int:
    unfinished = sum(len(c.files) for c in state.chunks if c.archive is None)
    failed = sum(c.counts.get("failed", 0) + c.counts.get("canceled", 0) for c in state.chunks if c.archive)
    return failed + unfinished + len(state.refused)


def summary(state: State, console: Console) -> None:
    table = Table("batch", "photos", "completed", "failed", "canceled", "archive", title="Batches")
    for chunk in state.chunks:
        table.add_row(str(chunk.batch_id or "-"), str(len(chunk.files)), str(chunk.counts.get("completed", 0)),
                      str(chunk.counts.get("failed", 0)), str(chunk.counts.get("canceled", 0)),
                      chunk.archive or "[yellow]not finished[/]")
    console.print(table)
    if state.refused:
        refused = Table("photo", "reason", title="Refused by the server (not sent)")
        for name, reason in sorted(state.refused.items()):
            refused.add_row(name, reason)
        console.print(refused)
    completed = sum(c.counts.get("completed", 0) for c in state.chunks if c.archive)
    bad = failed_count(state)
    console.print(f"[bold]{completed} done[/], [bold {'red' if bad else 'green'}]{bad} failed or refused[/]")


def as_json(state: State) -> dict[str, Any]:
    return asdict(state)
