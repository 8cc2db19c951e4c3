"""``python -m imagegen_client``: submit, watch and batch-process from a terminal.

Exit codes: 0 success; 1 a task (or any photo of a batch) failed or was
canceled; 2 usage, authentication or server errors; 130 interrupted (run the
same batch again to finish it).
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any, Sequence

import httpx
from rich.console import Console

from .batch import CHUNK, failed_count, run_batch, summary
from .client import Client
from .errors import ImagegenError
from .errors import StreamError

# The server's presets (generation.engine.presets; tests/clients/test_cli.py keeps them equal).
PRESETS = ("amazon", "walmart", "shopify", "etsy", "ebay", "taobao", "jd", "pinduoduo", "zalando", "mercadolibre",
           "google", "lazada", "tiktok", "temu")


def positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def chunk_size(raw: str) -> int:
    value = positive_int(raw)
    if value > CHUNK:
        raise argparse.ArgumentTypeError(f"a batch holds at most {CHUNK} photos")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imagegen_client", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("IMAGEGEN_URL", "http://localhost:8000"),
                        help="server base URL (env IMAGEGEN_URL; default %(default)s)")
    parser.add_argument("--username", default=os.environ.get("IMAGEGEN_USERNAME"), help="env IMAGEGEN_USERNAME")
    parser.add_argument("--password", default=os.environ.get("IMAGEGEN_PASSWORD"),
                        help="env IMAGEGEN_PASSWORD (prefer the env: arguments show in `ps`)")
    parser.add_argument("--api-key", default=os.environ.get("IMAGEGEN_API_KEY"),
                        help="env IMAGEGEN_API_KEY: sign in with an API key instead of a username and password")
    parser.add_argument("--transport", choices=("websocket", "sse"), default="websocket",
                        help="how `watch` and `--wait` receive live events (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log reconnects and fallbacks")
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="upload one photo (or name one by --url) and print its task as JSON")
    submit.add_argument("photo", type=Path, nargs="?", help="the photo to upload (or give --url)")
    # After the command, --url is the photo's address; the server's is the --url before it.
    submit.add_argument("--url", dest="image_url", metavar="IMAGE_URL",
                        help="an https:// address of the photo for the server to fetch, instead of PHOTO")
    submit.add_argument("--preset", choices=PRESETS, default="amazon")
    submit.add_argument("--wait", action="store_true", help="follow the task until it finishes")
    submit.add_argument("--out", type=Path, help="with --wait: save the result here (file or folder)")

    watch = commands.add_parser("watch", help="print live events, one JSON object per line")
    watch.add_argument("--after", type=int, default=None, help="replay events after this seq first")

    batch = commands.add_parser("batch", help="process every photo in a folder (or every URL in a list file) as "
                                "batches of up to 100 and save their ZIP archives (resumable: run it again after Ctrl-C)")
    batch.add_argument("source", type=Path, metavar="DIR_OR_URL_LIST",
                       help="a folder of photos, or a text file of photo URLs (one a line, # comments)")
    batch.add_argument("--out", type=Path, required=True,
                       help="folder for the archives (batch-<id>.zip) and the run's state file")
    batch.add_argument("--preset", choices=PRESETS, default="amazon")
    batch.add_argument("--chunk-size", type=chunk_size, default=CHUNK, help="photos per batch (1-%(default)s)")
    batch.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")

    listing = commands.add_parser("list", help="print your tasks as JSON lines, newest first")
    listing.add_argument("--status", choices=("pending", "processing", "completed", "failed", "canceled"))
    for name, text in (("get", "print one task"), ("cancel", "cancel a task"), ("retry", "retry a task")):
        one = commands.add_parser(name, help=text)
        one.add_argument("task_id", type=int)
    download = commands.add_parser("download", help="save a task's result")
    download.add_argument("task_id", type=int)
    download.add_argument("path", type=Path)
    return parser


def make_client(args: argparse.Namespace) -> Client:
    if args.api_key:
        return Client(args.url, api_key=args.api_key, event_transport=args.transport)
    if not args.username:
        raise SystemExit("Give --username (or IMAGEGEN_USERNAME), or --api-key (IMAGEGEN_API_KEY).")
    password = args.password
    if password is None:
        if not sys.stdin.isatty():
            raise SystemExit("Give --password (or IMAGEGEN_PASSWORD).")
        password = getpass.getpass(f"Password for {args.username}: ")
    return Client(args.url, username=args.username, password=password, event_transport=args.transport)


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def watch(client: Client, after: int | None) -> None:
    async with aclosing(aiter(client.events(after=after))) as stream:
        async for event in stream:
            emit(event)


def run(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        if args.command == "submit":
            task = client.submit(args.photo, preset=args.preset, image_url=args.image_url)
            if args.wait:
                task = client.wait(task["id"])
                if args.out and task["status"] == "completed":
                    client.download(task["id"], args.out)
            emit(task)
            return 0 if task["status"] != "failed" and task["status"] != "canceled" else 1
        if args.command == "watch":
            asyncio.run(watch(client, args.after))
            return 0
        if args.command == "batch":
            if not (args.source.is_dir() or args.source.is_file()):
                raise SystemExit(f"{args.source} is neither a folder of photos nor a file of URLs.")
            console = Console(stderr=True)
            state = run_batch(client, args.source, args.out, options={"preset": args.preset},
                              chunk=args.chunk_size, timeout=args.timeout, console=console)
            summary(state, Console())
            return 1 if failed_count(state) else 0
        if args.command == "list":
            for task in client.list(status=args.status):
                emit(task)
            return 0
        if args.command in ("get", "cancel", "retry"):
            emit(getattr(client, args.command)(args.task_id))
            return 0
        if args.command == "download":
            print(client.download(args.task_id, args.path))
            return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "submit" and (args.photo is None) == (args.image_url is None):
        parser.error("submit: give a photo to upload or --url with its address (one of them)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return run(args)
    except KeyboardInterrupt:
        print("Interrupted. Run the same command again to finish: nothing is submitted twice.", file=sys.stderr)
        return 130
    except ImagegenError as exc:
        print(f"Server said {exc.status_code}: {exc.detail}", file=sys.stderr)
        return 2
    except (httpx.TransportError, StreamError) as exc:
        print(f"Cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`imagegen watch | head -5`): stop quietly, as Unix tools do.
        # Python flushes stdout once more at exit; point it at /dev/null so that cannot raise too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
