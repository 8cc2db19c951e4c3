"""``LOG_FORMAT=json``: one JSON object per log line, for log shippers.

The message is rendered with its %-args as usual; whatever a call passes in
``extra`` (``task_id``, ``user_id``, ``elapsed_ms``...) becomes a top-level key,
so a line like the per-transition log can be filtered without parsing text.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an extra holding a UUID or datetime must not cost the log line.
        return json.dumps(entry, default=str, ensure_ascii=False)
