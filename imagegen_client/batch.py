"""``batch DIR --out DIR``: process a folder of photos, resumably.

Safe to interrupt and run again:

* every photo is submitted with an ``Idempotency-Key`` derived from its bytes
  and the preset, so a re-run gets the tasks the first run created (HTTP 200)
  instead of queuing them again;
* a photo whose result already sits in ``--out`` is skipped without asking;
* results are written to a temporary file and renamed, so a download cut
  short never passes for a finished one.

Results arrive over the event stream (never by polling each task): the
snapshot's ``last_seq`` is taken *before* the first upload, so no change to
any of this run's tasks can happen unseen.
"""
from __future__ import annotations

import asyncio
import hashlib
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .client import Client
from .errors import ImagegenError
from .events import TERMINAL_STATUSES

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"})
RESULT_SUFFIXES = (".jpg", ".png", ".webp")


def idempotency_key(data: bytes, preset: str) -> str:
    """Same photo and preset, same key: the server then returns the first task."""
    return "batch-" + hashlib.sha256(data + b"\0" + preset.encode()).hexdigest()


@dataclass
class Item:
    source: Path
    output_stem: Path  # result path without its extension (the format decides it)
    task_id: int | None = None
    state: str = "new"  # new, submitted, downloading, done, skipped, failed
    reason: str | None = None


@dataclass
class BatchResult:
    items: list[Item] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for item in self.items if item.state == state)

    @property
    def failed(self) -> list[Item]:
        return [item for item in self.items if item.state not in ("done", "skipped")]


def discover(source_dir: Path, out_dir: Path) -> list[Item]:
    """The photos in ``source_dir`` (sorted), each with where its result goes."""
    photos = sorted(p for p in source_dir.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    stems = [p.stem for p in photos]
    items = []
    for photo in photos:
        # shoe.jpg and shoe.png would both become shoe.<ext>: keep the source suffix then.
        stem = photo.stem if stems.count(photo.stem) == 1 else f"{photo.stem}_{photo.suffix.lstrip('.').lower()}"
        items.append(Item(photo, out_dir / stem))
    return items


def existing_result(item: Item) -> Path | None:
    for suffix in RESULT_SUFFIXES:
        candidate = item.output_stem.with_name(item.output_stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


class Batch:
    def __init__(self, client: Client, items: list[Item], *, preset: str, concurrency: int,
                 retry_failed: bool, console: Console) -> None:
        self.client = client
        self.items = items
        self.preset = preset
        self.limit = asyncio.Semaphore(concurrency)
        self.retry_failed = retry_failed
        self.console = console
        self.by_task: dict[int, Item] = {}
        # Latest status seen in events for tasks whose upload has not returned yet.
        self.early: dict[int, tuple[str, str | None]] = {}
        self.remaining = 0
        self.all_settled = asyncio.Event()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), console=console,
        )
        self.bar = self.progress.add_task("Processing", total=len(items), failed=0)

    async def run(self, timeout: float | None) -> BatchResult:
        for item in self.items:
            if existing_result(item):
                item.state = "skipped"
        todo = [item for item in self.items if item.state == "new"]
        self.remaining = len(todo)
        with self.progress:
            self.progress.update(self.bar, completed=len(self.items) - len(todo))
            if todo:
                after = await asyncio.to_thread(self.client.last_seq)
                follower = asyncio.create_task(self._follow(after))
                try:
                    await asyncio.gather(*(self._submit(item) for item in todo))
                    settled = asyncio.create_task(self.all_settled.wait())
                    done, _ = await asyncio.wait({follower, settled}, timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    settled.cancel()
                    if follower in done:
                        follower.result()  # the stream died: raise why
                    for item in todo:
                        if item.state not in ("done", "failed"):
                            self._settle(item, "failed", "timed out waiting for the result")
                finally:
                    follower.cancel()
        return BatchResult(self.items)

    async def _submit(self, item: Item) -> None:
        async with self.limit:
            try:
                data = await asyncio.to_thread(item.source.read_bytes)
                task = await asyncio.to_thread(self.client.submit, data, filename=item.source.name,
                                               preset=self.preset, idempotency_key=idempotency_key(data, self.preset))
                if self.retry_failed and task["status"] in ("failed", "canceled"):
                    task = await asyncio.to_thread(self.client.retry, task["id"])
            except ImagegenError as exc:
                self._settle(item, "failed", exc.detail)
                return
        item.task_id, item.state = task["id"], "submitted"
        self.by_task[task["id"]] = item
        await self._on_status(item, task["status"], task["error_message"])
        if task["id"] in self.early:
            await self._on_status(item, *self.early.pop(task["id"]))

    async def _follow(self, after: int) -> None:
        async with aclosing(aiter(self.client.events(after=after))) as stream:
            async for event in stream:
                if event["type"] == "reset":
                    await self._reload()
                    continue
                status, error = event["data"]["status"], event["data"]["error_message"]
                item = self.by_task.get(event["task_id"])
                if item is None:
                    self.early[event["task_id"]] = (status, error)
                else:
                    await self._on_status(item, status, error)

    async def _reload(self) -> None:
        """Events were purged before we read them: ask for each unsettled task once."""
        for task_id, item in list(self.by_task.items()):
            if item.state == "submitted":
                task = await asyncio.to_thread(self.client.get, task_id)
                await self._on_status(item, task["status"], task["error_message"])

    async def _on_status(self, item: Item, status: str, error: str | None) -> None:
        if item.state != "submitted" or status not in TERMINAL_STATUSES:
            return
        if status != "completed":
            self._settle(item, "failed", error or f"the task was {status}")
            return
        item.state = "downloading"  # before awaiting: a second event must not download again
        assert item.task_id is not None
        try:
            async with self.limit:
                await asyncio.to_thread(self.client.download, item.task_id, item.output_stem)
        except ImagegenError as exc:
            self._settle(item, "failed", f"download failed: {exc.detail}")
            return
        self._settle(item, "done", None)

    def _settle(self, item: Item, state: str, reason: str | None) -> None:
        if item.state in ("done", "failed"):
            return  # a download that ends after the timeout already counted it
        item.state, item.reason = state, reason
        self.remaining -= 1
        failed = sum(1 for i in self.items if i.state == "failed")
        self.progress.update(self.bar, advance=1, failed=failed)
        if self.remaining <= 0:
            self.all_settled.set()


def run_batch(client: Client, source_dir: Path, out_dir: Path, *, preset: str, concurrency: int,
              retry_failed: bool = False, timeout: float | None = None, console: Console | None = None) -> BatchResult:
    console = console or Console(stderr=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = discover(source_dir, out_dir)
    batch = Batch(client, items, preset=preset, concurrency=concurrency, retry_failed=retry_failed, console=console)
    return asyncio.run(batch.run(timeout))


def summary(result: BatchResult, console: Console) -> None:
    console.print(
        f"[bold]{result.count('done')} done[/], {result.count('skipped')} already in the output folder, "
        f"[bold {'red' if result.failed else 'green'}]{len(result.failed)} failed[/]"
    )
    if result.failed:
        table = Table("photo", "task", "reason", title="Failed")
        for item in result.failed:
            table.add_row(item.source.name, str(item.task_id or "-"), item.reason or item.state)
        console.print(table)


def as_json(result: BatchResult) -> dict[str, Any]:
    return {
        "done": result.count("done"),
        "skipped": result.count("skipped"),
        "failed": [{"photo": i.source.name, "task_id": i.task_id, "reason": i.reason} for i in result.failed],
    }
