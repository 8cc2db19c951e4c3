from __future__ import annotations

from typing import Any

import pytest

from .support import isolate_channel_layer

isolate_channel_layer()


@pytest.fixture(autouse=True)
def _realtime_settings(settings: Any) -> None:
    settings.IMAGEGEN_BACKEND = "tests.generation.backends.QuickBackend"
    settings.IMAGEGEN_WS_PING_CHECK_SECONDS = 0.0
