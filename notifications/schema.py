"""``GET /api/events/`` in the OpenAPI schema.

The long-poll view is a plain async Django view (a DRF view would hold the
sync thread while it waits), so drf-spectacular cannot see it; this
post-processing hook describes it by hand, as docs/api.md does.
"""
from __future__ import annotations

from typing import Any

from generation.errors import ErrorCode

_NULLABLE_STR = {"type": "string", "nullable": True}

#: The component drf-spectacular makes of ``generation.serializers.OutputSerializer`` (the
#: task JSON's outputs): an event's outputs are the same objects, so they share its schema.
OUTPUT = "Output"

EVENT = {
    "type": "object",
    "required": ["type", "seq", "task_id", "timestamp", "data"],
    "properties": {
        "type": {"type": "string", "enum": ["task_created", "task_update", "task_complete", "task_failed",
                                            "task_canceled", "batch_update", "batch_complete",
                                            "webhook_disabled"]},
        "seq": {"type": "integer", "description": "Per user, from 1, gapless, in commit order."},
        "task_id": {"type": "integer", "nullable": True, "description": "Null for batch and webhook events."},
        "timestamp": {"type": "string", "format": "date-time"},
        "data": {
            "type": "object",
            "description": "task_* events: the task JSON as of the change. batch_* events: the batch JSON "
                           "(id, status, counts, total, progress, options, client_ref, archive_url, created_at, "
                           "finished_at, updated_at), without tasks.",
            "properties": {
                "status": {"type": "string", "enum": ["pending", "processing", "completed", "failed", "canceled"]},
                "progress": {"type": "integer", "minimum": 0, "maximum": 100},
                "result_image_url": _NULLABLE_STR,
                "outputs": {"type": "array", "description": "Every output once completed, in the order asked "
                                                            "for (the task JSON's outputs); empty before.",
                            "items": {"$ref": f"#/components/schemas/{OUTPUT}"}},
                "elapsed_time": {"type": "number", "nullable": True},
                "estimated_remaining_seconds": {"type": "integer", "nullable": True},
                "error_code": {"type": "string", "nullable": True, "enum": [*ErrorCode.values, None]},
                "error_message": _NULLABLE_STR,
                "updated_at": {"type": "string", "format": "date-time"},
            },
        },
    },
}

EVENTS_PAGE = {
    "type": "object",
    "required": ["events", "last_seq", "has_more", "recovered"],
    "properties": {
        "events": {"type": "array", "maxItems": 500, "items": {"$ref": "#/components/schemas/Event"}},
        "last_seq": {"type": "integer", "description": "The `after` to send next."},
        "has_more": {"type": "boolean"},
        "recovered": {"type": "boolean", "description": "False: events after `after` were purged (or `after` is "
                                                        "ahead of the log); reload GET /api/tasks/."},
    },
}

_ERROR = {"content": {"application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}}}

EVENTS_PATH = {
    "get": {
        "operationId": "events_list",
        "summary": "The caller's events after a seq (long-poll fallback for clients without WebSocket)",
        "tags": ["events"],
        "security": [{"jwtAuth": []}],
        "parameters": [
            {"name": "after", "in": "query",
             "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0},
             "description": "Return events with seq greater than this: any 64-bit seq (a cursor ahead of the log "
                            "answers no events and recovered false); a larger or negative value is a 400."},
            {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 30, "default": 0},
             "description": "Seconds (0-30) to wait for a new event when there is none yet; outside that, a 400."},
        ],
        "responses": {
            "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventsPage"}}},
                    "description": "Oldest first, at most 500."},
            "400": {**_ERROR, "description": "Bad after or wait."},
            "401": {**_ERROR, "description": "Missing or bad token."},
            "429": {**_ERROR, "description": "Throttled (scope events)."},
        },
    }
}


