from __future__ import annotations

from typing import Any, Iterator

import pytest

from .receiver import Receiver


@pytest.fixture
def loopback(settings: Any) -> None:
    """Let endpoints point at a plain-HTTP receiver on 127.0.0.1 (the contract's test switches)."""
    settings.IMAGEGEN_FETCH_ALLOW_HTTP = True
    settings.IMAGEGEN_FETCH_ALLOW_PRIVATE = True


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


# The end-to-end fixtures (real daphne and runworker processes on the test database).
from tests.e2e.conftest import cluster, make_user  # noqa: E402, F401
