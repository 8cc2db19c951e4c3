"""A 100-photo batch with three outputs each, against single-output tasks of the same photos.

Run on demand (not part of the test suite; scikit-image from requirements-dev.txt for the photos):

    .venv/bin/python bench/bench_batch.py [--photos 100] [--singles 10] [--concurrency 2] \
        [--segmenter auto] [--out docs/benchmarks/outputs.md]

The report is the section "## A batch of ..." of the --out file: it replaces that section if the
file has one and is appended otherwise (outputs.md's own table, from bench_outputs.py, stays).

Everything goes through the real queue of the embedded default (a fresh SQLite database in a temporary
folder, ``DEBUG=0``, the ``local`` backend) and one ``Worker(concurrency=N, burst=True)``, as the embedded
worker or one ``runworker`` process would run it:

1. singles, first half: ``--singles`` photos, each submitted as three single-output tasks (amazon, taobao,
   zalando), drained by the worker; the wall time over the outputs made is the time per output;
2. the batch: ``--photos`` photos in one ``Batch.submit`` (the API's path) with the same three outputs
   each; from the submit until the worker has drained it (the batch ``completed``), then its ZIP archive
   read to the end;
3. singles, second half: as 1, so the machine's load drift over the run touches both sides alike.

The photos are the three of ``bench_outputs.py`` (two synthetic scenes and scikit-image's coffee, 1600 x
1200), each photo a distinct crop of one of them (so no two files are the same bytes).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_outputs import OUTPUTS, _photos, _setup  # noqa: E402  (the same photos, outputs and set-up)

SECTION = "## A batch"


def _variants(count: int) -> list[bytes]:
    """``count`` distinct JPEGs: each a crop (a few pixels off each side) of one of the three photos."""
    from PIL import Image

    bases = [Image.open(io.BytesIO(photo)).convert("RGB") for photo in _photos().values()]
    out = []
    for index in range(count):
        base = bases[index % len(bases)]
        inset = 2 + index // len(bases)
        crop = base.crop((inset, inset, base.width - inset, base.height - inset))
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=92)
        out.append(buffer.getvalue())
    return out


def _drain(concurrency: int) -> float:
    """Run one burst worker until no task is left; its wall time."""
    from generation.worker import Worker

    started = time.perf_counter()
    worker = Worker(concurrency=concurrency, burst=True, worker_id=f"bench-{time.monotonic_ns()}")
    worker.run()
    return time.perf_counter() - started


def _task_seconds(tasks: Any) -> list[float]:
    """Each task's own run, claim to finish."""
    return [(t.finished_at - t.started_at).total_seconds() for t in tasks if t.started_at and t.finished_at]


def _singles(user: Any, photos: list[bytes], concurrency: int) -> dict[str, Any]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from generation.engine.spec import parse_job
    from generation.models import GenerationTask

    ids = []
    for index, photo in enumerate(photos):
        for spec in OUTPUTS:
            task, _ = GenerationTask.submit(user=user, image=SimpleUploadedFile(f"s{index}.jpg", photo),
                                            content_type="image/jpeg", options=parse_job(spec).to_options())
            ids.append(task.pk)
    wall = _drain(concurrency)
    tasks = list(GenerationTask.objects.filter(pk__in=ids))
    assert all(t.status == "completed" for t in tasks), [(t.pk, t.status, t.error_code) for t in tasks]
    return {"outputs": len(ids), "wall": wall, "task_seconds": _task_seconds(tasks)}


