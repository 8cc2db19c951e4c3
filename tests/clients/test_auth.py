"""Token renewal, once, for the sync REST calls, the async event stream and downloads alike."""
from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import httpx
import pytest

from imagegen_client import Client, ImagegenError, TokenAuth
from imagegen_client.auth import refresh_due
from tests.conftest import wait_until


def jwt(**claims: float) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"header.{body}.signature"


class TokenServer:
    """Accepts only the newest access token; counts renewals."""

    def __init__(self, current: str = "old") -> None:
        self.current = current
        self.renewals = 0
        self.logins = 0
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()

    def handler(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.seen.append(f"{request.method} {request.url.path} {request.headers.get('authorization', '')}")
        if request.url.path == "/api/auth/token/refresh/":
            self.release.wait(5)
            with self._lock:
                self.renewals += 1
                self.current = f"new-{self.renewals}"
            return httpx.Response(200, json={"access": self.current})
        if request.url.path == "/api/auth/token/":
            with self._lock:
                self.logins += 1
                self.current = f"login-{self.logins}"
            return httpx.Response(200, json={"access": self.current, "refresh": "r2"})
        if request.headers.get("authorization") != f"Bearer {self.current}":
            return httpx.Response(401, json={"detail": "Token is invalid or expired"})
        if request.url.path.endswith("/result/"):
            return httpx.Response(200, content=b"\xff\xd8jpeg", headers={"content-type": "image/jpeg"})
        return httpx.Response(200, json={"id": 7, "status": "pending", "body": request.content.decode(errors="replace")})

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        return self.handler(request)


def test_tokens_are_renewed_within_a_minute_or_half_their_lifetime() -> None:
    assert refresh_due(jwt(iat=0, exp=900), now=860)
    assert not refresh_due(jwt(iat=0, exp=900), now=800)
    assert refresh_due(jwt(iat=0, exp=4), now=2.5)  # a 4 s token: renewed after half of it
    assert not refresh_due(jwt(iat=0, exp=4), now=1)
    assert not refresh_due("not-a-jwt", now=0)


def test_a_401_renews_the_token_once_and_resends() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path} {request.headers.get('authorization', '')}")
        if request.url.path == "/api/auth/token/refresh/":
            return httpx.Response(200, json={"access": "new"})
        if request.headers["authorization"] == "Bearer old":
            return httpx.Response(401, json={"detail": "Token is invalid or expired"})
        return httpx.Response(200, json={"id": 7, "status": "pending"})

    client = Client("http://server", token="old", refresh_token="r", transport=httpx.MockTransport(handler))

    assert client.get(7)["id"] == 7
    assert seen == ["GET /api/tasks/7/ Bearer old", "POST /api/auth/token/refresh/ ", "GET /api/tasks/7/ Bearer new"]


def test_a_burst_of_401s_from_many_threads_renews_the_token_once() -> None:
    server = TokenServer()
    client = Client("http://server", token="stale", refresh_token="r", transport=httpx.MockTransport(server.handler))
    server.release.clear()  # hold the renewal until every thread has met its 401
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(client.get(7)["id"])) for _ in range(6)]
    for thread in threads:
        thread.start()

    wait_until(lambda: sum(" Bearer stale" in line for line in server.seen) == 6, timeout=10)
    server.release.set()
    for thread in threads:
        thread.join(10)

    assert results == [7] * 6
    assert server.renewals == 1


def test_a_resent_upload_carries_its_whole_body() -> None:
    server = TokenServer()
    client = Client("http://server", token="stale", refresh_token="r", transport=httpx.MockTransport(server.handler))
    body = dict(client.submit(b"PHOTO-BYTES", filename="a.jpg", preset="etsy"))["body"]
    assert "PHOTO-BYTES" in body and "etsy" in body


def test_a_token_about_to_expire_is_renewed_before_the_request_goes_out() -> None:
    server = TokenServer(current="nearly-expired")
    auth = TokenAuth("http://server", token=jwt(iat=0, exp=900), refresh_token="r", clock=lambda: 880.0)
    with httpx.Client(base_url="http://server", auth=auth, transport=httpx.MockTransport(server.handler)) as http:
        assert http.get("/api/tasks/7/").status_code == 200
    assert [line.split(" ")[1] for line in server.seen] == ["/api/auth/token/refresh/", "/api/tasks/7/"]


def test_a_refused_refresh_token_falls_back_to_the_password() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/api/auth/token/refresh/":
            return httpx.Response(401, json={"detail": "Token is blacklisted"})
        if request.url.path == "/api/auth/token/":
            return httpx.Response(200, json={"access": "fresh", "refresh": "r2"})
        ok = request.headers.get("authorization") == "Bearer fresh"
        return httpx.Response(200 if ok else 401, json={"id": 7} if ok else {"detail": "expired"})

    client = Client("http://server", username="alice", password="pw", token="expired", refresh_token="r1",
                    transport=httpx.MockTransport(handler))
    assert client.get(7)["id"] == 7
    assert seen == ["/api/tasks/7/", "/api/auth/token/refresh/", "/api/auth/token/", "/api/tasks/7/"]


def test_without_a_password_an_unrenewable_token_is_a_clear_401() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(401, json={"detail": "Token is invalid or expired"}))
    client = Client("http://server", token="old", transport=transport)
    with pytest.raises(ImagegenError) as caught:
        client.get(7)
    assert caught.value.status_code == 401 and "no password" in caught.value.detail


def test_a_download_after_a_401_is_renewed_and_saved(tmp_path: Path) -> None:
    server = TokenServer()
    client = Client("http://server", token="stale", refresh_token="r", transport=httpx.MockTransport(server.handler))
    saved = client.download(7, tmp_path / "result")
    assert saved == tmp_path / "result.jpg" and saved.read_bytes() == b"\xff\xd8jpeg"
    assert server.renewals == 1


async def test_the_async_flow_renews_on_401_and_resends() -> None:
    server = TokenServer()
    auth = TokenAuth("http://server", token="stale", refresh_token="r")
    async with httpx.AsyncClient(base_url="http://server", auth=auth,
                                 transport=httpx.MockTransport(server.async_handler)) as http:
        response = await http.get("/api/events/", params={"after": 0})
        assert response.status_code == 200
        assert await auth.source(http).token() == "new-1"  # the renewal is shared, not repeated
    assert server.seen == ["GET /api/events/ Bearer stale", "POST /api/auth/token/refresh/ ",
                           "GET /api/events/ Bearer new-1"]
    assert server.renewals == 1


def test_the_client_needs_a_password_or_a_token() -> None:
    with pytest.raises(ValueError):
        Client("http://server", username="alice")