def add_events_path(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("paths", {})["/api/events/"] = EVENTS_PATH
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Event"], schemas["EventsPage"] = EVENT, EVENTS_PAGE
    return result


STREAM_PATH = {
    "get": {
        "operationId": "events_stream",
        "summary": "The caller's events as Server-Sent Events (replay after the cursor, sync_complete, then live)",
        "description": "Each event as `id: <seq>`, `event: <type>`, `data: <event JSON>`; `sync_complete` after "
                       "the replay; a `: keep-alive` comment every 15 s; a last `close` event (reason "
                       "`token_expired` or `key_revoked`) when the credential ends. The `Last-Event-ID` header "
                       "wins over `after` (a seq, as `after`; EventSource sends it on reconnect). Auth: "
                       "`Authorization: Bearer` or `Api-Key`, or `?token=` / `?api_key=`.",
        "tags": ["events"],
        "security": [{"jwtAuth": []}],
        "parameters": [
            {"name": "after", "in": "query",
             "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
             "description": "Replay events with seq greater than this first; without it (and without "
                            "Last-Event-ID), live events only."},
            {"name": "token", "in": "query", "schema": {"type": "string"},
             "description": "An access token, for clients that cannot set headers."},
            {"name": "api_key", "in": "query", "schema": {"type": "string"},
             "description": "An API key, for clients that cannot set headers."},
        ],
        "responses": {
            "200": {"content": {"text/event-stream": {"schema": {
                "type": "object",
                "description": "One message of the stream.",
                "properties": {
                    "id": {"type": "string", "description": "The event's seq (sync_complete: last_seq)."},
                    "event": {"type": "string", "description": "The event's type, sync_complete or close."},
                    "data": {"type": "string", "description": "The event as JSON, as on the WebSocket."},
                    "retry": {"type": "integer"},
                },
            }}}, "description": "An open stream of events."},
            "400": {**_ERROR, "description": "Bad after or Last-Event-ID."},
            "401": {**_ERROR, "description": "Missing, bad or expired token, or an unknown or revoked API key."},
            "429": {**_ERROR, "description": "Too many connection attempts or open connections (Retry-After)."},
        },
    }
}


TASK_STREAM_PATH = {
    "get": {
        "operationId": "tasks_events_stream",
        "summary": "One task's events as Server-Sent Events, ending after its final state",
        "description": "The owner's log narrowed to one task: its events from its first one (or after the cursor, "
                       "if later), each as on `/api/events/stream/` (`id: <seq>` of the owner's log), "
                       "`sync_complete` after the replay, keep-alive comments, then live events; after the "
                       "event of its final state (completed, failed or canceled) a last `close` event (reason "
                       "`task_finished`) and the stream ends. A reconnect with a `Last-Event-ID` at or after "
                       "that event is a 204, which stops EventSource. Auth as `/api/events/stream/`.",
        "tags": ["events"],
        "security": [{"jwtAuth": []}],
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"},
             "description": "The task's id (another user's is a 404)."},
            *STREAM_PATH["get"]["parameters"],
        ],
        "responses": {
            "200": STREAM_PATH["get"]["responses"]["200"],
            "204": {"description": "The task is finished and the cursor is at or after its last event."},
            "400": STREAM_PATH["get"]["responses"]["400"],
            "401": STREAM_PATH["get"]["responses"]["401"],
            "404": {**_ERROR, "description": "No such task of the caller."},
            "429": STREAM_PATH["get"]["responses"]["429"],
        },
    }
}
TASK_STREAM_PATH["get"]["parameters"][1] = {
    **TASK_STREAM_PATH["get"]["parameters"][1],
    "description": "Replay this task's events with seq greater than this; without it (and without "
                   "Last-Event-ID), the task's whole kept history.",
}


def add_stream_path(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    paths = result.setdefault("paths", {})
    paths["/api/events/stream/"] = STREAM_PATH
    paths["/api/tasks/{id}/events/stream/"] = TASK_STREAM_PATH
    return result
