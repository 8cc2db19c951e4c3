"""One ErrorCode enum: the engine, the schema and the page all speak it."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from generation.engine import EngineError
from generation.errors import ErrorCode

PAGE_SCRIPT = Path(__file__).resolve().parents[2] / "static" / "app" / "queue.js"


def page_error_texts() -> dict[str, str]:
    """The page's ERROR_TEXT table, read from its source (a flat object of code: "text" lines)."""
    source = PAGE_SCRIPT.read_text(encoding="utf-8")
    table = re.search(r"const ERROR_TEXT = \{(.*?)\n\};", source, re.S)
    assert table is not None, "ERROR_TEXT not found in static/app/queue.js"
    return dict(re.findall(r'^\s*([a-z_]+): "([^"]+)",?$', table.group(1), re.M))


def test_it_has_friendly_page_text_for_every_error_code_and_no_other() -> None:
    texts = page_error_texts()
    assert set(texts) == set(ErrorCode.values)
    assert all(text.strip() for text in texts.values())


def test_it_refuses_an_engine_error_code_outside_the_enum() -> None:
    with pytest.raises(ValueError):
        EngineError("fidelity", "no such code")


def test_it_keeps_an_engine_error_code_comparable_to_its_plain_value() -> None:
    error = EngineError("upstream_timeout", "slow", transient=True)
    assert error.code is ErrorCode.UPSTREAM_TIMEOUT
    assert error.code == "upstream_timeout" and f"{error.code}" == "upstream_timeout"


def test_it_publishes_the_error_codes_in_the_schema_of_tasks_and_events(api_client: Any) -> None:
    schemas = api_client.get("/api/schema/?format=json").json()["components"]["schemas"]
    assert schemas["ErrorCodeEnum"]["enum"] == ErrorCode.values
    assert {"$ref": "#/components/schemas/ErrorCodeEnum"} in schemas["Task"]["properties"]["error_code"]["oneOf"]
    event_code = schemas["Event"]["properties"]["data"]["properties"]["error_code"]
    assert set(event_code["enum"]) == {*ErrorCode.values, None}
