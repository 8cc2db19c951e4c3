"""The systemd units in deploy/systemd: systemd's own checker, and command lines the programs accept."""
from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daphne.cli import CommandLineInterface
from django.conf import settings

from generation.management.commands.runworker import Command as RunWorker

UNITS = Path(settings.BASE_DIR) / "deploy" / "systemd"
ENV_EXAMPLE = UNITS / "imagegen.env.example"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser["Service"]


def env_example() -> dict[str, str]:
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def exec_args(name: str, instance: str) -> list[str]:
    """The unit's ExecStart after the program, with systemd's specifiers and ${VARS} filled in."""
    line = unit(name)["ExecStart"].replace("%i", instance).replace("%H", "host-a")
    for key, value in env_example().items():
        line = line.replace("${%s}" % key, value)
    return shlex.split(line)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                    reason="systemd-analyze is not installed (Debian: apt-get install systemd)")
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # The shipped paths (/srv/imagegen, /etc/imagegen) point at this checkout and its venv, since
    # verify also checks that ExecStart's program exists and is executable.
    venv_bin = str(Path(sys.executable).parent) + "/"
    for source in UNITS.iterdir():
        text = (source.read_text().replace("/srv/imagegen/.venv/bin/", venv_bin)
                .replace("/srv/imagegen", str(settings.BASE_DIR))
                .replace("/etc/imagegen/imagegen.env", str(tmp_path / "imagegen.env")))
        (tmp_path / source.name).write_text(text)
    shutil.copy(ENV_EXAMPLE, tmp_path / "imagegen.env")
    names = ["imagegen-daphne@8001.service", "imagegen-runworker@9101.service", "imagegen.target"]
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", *[f"./{n}" for n in names]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Unknown keys and misplaced settings are only warnings (exit 0): they must not appear either.
    ours = [line for line in result.stderr.splitlines() if "imagegen" in line]
    assert ours == [], ours


def test_the_worker_unit_waits_longer_than_the_shutdown_grace_before_killing() -> None:
    worker = unit("imagegen-runworker@.service")
    grace = float(env_example()["IMAGEGEN_SHUTDOWN_GRACE"])
    assert grace == 20.0  # the settings default, so a machine without the line behaves the same
    # Releasing the unfinished tasks and deregistering takes a moment after the grace ends.
    assert int(worker["TimeoutStopSec"]) >= grace + 5
    assert (worker["KillSignal"], worker["KillMode"]) == ("SIGTERM", "mixed")


def test_both_units_restart_and_read_the_env_file() -> None:
    for name in ("imagegen-daphne@.service", "imagegen-runworker@.service"):
        service = unit(name)
        assert service["Restart"] == "always"
        assert service["EnvironmentFile"] == "/etc/imagegen/imagegen.env"
        assert service["WorkingDirectory"] == "/srv/imagegen"


def test_the_programs_accept_the_units_command_lines() -> None:
    web = CommandLineInterface().parser.parse_args(exec_args("imagegen-daphne@.service", "8001")[1:])
    assert (web.host, web.port, web.proxy_headers, web.application) == (
        "127.0.0.1", 8001, True, "imagegen_site.asgi:application")
    program, manage, command, *rest = exec_args("imagegen-runworker@.service", "9101")
    assert (manage, command) == ("manage.py", "runworker")
    worker = RunWorker().create_parser("manage.py", "runworker").parse_args(rest)
    assert (worker.concurrency, worker.metrics_port, worker.worker_id) == (2, 9101, "host-a-9101")
