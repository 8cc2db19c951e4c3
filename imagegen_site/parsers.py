"""The JSON request parser every API view uses (a leaf: it imports no app)."""
from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser as DRFJSONParser


class JSONParser(DRFJSONParser):
    """DRF's parser, plus a 400 for JSON nested too deeply for Python's decoder.

    DRF catches only ``ValueError``; a body such as ``[[[[...]]]]`` a few thousand levels
    deep makes ``json.load`` raise ``RecursionError`` instead, which reached the client as a
    500 (also on the anonymous token endpoint). No request of this API nests more than a
    few levels, so such a body is simply bad input.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
