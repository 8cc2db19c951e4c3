"""Shared object storage (STORAGE_URL) with real processes: an S3-compatible server (moto's
standalone server), a web process and a worker on different MEDIA_ROOTs, one PostgreSQL."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from generation.models import GenerationTask
from tests.conftest import accepts, free_port, product_photo, wait_until
from tests.notifications.support import token_for

pytestmark = pytest.mark.django_db(transaction=True)
BUCKET = "imagegen-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.skip("moto_server not installed (requirements-dev.txt: moto[server])")
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: accepts(port) or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, (tmp_path / "moto.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def bucket(endpoint: str) -> Any:
    import boto3

    return boto3.resource("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing").Bucket(BUCKET)


def keys(endpoint: str) -> set[str]:
    return {obj.key for obj in bucket(endpoint).objects.all()}


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_web_and_worker_on_different_machines_share_files_through_the_store(
        cluster: Any, s3_endpoint: str, make_user: Any, tmp_path: Path) -> None:
    bucket(s3_endpoint).create()
    storage = {"STORAGE_URL": f"s3://{BUCKET}?endpoint_url={s3_endpoint}", **CREDENTIALS}
    web_media, worker_media = tmp_path / "web-media", tmp_path / "worker-media"
    port = cluster.daphne("web", MEDIA_ROOT=str(web_media), **storage)
    cluster.worker("worker", MEDIA_ROOT=str(worker_media), **storage)
    user = make_user()
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token_for(user)}"},
                       timeout=30)
    photo = product_photo()

    created = api.post("/api/tasks/", files={"image": ("shoe.jpg", photo, "image/jpeg")})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    wait_until(lambda: GenerationTask.objects.get(pk=task_id).status == "completed", timeout=60, interval=0.1)
    task = GenerationTask.objects.get(pk=task_id)

    # Both files are objects in the store; neither machine kept one of its own.
    assert keys(s3_endpoint) == {task.input_image.name, task.result_image.name}
    assert files_under(web_media) == [] and files_under(worker_media) == []

    # The owner's download is a short-lived presigned redirect to the store...
    redirect = api.get(f"/api/tasks/{task_id}/result/")
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    # ...signed with SigV4 (the legacy signature, boto3's default for presigned S3 links, is
    # refused by AWS in newer regions and on new buckets).
    assert location.startswith(f"{s3_endpoint}/{BUCKET}/results/") and "X-Amz-Signature=" in location
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in location and "X-Amz-Expires=300" in location
    assert redirect.headers["cache-control"] == "private, no-store"
    # ...which a client follows to the bytes the worker wrote.
    followed = api.get(f"/api/tasks/{task_id}/result/", follow_redirects=True)
    assert followed.status_code == 200
    assert followed.content == bucket(s3_endpoint).Object(task.result_image.name).get()["Body"].read()
    assert followed.content[:2] == b"\xff\xd8" and followed.headers["content-type"] == "image/jpeg"
    original = api.get(f"/api/tasks/{task_id}/input/", follow_redirects=True)
    assert original.status_code == 200 and original.content == photo

    # The owner check still comes first: another user gets a 404, no link.
    stranger = httpx.get(f"http://127.0.0.1:{port}/api/tasks/{task_id}/result/",
                         headers={"Authorization": f"Bearer {token_for(make_user())}"})
    assert stranger.status_code == 404 and "location" not in stranger.headers

    # Retention (here by hand, as the workers do when due) deletes the objects with the row.
    GenerationTask.objects.filter(pk=task_id).update(finished_at=timezone.now() - timedelta(days=2))
    purge = subprocess.run([sys.executable, "manage.py", "purge_tasks", "--older-than", "1d", "--json"],
                           env={**cluster.env, "MEDIA_ROOT": str(tmp_path / "ops-media"), **storage},
                           cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert purge.returncode == 0, purge.stderr
    assert not GenerationTask.objects.filter(pk=task_id).exists()
    assert keys(s3_endpoint) == set()
    api.close()


def test_a_bad_storage_url_stops_the_start_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "imagegen_site.settings",
             "STORAGE_URL": "s3://bucket?endpont_url=http://x"},
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "STORAGE_URL: unknown option 'endpont_url'" in result.stderr
