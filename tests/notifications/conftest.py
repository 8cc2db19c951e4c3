from __future__ import annotations

from typing import Any, Iterator

import pytest

from .support import isolate_channel_layer, terminate_other_sessions

isolate_channel_layer()


@pytest.fixture(scope="session", autouse=True)
def _drop_pool_connections(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    # Consumers and the long-poll view read the log from the default thread pool,
    # whose threads keep their own connections.
    yield
    with django_db_blocker.unblock():
        terminate_other_sessions()


@pytest.fixture(autouse=True)
def _realtime_settings(settings: Any) -> None:
    settings.IMAGEGEN_BACKEND = "tests.generation.backends.QuickBackend"
    settings.IMAGEGEN_WS_PING_CHECK_SECONDS = 0.0
