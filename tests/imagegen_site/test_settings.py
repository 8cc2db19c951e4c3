"""Every setting with a format is checked when the process starts, not at the first request that meets it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"DJANGO_SETTINGS_MODULE": "imagegen_site.settings", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=Path(django_settings.BASE_DIR),
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("name", "value", "example"), [
    ("THROTTLE_TOKEN", "100000", "THROTTLE_TOKEN=120/min"),  # a rate without its period: DRF would 500 later
    ("THROTTLE_SUBMIT", "ten/min", "THROTTLE_SUBMIT=120/min"),
    ("THROTTLE_USER", "5/fortnight", "THROTTLE_USER=120/min"),
    ("IMAGEGEN_FIDELITY_MODE", "maybe", "IMAGEGEN_FIDELITY_MODE=fail"),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL=debug"),
    ("REDIS_URL", "127.0.0.1:6379", "REDIS_URL=redis://127.0.0.1:6379/0"),
])
def test_a_setting_in_a_bad_format_stops_the_start_naming_the_variable_and_an_example(
        name: str, value: str, example: str) -> None:
    done = start({name: value})
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and example in done.stderr, done.stderr[-600:]


def test_well_formed_values_start() -> None:
    done = start({"THROTTLE_TOKEN": "100000/hour", "LOG_LEVEL": "warning", "IMAGEGEN_FIDELITY_MODE": "flag"})
    assert done.returncode == 0, done.stderr[-600:]
