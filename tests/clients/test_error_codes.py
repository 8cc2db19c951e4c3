"""The client's list of task error codes matches the server's (the client cannot import it)."""
from __future__ import annotations

import pytest

from imagegen_client import ErrorCode


def test_the_client_knows_exactly_the_error_codes_the_server_can_give() -> None:
    server = pytest.importorskip("generation.errors", reason="the server's ErrorCode enum is not in this tree")
    assert sorted(code.value for code in ErrorCode) == sorted(str(code.value) for code in server.ErrorCode)


def test_an_unknown_or_missing_code_is_none_not_an_error() -> None:
    assert ErrorCode.of("worker_lost") is ErrorCode.WORKER_LOST
    assert ErrorCode.of("a_code_from_a_newer_server") is None
    assert ErrorCode.of(None) is None
