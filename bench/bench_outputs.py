"""Several outputs per task: one task of three outputs against three tasks of one output each.

Run on demand (not part of the test suite; scikit-image from requirements-dev.txt for the photo):

    .venv/bin/python bench/bench_outputs.py [--rounds 5] [--segmenter auto] [--out docs/benchmarks/outputs.md]

Each task goes through the real queue of the embedded default (a fresh SQLite database in a temporary folder,
``DEBUG=0``, the ``local`` backend): submitted with ``GenerationTask.submit`` and run by ``Worker.run_once``
(claim, decode, cut, render, encode, check, store the files, record the completion and its event). Per
photo and round, the three-output task and the three single-output tasks (the same three renderings) run
back to back, in alternating order, so the shared machine's load moves both sides alike; the report gives
the medians of the wall time of ``run_once`` per task and the ratio of the sums.
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

OUTPUTS = [{"preset": "amazon"}, {"preset": "taobao"}, {"preset": "zalando"}]


def _photos() -> dict[str, bytes]:
    import numpy as np
    import skimage.data
    from PIL import Image

    from tests.generation import scenes

    def jpeg(rgb: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=92)
        return buf.getvalue()

    coffee = Image.fromarray(skimage.data.coffee()).resize((1600, 1200), Image.Resampling.LANCZOS)
    return {
        "synthetic 1600x1200 (plain backdrop)": jpeg(scenes.plain(1600, 1200).rgb),
        "synthetic 1600x1200 (cast shadow)": jpeg(scenes.shadowed(1600, 1200).rgb),
        "skimage coffee 1600x1200 (photo)": jpeg(np.asarray(coffee)),
    }


def _setup(folder: Path, segmenter: str) -> Any:
    os.environ.update({
        "DATABASE_URL": f"sqlite:///{folder / 'bench.sqlite3'}", "MEDIA_ROOT": str(folder / "media"),
        "DEBUG": "0", "SECRET_KEY": "bench-only-" + "x" * 40, "IMAGEGEN_BACKEND": "local",
        "IMAGEGEN_SEGMENTER": segmenter, "IMAGEGEN_EMBEDDED_WORKER": "0", "LOG_LEVEL": "WARNING",
        "IMAGEGEN_PREFETCH_WINDOW": "0",
    })
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagegen_site.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return get_user_model().objects.create_user("bench", password="bench-pass-123")


def _run(user: Any, photo: bytes, options: dict[str, Any]) -> tuple[float, Any]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from generation.engine.spec import parse_job
    from generation.models import GenerationTask
    from generation.worker import Worker

    task, _ = GenerationTask.submit(user=user, image=SimpleUploadedFile("photo.jpg", photo),
                                    content_type="image/jpeg", options=parse_job(options).to_options())
    worker = _run.worker = getattr(_run, "worker", None) or Worker(worker_id="bench")  # type: ignore[attr-defined]
    started = time.perf_counter()
    assert worker.run_once() is True
    elapsed = time.perf_counter() - started
    task.refresh_from_db()
    assert task.status == "completed", (task.error_code, task.error_message)
    return elapsed, task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--segmenter", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "outputs.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        user = _setup(Path(tmp), args.segmenter)
        photos = _photos()
        rows = []
        for label, photo in photos.items():
            _run(user, photo, {"outputs": json.dumps(OUTPUTS)})  # warm-up (model load, caches)
            multi: list[float] = []
            singles: list[float] = []
            for round_ in range(args.rounds):
                def one() -> None:
                    elapsed, task = _run(user, photo, {"outputs": json.dumps(OUTPUTS)})
                    assert len(task.rendered_outputs()) == 3
                    multi.append(elapsed)

                def three() -> None:
                    singles.append(sum(_run(user, photo, spec)[0] for spec in OUTPUTS))

                for step in ((one, three) if round_ % 2 == 0 else (three, one)):
                    step()
            m, s = statistics.median(multi), statistics.median(singles)
            rows.append((label, m, s, m / s))
            print(f"{label}: 3 outputs {m:.2f} s, 3 tasks {s:.2f} s, ratio {m / s:.2f}", flush=True)

    load = os.getloadavg()
    lines = [
        "# Several outputs per task: one cut, three renders",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/bench_outputs.py --rounds {args.rounds} "
        f"--segmenter {args.segmenter}` on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(a machine shared with other work: compare the two columns of a row, which ran interleaved in the "
        "same minutes, rather than absolute times across runs).",
        "",
        "Each task goes through the embedded default's queue (SQLite, `DEBUG=0`, the `local` backend, "
        "`Worker.run_once`: claim, decode, cut, render, encode, check, store, record). The three outputs are "
        "`amazon` (2000 x 2000 JPEG), `taobao` (800 x 800 JPEG) and `zalando` (1801 x 2600 JPEG). "
        "\"3 tasks\" is the sum of the three single-output tasks rendering the same three files.",
        "",
        "| photo | 1 task, 3 outputs (median s) | 3 tasks, 1 output each (median of the sums, s) | ratio "
        "| per output: shared cut / own task (s) |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {label} | {m:.2f} | {s:.2f} | {r:.2f} | {m / 3:.2f} / {s / 3:.2f} |" for label, m, s, r in rows],
        "",
        "What the ratio says: the cut-out (decode, segmentation, refinement, shadow detection, review) is made "
        "once instead of three times, plus one claim, one upload read and one completion instead of three; "
        "the renders, encodes and compliance checks of the three files are the same work on both sides and "
        "are what remains. Absolute times move with the machine's load (the engine's own figures, measured "
        "on a quieter machine, are in engine.md); the ratio is what this page measures.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
