"""The walls between the packages, read from the source: a new import across one fails here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The top of the house: they wire the apps together, so they may import any of them.
SITE_TOP = {"settings.py", "urls.py", "asgi.py"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (functions and TYPE_CHECKING blocks too),
    relative imports resolved against the file's package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = node.module or ""
            found.add(f"{base}.{module}".strip(".") if node.level else module)
    return found


def sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in files:
        bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in forbidden)
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


def test_it_reads_relative_and_nested_imports() -> None:
    stats = imported_modules(ROOT / "generation" / "stats.py")
    assert "generation.models" in stats
    assert "notifications.presence" in imported_modules(ROOT / "notifications" / "apps.py")


def test_generation_imports_notifications_only_in_its_admin() -> None:
    files = [p for p in sources("generation") if p.name != "admin.py"]
    assert offenders(files, ("notifications",)) == {}


@pytest.mark.parametrize("app", ["generation", "notifications"])
def test_imagegen_site_below_settings_urls_and_asgi_imports_no_app(app: str) -> None:
    files = [p for p in sources("imagegen_site") if p.name not in SITE_TOP]
    assert offenders(files, (app,)) == {}


def test_the_engine_imports_no_model_and_nothing_of_notifications() -> None:
    files = sources("generation/engine")
    assert offenders(files, ("notifications",)) == {}
    models = {path: m for path, m in offenders(files, ("generation",)).items()
              if any(name.startswith("generation.models") for name in m)}
    assert models == {}


@pytest.mark.parametrize("app", ["generation", "notifications", "imagegen_site"])
def test_webhooks_is_imported_by_no_other_package(app: str) -> None:
    # webhooks reads the event log and hooks into the worker; nothing depends on it
    # (the site's settings and urls name it as strings or include it, which is wiring).
    files = [p for p in sources(app) if not (app == "imagegen_site" and p.name in SITE_TOP)]
    assert offenders(files, ("webhooks",)) == {}
