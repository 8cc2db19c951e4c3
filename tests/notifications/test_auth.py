"""Who may connect: every close code, token expiry, Origin, attempt limits and the socket cap."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from notifications.presence import presence

from .support import close_code, open_socket, token_for

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_missing_token_is_closed_with_4001() -> None:
    assert await close_code(await open_socket()) == 4001


async def test_a_bad_token_is_closed_with_4001() -> None:
    assert await close_code(await open_socket("not-a-jwt")) == 4001


async def test_an_expired_token_is_closed_with_4001(user: Any) -> None:
    assert await close_code(await open_socket(token_for(user, lifetime=timedelta(seconds=-1)))) == 4001


async def test_an_inactive_users_token_is_closed_with_4001(user: Any) -> None:
    token = token_for(user)
    user.is_active = False
    await user.asave()
    assert await close_code(await open_socket(token)) == 4001


async def test_the_socket_is_closed_with_4001_when_its_token_expires(user: Any) -> None:
    # JWT expiry has whole-second precision: a 1 s token can be expired on arrival.
    ws = await open_socket(token_for(user, lifetime=timedelta(seconds=3)))
    assert (await ws.receive_json_from(10))["type"] == "sync_complete"
    assert await close_code(ws, timeout=15) == 4001


async def test_a_foreign_origin_is_closed_with_4003_and_logged(user: Any, settings: Any, caplog: Any) -> None:
    settings.WS_ALLOWED_ORIGINS = ["https://app.example.com"]
    with caplog.at_level(logging.WARNING, logger="notifications.auth"):
        ws = await open_socket(token_for(user), origin="https://evil.example.org")
        assert await close_code(ws) == 4003
    assert "WebSocket Origin rejected: 'https://evil.example.org' from 127.0.0.1" in caplog.text
    ok = await open_socket(token_for(user), origin="https://app.example.com")
    assert (await ok.receive_json_from(10))["type"] == "sync_complete"
    await ok.disconnect()


@pytest.mark.parametrize("allowed, host, origin, accepted", [
    # The default list is ALLOWED_HOSTS: the page must come from this server's own host and port.
    ([], "localhost:8000", "http://localhost:8000", True),
    ([], "localhost:8000", "http://localhost:9000", False),
    ([], "localhost", "http://localhost", True),
    ([], "localhost", "http://localhost:8080", False),
    ([], "localhost:443", "https://localhost", True),
    ([], "[::1]:8000", "http://[::1]:8000", True),
    ([], "[::1]:8000", "http://[::1]:8001", False),
    # A host pattern that names a port allows that port only.
    (["app.example.com:8443"], "ws.example.com", "https://app.example.com:8443", True),
    (["app.example.com:8443"], "ws.example.com", "https://app.example.com", False),
    # A full origin: scheme, host and port must all match (default ports made explicit).
    (["https://app.example.com"], "ws.example.com", "https://app.example.com:443", True),
    (["https://app.example.com"], "ws.example.com", "https://app.example.com:8443", False),
    (["https://app.example.com"], "ws.example.com", "http://app.example.com", False),
    (["https://app.example.com:8443"], "ws.example.com", "https://app.example.com:8443", True),
    (["https://app.example.com"], "ws.example.com", "https://app.example.com:bad", False),
])
async def test_the_origin_check_compares_scheme_host_and_port(user: Any, settings: Any, allowed: list, host: str,
                                                              origin: str, accepted: bool) -> None:
    from channels.testing import WebsocketCommunicator

    from .support import ws_application

    settings.ALLOWED_HOSTS = ["localhost", "[::1]", "testserver"]
    settings.WS_ALLOWED_ORIGINS = allowed
    ws = WebsocketCommunicator(ws_application(), f"/ws/notifications?token={token_for(user)}",
                               headers=[(b"host", host.encode()), (b"origin", origin.encode())])
    assert (await ws.connect(timeout=10))[0]
    if accepted:
        assert (await ws.receive_json_from(10))["type"] == "sync_complete"
        await ws.disconnect()
    else:
        assert await close_code(ws) == 4003


async def test_a_script_without_origin_is_allowed(user: Any, settings: Any) -> None:
    settings.WS_ALLOWED_ORIGINS = ["https://app.example.com"]
    ws = await open_socket(token_for(user))
    assert (await ws.receive_json_from(10))["type"] == "sync_complete"
    await ws.disconnect()


async def test_too_many_attempts_by_one_user_are_closed_with_4029(user: Any, settings: Any) -> None:
    settings.IMAGEGEN_WS_CONNECTS_PER_MINUTE_USER = 2
    for port in (1, 2):
        ws = await open_socket(token_for(user), client=("10.0.0.1", port))
        await ws.receive_json_from(10)
        await ws.disconnect()
    assert await close_code(await open_socket(token_for(user), client=("10.0.0.2", 3))) == 4029


async def test_too_many_attempts_from_one_address_are_closed_with_4029_even_without_a_token(
        user: Any, settings: Any) -> None:
    settings.IMAGEGEN_WS_CONNECTS_PER_MINUTE_IP = 2
    assert await close_code(await open_socket("bad", client=("10.0.0.9", 1))) == 4001
    assert await close_code(await open_socket("bad", client=("10.0.0.9", 2))) == 4001
    assert await close_code(await open_socket(token_for(user), client=("10.0.0.9", 3))) == 4029
    other = await open_socket(token_for(user), client=("10.0.0.10", 4))
    assert (await other.receive_json_from(10))["type"] == "sync_complete"
    await other.disconnect()


async def test_sockets_over_the_per_user_cap_are_closed_with_4029(user: Any, other_user: Any, settings: Any) -> None:
    settings.IMAGEGEN_WS_MAX_SOCKETS_PER_USER = 2
    first, second = await open_socket(token_for(user)), await open_socket(token_for(user))
    for ws in (first, second):
        await ws.receive_json_from(10)
    assert presence.by_user[user.pk] == 2
    assert await close_code(await open_socket(token_for(user))) == 4029
    bobs = await open_socket(token_for(other_user))  # the cap is per user
    assert (await bobs.receive_json_from(10))["type"] == "sync_complete"
    await first.disconnect()
    third = await open_socket(token_for(user))
    assert (await third.receive_json_from(10))["type"] == "sync_complete"
    for ws in (second, third, bobs):
        await ws.disconnect()
    assert presence.by_user[user.pk] == 0
