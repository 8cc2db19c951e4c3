"""The API's error answers in the OpenAPI schema, for every operation.

drf-spectacular documents what a view declares; the errors that come from the
framework around it (authentication, throttling, validation, unknown ids,
pagination, media types) it leaves out. This post-processing hook adds them by
rule, from what each operation has: every one can answer 401 (a bad bearer
token fails even on public views) and 429 (every view is throttled); one with
input (a body, query or header parameters) can answer 400; one with a path id
or a page number can answer 404; a body of the wrong media type is a 415; an
unsafe method under session authentication without its CSRF token is a 403.
Responses a view declares itself (409, 503, ...) keep their description. Every
error answer gets the one error body, ``Error``.
"""
from __future__ import annotations

from typing import Any

ERROR = {
    "type": "object",
    "description": "Every error answer of the API.",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, in a sentence (names the field for bad input)."},
        "code": {"type": "string", "description": "A stable machine-readable code, where the error has one."},
        "errors": {"type": "object", "additionalProperties": True,
                   "description": "Bad input only: the messages per field."},
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

DESCRIPTIONS = {
    "400": "Bad input: `detail` names the field.",
    "401": "Missing, bad or expired credentials.",
    "403": "Not allowed for this user, or a session-authenticated change without its CSRF token.",
    "404": "No such object of the caller's (another user's id is a 404 too), or no such page.",
    "415": "The body is not of a media type this operation reads.",
    "429": "Throttled: wait for the seconds in Retry-After.",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before trying again."}}
UNSAFE = {"post", "put", "patch", "delete"}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            for status in sorted(statuses_for(path, method, operation)):
                operation["responses"].setdefault(status, {"description": DESCRIPTIONS[status]})
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
                    response.setdefault("description", DESCRIPTIONS.get(status, "Error."))
                    if status in ("429", "503"):
                        response["headers"] = {**RETRY_AFTER, **response.get("headers", {})}
    return result


def statuses_for(path: str, method: str, operation: dict[str, Any]) -> set[str]:
    parameters = operation.get("parameters", [])
    statuses = {"401", "429"}
    if operation.get("requestBody") or any(p["in"] in ("query", "header") for p in parameters):
        statuses.add("400")
    if "{" in path or any(p["name"] == "page" and p["in"] == "query" for p in parameters):
        statuses.add("404")
    if operation.get("requestBody"):
        statuses.add("415")
    if method in UNSAFE and any("cookieAuth" in s for s in operation.get("security", [])):
        statuses.add("403")
    return statuses
