"""A worker's new files on local disk: written whole, under the root, never over another file."""
from __future__ import annotations

import os
import stat

import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, InMemoryStorage

from generation.new_files import store_new


@pytest.fixture
def storage(tmp_path) -> FileSystemStorage:
    return FileSystemStorage(location=tmp_path, file_permissions_mode=0o640)


def test_a_new_file_is_written_whole_with_the_storages_permissions(storage, tmp_path):
    name = store_new("results/2026/12/01/abc.jpg", b"\xff\xd8jpeg bytes", storage)
    assert name == "results/2026/12/01/abc.jpg"
    path = tmp_path / name
    assert path.read_bytes() == b"\xff\xd8jpeg bytes"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert storage.open(name).read() == b"\xff\xd8jpeg bytes"


def test_an_existing_file_is_never_overwritten(storage, tmp_path):
    first = store_new("results/x/same.png", b"first", storage)
    second = store_new("results/x/same.png", b"second", storage)
    assert first == "results/x/same.png" and second != first
    assert (tmp_path / first).read_bytes() == b"first"
    assert (tmp_path / second).read_bytes() == b"second"


def test_a_directory_removed_meanwhile_is_made_again(storage, tmp_path):
    store_new("results/gone/a.jpg", b"a", storage)
    os.remove(tmp_path / "results/gone/a.jpg")
    os.rmdir(tmp_path / "results/gone")  # a purge took the empty directory
    name = store_new("results/gone/b.jpg", b"b", storage)
    assert (tmp_path / name).read_bytes() == b"b"


def test_a_name_outside_the_root_is_refused(storage):
    with pytest.raises(SuspiciousFileOperation):
        store_new("../escape.jpg", b"x", storage)
    with pytest.raises(SuspiciousFileOperation):
        store_new("/etc/escape.jpg", b"x", storage)


def test_other_storages_get_their_own_save():
    memory = InMemoryStorage()
    name = store_new("results/m.jpg", b"in memory", memory)
    assert memory.open(name).read() == b"in memory"


def test_an_upload_is_written_from_its_chunks_whole(storage, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("photo.jpg", b"\xff\xd8" + bytes(range(256)) * 300)
    upload.read(10)  # a caller that looked at it first: written from the start all the same
    name = store_new("inputs/2026/12/01/up.jpg", upload, storage)
    assert (tmp_path / name).read_bytes() == b"\xff\xd8" + bytes(range(256)) * 300


def test_an_upload_goes_to_other_storages_through_their_own_save():
    from django.core.files.uploadedfile import SimpleUploadedFile

    memory = InMemoryStorage()
    name = store_new("inputs/up.jpg", SimpleUploadedFile("up.jpg", b"upload bytes"), memory)
    assert memory.open(name).read() == b"upload bytes"
