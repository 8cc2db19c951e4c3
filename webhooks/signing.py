"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256(secret bytes, "{id}.{timestamp}.{body}")>``.

The secret is ``whsec_`` + base64 of random bytes; the HMAC key is the decoded bytes.
Several signatures (after a rotation: new and old secret) are space-separated,
and a receiver accepts the message if any one of them verifies.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_header(secrets_in_use: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets_in_use)