def _batch(user: Any, photos: list[bytes], concurrency: int) -> dict[str, Any]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from generation import archive
    from generation.engine.spec import parse_job
    from generation.models import Batch, BatchPart

    shared = {"outputs": json.dumps(OUTPUTS)}
    options = parse_job(shared).to_options()
    parts = [BatchPart(SimpleUploadedFile(f"p{index:03d}.jpg", photo), "image/jpeg", options, f"p{index:03d}.jpg")
             for index, photo in enumerate(photos)]
    started = time.perf_counter()
    batch, created = Batch.submit(user=user, parts=parts, options=shared)
    submitted = time.perf_counter() - started
    assert created
    drained = _drain(concurrency)
    batch.refresh_from_db()
    assert (batch.status, batch.completed) == ("completed", len(photos)), batch.counts
    tasks = batch.archive_tasks()
    outputs = sum(len(t.rendered_outputs()) for t in tasks)
    assert outputs == 3 * len(photos), outputs
    read_started = time.perf_counter()
    zipped = archive.stream(batch)
    size = sum(len(chunk) for chunk in zipped)
    read = time.perf_counter() - read_started
    return {"outputs": outputs, "submit": submitted, "wall": submitted + drained, "archive_bytes": size,
            "archive_seconds": read, "task_seconds": _task_seconds(tasks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--singles", type=int, default=10, help="photos done as single-output tasks (half before "
                        "the batch, half after)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--segmenter", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "outputs.md")
    args = parser.parse_args()

    begun = datetime.now(timezone.utc)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        user = _setup(Path(tmp), args.segmenter)
        photos = _variants(args.photos + args.singles)
        batch_photos, single_photos = photos[:args.photos], photos[args.photos:]
        half = len(single_photos) // 2
        _singles(user, single_photos[:1], 1)  # warm-up: the model loaded, caches filled (not counted)
        first = _singles(user, single_photos[:half], args.concurrency)
        loads.append(os.getloadavg()[0])
        print(f"singles (1/2): {first['outputs']} outputs in {first['wall']:.1f} s", flush=True)
        batch = _batch(user, batch_photos, args.concurrency)
        loads.append(os.getloadavg()[0])
        print(f"batch: {batch['outputs']} outputs in {batch['wall']:.1f} s", flush=True)
        second = _singles(user, single_photos[half:], args.concurrency)
        loads.append(os.getloadavg()[0])
        print(f"singles (2/2): {second['outputs']} outputs in {second['wall']:.1f} s", flush=True)

    singles_outputs = first["outputs"] + second["outputs"]
    singles_wall = first["wall"] + second["wall"]
    per_single = singles_wall / singles_outputs
    per_batch = batch["wall"] / batch["outputs"]
    single_tasks = first["task_seconds"] + second["task_seconds"]
    minutes = (datetime.now(timezone.utc) - begun).total_seconds() / 60
    lines = [
        f"{SECTION} of {args.photos} photos with three outputs each",
        "",
        f"Measured {begun:%Y-%m-%d %H:%M} UTC ({minutes:.0f} minutes) by `bench/bench_batch.py --photos {args.photos} "
        f"--singles {args.singles} --concurrency {args.concurrency} --segmenter {args.segmenter}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"1-minute load average {' / '.join(f'{v:.1f}' for v in loads)} at the start and after each phase "
        "(a machine shared with other work: compare the rows, which ran in the same run, rather than absolute "
        "times across runs).",
        "",
        "Everything goes through the embedded default's queue (SQLite, `DEBUG=0`, the `local` backend) and one "
        f"burst worker of concurrency {args.concurrency}. The batch is one `Batch.submit` (the API's path, files "
        "stored, one transaction) of every photo with `outputs` `amazon` (2000 x 2000 JPEG), `taobao` (800 x 800 "
        "JPEG) and `zalando` (1801 x 2600 JPEG), drained until it is `completed`; its ZIP is then read to the end. "
        "The single-output tasks render the same three files from other crops of the same photos, each "
        "photo as three tasks, half before the batch and half after it.",
        "",
        "| | outputs | wall time (s) | per output (s) | task run, claim to finish: median / p90 (s) |",
        "| --- | --- | --- | --- | --- |",
        f"| batch, 3 outputs per task | {batch['outputs']} | {batch['wall']:.1f} | {per_batch:.2f} | "
        f"{statistics.median(batch['task_seconds']):.2f} / {_p90(batch['task_seconds']):.2f} |",
        f"| single-output tasks | {singles_outputs} | {singles_wall:.1f} | {per_single:.2f} | "
        f"{statistics.median(single_tasks):.2f} / {_p90(single_tasks):.2f} |",
        "",
        f"Per output, the batch took {per_batch / per_single:.2f} of a single-output task's time. Submitting the "
        f"batch (storing {args.photos} files and writing {args.photos + 1} rows and their events; the parts were "
        f"built in process, so without the API's upload checks) took {batch['submit']:.2f} s; its archive "
        f"({batch['archive_bytes'] / 1e6:.1f} MB, {batch['outputs']} files and `manifest.csv`) was read in "
        f"{batch['archive_seconds']:.2f} s.",
        "",
        "What the ratio says: a task of three outputs makes its cut-out (decode, segmentation, refinement, "
        "shadow detection, review) once for three files, and the queue's own work (claim, input read, "
        "completion, events, the batch's counts) once per photo instead of once per file; what remains per "
        "output is its render, encode and compliance check, the same work on both sides. Per-task run times "
        "include waiting for the CPU under this load. One task's three outputs against three tasks of the "
        "same photo, run back to back, are in the table above (bench_outputs.py).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    before = args.out.read_text() if args.out.exists() else ""
    kept = before.split(f"\n{SECTION} ", 1)[0].rstrip("\n")
    args.out.write_text((kept + "\n\n" if kept else "") + "\n".join(lines))
    print(f"wrote {args.out}")


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


if __name__ == "__main__":
    main()
