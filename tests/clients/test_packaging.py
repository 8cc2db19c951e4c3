"""The client is its own package: it builds alone, declares what it needs, imports no Django, type-checks."""
from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .conftest import BASE_DIR

PACKAGE = BASE_DIR / "imagegen_client"

# Importing any of these from the client would tie it to the server.
SERVER_MODULES = ("django", "rest_framework", "channels", "daphne", "generation", "notifications", "imagegen_site")

IMPORT_ALONE = """
import importlib.abc, sys
wheel, blocked = sys.argv[1], set(sys.argv[2].split(","))
tried = []

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            tried.append(name)
            raise ImportError(f"{name} is not available to the client")
        return None

sys.meta_path.insert(0, Block())
sys.path.insert(0, wheel)
import imagegen_client, imagegen_client.cli, imagegen_client.batch
assert imagegen_client.__file__.startswith(wheel), imagegen_client.__file__
imagegen_client.cli.build_parser().parse_args(["list"])
imagegen_client.Client("http://server", token="t").close()
sys.exit(1 if tried else 0)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Offline and without build isolation: the backend (hatchling) is pinned in requirements-dev.txt.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(out), str(PACKAGE)], check=True, capture_output=True, timeout=120)
    (built,) = out.glob("imagegen_client-*.whl")
    return built


def test_the_wheel_holds_the_package_its_dependencies_and_the_cli(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()

    sources = {p.name for p in PACKAGE.glob("*.py")} | {"py.typed"}
    assert {n.removeprefix("imagegen_client/") for n in names if not n.startswith(dist_info)} == sources
    assert sorted(Requirement(r).name for r in metadata.get_all("Requires-Dist")) == ["httpx", "httpx-sse", "rich", "websockets"]
    assert metadata["Requires-Python"] == ">=3.11"
    assert "imagegen = imagegen_client.cli:main" in entry_points


def test_the_wheel_imports_and_runs_with_no_server_module_reachable(wheel: Path) -> None:
    result = subprocess.run([sys.executable, "-I", "-c", IMPORT_ALONE, str(wheel), ",".join(SERVER_MODULES)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_development_pins_satisfy_what_the_client_declares() -> None:
    declared = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]["dependencies"]
    # requirements-dev.txt includes requirements.txt (where httpx is pinned, for the server's URL guard).
    lines = [line for name in ("requirements.txt", "requirements-dev.txt")
             for line in (BASE_DIR / name).read_text().splitlines()]
    pins = {line.split("==")[0].split("[")[0]: line.split("==")[1] for line in lines
            if "==" in line and not line.startswith("#")}
    for requirement in map(Requirement, declared):
        assert requirement.specifier.contains(pins[requirement.name]), (requirement, pins.get(requirement.name))


def test_the_package_passes_mypy_strict() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(PACKAGE / "pyproject.toml"),
                             "--no-error-summary", str(PACKAGE)],
                            cwd=BASE_DIR, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
