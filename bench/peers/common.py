"""The command line every peer module shares: ``drain`` and ``pickup``, one JSON line out."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")


def spawn(args: list[str], count: int, **env: str) -> list[subprocess.Popen]:
    """``count`` worker processes of a peer, run from the repository root, output discarded."""
    return [
        subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def while_running(workers: list[subprocess.Popen], measure: Callable[[], dict]) -> dict:
    """``measure()`` while the peer's ``workers`` run; they are stopped whatever happens."""
    try:
        return measure()
    finally:
        stop(workers)


def recreate_database(name: str) -> str:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{PG}/{name}"


def main(*, drain: Callable[[int, int], dict], pickup: Callable[[int], dict]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("drain", "pickup"))
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    started = time.monotonic()
    result = drain(args.tasks, args.processes) if args.what == "drain" else pickup(args.samples)
    result["wall"] = time.monotonic() - started
    print(json.dumps(result), flush=True)
    sys.exit(0)
