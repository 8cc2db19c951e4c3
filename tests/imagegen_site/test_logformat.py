"""The JSON log format and the LOG_FORMAT switch."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from django.conf import settings as django_settings

from imagegen_site.logformat import JsonFormatter


def test_it_formats_records_as_one_json_object_with_the_extra_fields() -> None:
    record = logging.LogRecord("generation.models", logging.INFO, __file__, 1, "Task %d %s", (7, "completed"), None)
    record.task_id, record.elapsed_ms, record.worker = 7, 1234, None

    line = JsonFormatter().format(record)

    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "Task 7 completed" and entry["level"] == "INFO" and entry["logger"] == "generation.models"
    assert (entry["task_id"], entry["elapsed_ms"], entry["worker"]) == (7, 1234, None)
    assert entry["ts"].endswith("+00:00") and "args" not in entry and "msg" not in entry


def test_it_includes_the_traceback_of_an_exception() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert "ValueError: bad" in json.loads(JsonFormatter().format(record))["exc_info"]


def test_it_switches_the_console_to_json_with_log_format_json() -> None:
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('generation.models').info('Task %d %s', 5, 'completed', extra={'task_id': 5})"
    )
    env = {"DJANGO_SETTINGS_MODULE": "imagegen_site.settings", "LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(django_settings.BASE_DIR), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stderr.strip().splitlines()[-1])
    assert (entry["message"], entry["task_id"]) == ("Task 5 completed", 5)


def test_it_refuses_an_unknown_log_format() -> None:
    env = {"DJANGO_SETTINGS_MODULE": "imagegen_site.settings", "LOG_FORMAT": "xml", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=Path(django_settings.BASE_DIR),
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "LOG_FORMAT must be one of plain, json" in done.stderr
