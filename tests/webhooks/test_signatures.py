"""docs/webhooks.md's verification snippets (Python and Node) and the reference library, run against a
delivery this server made to a loopback receiver."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import wait_until
from webhooks.delivery import Dispatcher
from webhooks.models import WebhookEndpoint
from webhooks.signing import new_secret

from .receiver import Received, Receiver

DOC = Path(django_settings.BASE_DIR) / "docs" / "webhooks.md"
NODE_HARNESS = """
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
try {
  console.log(JSON.stringify({ok: verifyWebhook(input.secret, input.headers, Buffer.from(input.body, "base64"))}));
} catch (e) {
  console.log(JSON.stringify({error: e.message}));
}
"""


def snippet(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, f"expected one {language} block in docs/webhooks.md"
    return blocks[0]


def python_verify() -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(snippet("python"), str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["verify_webhook"]


def node_verify(secret: str, request: Received, body: bytes | None = None) -> dict:
    import base64

    payload = {"secret": secret, "headers": request.headers, "body": base64.b64encode(body or request.body).decode()}
    out = subprocess.run(["node", "-e", snippet("javascript") + NODE_HARNESS], input=json.dumps(payload),
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


@pytest.fixture
def delivered(loopback: None, settings: Any, user: Any, make_task: Any, receiver: Receiver
              ) -> tuple[Received, str, str]:
    """One real delivery signed with a rotated endpoint's new and old secrets."""
    settings.IMAGEGEN_WEBHOOK_POLL_INTERVAL = 0.02
    endpoint = WebhookEndpoint.create_for(user, url=receiver.url(), events=["task_created"])
    old = endpoint.secret
    new = endpoint.rotate_secret()
    make_task()
    dispatcher = Dispatcher("test")
    dispatcher.start()
    try:
        wait_until(lambda: receiver.received)
    finally:
        dispatcher.stop()
    return receiver.received[0], new, old


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_the_documented_snippets_and_the_reference_library_verify_our_deliveries(
        delivered: tuple[Received, str, str]) -> None:
    request, new, old = delivered
    event = request.json
    assert event["type"] == "task_created" and event["seq"] == 1
    verify = python_verify()
    for secret in (new, old):  # both during the grace period
        assert verify(secret, request.headers, request.body) == event
        assert node_verify(secret, request) == {"ok": event}
        assert Webhook(secret).verify(request.body, request.headers) == event

    tampered = request.body.replace(b'"seq":1', b'"seq":2')
    assert tampered != request.body
    with pytest.raises(ValueError, match="no valid signature"):
        verify(new, request.headers, tampered)
    assert node_verify(new, request, tampered) == {"error": "no valid signature"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(tampered, request.headers)
    with pytest.raises(ValueError, match="no valid signature"):
        verify(new_secret(), request.headers, request.body)  # any other key fails
    assert node_verify(new_secret(), request) == {"error": "no valid signature"}
