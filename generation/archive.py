"""A batch's ZIP archive: every completed output, named after its photo, plus ``manifest.csv``.

The ZIP is streamed (zipstream-ng): entries are read from storage as the
client downloads them, so neither memory nor disk holds the archive. Stored
images are already compressed, so entries are stored, not deflated.
"""
from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from zipstream import ZIP_STORED, ZipStream

from .models import Batch, GenerationTask

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("file", "task_id", "source", "client_ref", "status", "error_code", "error",
                    "output", "passed", "needs_review")
CHUNK = 256 * 1024
_UNSAFE = re.compile(r"[^\w.-]+")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ArchiveOutput:
    """One stored output file of a completed task."""

    name: str | None  # the output's name; None for a task's only output
    file: Any  # its FieldFile
    compliance: dict[str, Any] | None


def task_outputs(task: GenerationTask) -> list[ArchiveOutput]:
    """The completed task's output files (``GenerationTask.rendered_outputs``). A task with one
    output names its file after the photo alone; with several, ``<photo>_<output name>``."""
    outputs = task.rendered_outputs()
    if len(outputs) == 1:
        return [ArchiveOutput(None, outputs[0].file, outputs[0].compliance)]
    return [ArchiveOutput(o.name, o.file, o.compliance) for o in outputs]


def entry_stem(task: GenerationTask) -> str:
    """The archive name of a task's files: its client_ref, else its photo's file name
    (without extension), sanitised to letters, digits, ``.``, ``_`` and ``-``."""
    ref = getattr(task, "client_ref", None)
    raw = ref or PurePosixPath((task.source_name or "").replace("\\", "/")).stem
    text = _UNSAFE.sub("_", unicodedata.normalize("NFC", raw)).strip("._-")[:100]
    return text or f"task-{task.pk}"


def _cell(value: Any) -> str:
    # Client-given text that a spreadsheet would run as a formula is quoted.
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


@dataclass(frozen=True)
class Entry:
    arcname: str
    output: ArchiveOutput
    size: int


def plan(tasks: list[GenerationTask]) -> tuple[list[Entry], bytes]:
    """The archive's file entries (unique names, case-insensitively) and its manifest."""
    taken: set[str] = {MANIFEST.lower()}
    entries: list[Entry] = []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(MANIFEST_COLUMNS)
    for task in tasks:
        base = [task.pk, _cell(task.source_name), _cell(getattr(task, "client_ref", None)), task.status,
                task.error_code or "", task.error_message or ""]
        outputs = task_outputs(task)
        if not outputs:
            writer.writerow(["", *base, "", "", ""])
            continue
        for output in outputs:
            try:
                size = output.file.size
            except FileNotFoundError:  # purged or lost: listed, not archived
                writer.writerow(["", *base[:5], "the output file is no longer stored", output.name or "", "", ""])
                continue
            extension = output.file.name.rsplit(".", 1)[-1].lower()
            stem = entry_stem(task) + (f"_{_UNSAFE.sub('_', output.name)}" if output.name else "")
            arcname, n = f"{stem}.{extension}", 1
            while arcname.lower() in taken:
                n += 1
                arcname = f"{stem}-{n}.{extension}"
            taken.add(arcname.lower())
            entries.append(Entry(arcname, output, size))
            report = output.compliance or {}
            passed = report.get("passed")
            review = report.get("needs_review")
            writer.writerow([arcname, *base, output.name or "",
                             "" if passed is None else str(bool(passed)).lower(),
                             "" if review is None else str(bool(review)).lower()])
    return entries, buffer.getvalue().encode("utf-8")


def _read(output: ArchiveOutput) -> Iterator[bytes]:
    with output.file.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def stream(batch: Batch) -> ZipStream:
    """The batch's archive as a ZipStream (iterate it for the bytes; ``len()`` is its size)."""
    entries, manifest = plan(batch.archive_tasks())
    archive = ZipStream(compress_type=ZIP_STORED, sized=True)
    for entry in entries:
        archive.add(_read(entry.output), entry.arcname, size=entry.size)
    archive.add(manifest, MANIFEST)
    return archive
