"""The embedded default's own ``SECRET_KEY``: made once per install, kept beside the SQLite database.

A key that ships with the code is public: anyone who can reach the port could
sign a token for any user, the superuser included. So when ``SECRET_KEY`` is
not set and the database is a SQLite file, the first start writes a random key
to ``<database file>.secret_key`` (mode 0600) and every later start reads it
back: tokens and sessions survive restarts, and the key goes where the data
goes (a backup of the folder restores both). Several processes starting at once
agree on one key: the file appears whole or not at all (written aside, then
hard-linked into place, which fails if another process got there first).
"""
from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

MIN_LENGTH = 32  # shorter is not a key this module wrote, nor a usable one


def key_file_for(database: Path) -> Path:
    return database.with_name(database.name + ".secret_key")


def install_secret_key(path: Path) -> str:
    """The key stored at ``path``, written first if there is none (the caller's first start)."""
    if not path.exists():
        _write_once(path, get_random_secret_key())
    try:
        key = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImproperlyConfigured(f"Cannot read the generated SECRET_KEY from {path}: {exc}. Set SECRET_KEY.") from None
    if len(key) < MIN_LENGTH:
        raise ImproperlyConfigured(f"{path} does not hold a usable SECRET_KEY (too short): delete it or set SECRET_KEY.")
    return key


def _write_once(path: Path, key: str) -> None:
    aside = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another process started at the same moment: its key wins, ours is dropped
    except OSError as exc:
        raise ImproperlyConfigured(f"Cannot write a generated SECRET_KEY to {path}: {exc}. Set SECRET_KEY.") from None
    finally:
        aside.unlink(missing_ok=True)
