"""argparse types and output helpers shared by the operations commands.

A bad value fails in argparse with a message naming the option, which
``call_command`` and ``manage.py`` both turn into a ``CommandError``.
"""
from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand

from generation.models import GenerationTask

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(value: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``: a number and a unit, always both."""
    match = _DURATION.match(value)
    if match is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration such as 30d, 12h, 90m, 45s or 2w")
    return timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})


def format_duration(value: timedelta) -> str:
    """The largest unit that divides ``value`` exactly: 30d, 36h, 90m, 45s."""
    seconds = value.total_seconds()
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not number > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return number


def status_list(*allowed: str) -> Any:
    """A comma-separated list of task statuses, each one of ``allowed``."""

    def parse(value: str) -> list[str]:
        statuses = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = [s for s in statuses if s not in GenerationTask.Status.values]
        if unknown or not statuses:
            raise argparse.ArgumentTypeError(
                f"{value!r}: statuses are {', '.join(GenerationTask.Status.values)}"
            )
        refused = [s for s in statuses if s not in allowed]
        if refused:
            raise argparse.ArgumentTypeError(f"{', '.join(refused)} not allowed here; only {', '.join(allowed)}")
        return statuses

    return parse


def write_json(command: BaseCommand, data: Any) -> None:
    command.stdout.write(json.dumps(data, indent=2, default=str))
