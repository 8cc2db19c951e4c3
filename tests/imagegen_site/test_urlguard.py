"""The URL guard: what a user-given URL may make the server reach, checked at every connection and hop.

Real HTTP servers on loopback stand in for the internet. Where a test needs "a public server" next to a
forbidden one, it uses a policy that treats 127.0.0.1 as public and everything else as the default does,
so the redirect and DNS paths run for real against real sockets.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from django.test import override_settings

from imagegen_site.urlguard import (
    FetchFailed, ForbiddenURL, IPAddress, check_url, fetch, guarded_client, public_only,
)
from tests.loopback_http import Script, serve

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def loopback_is_public(address: IPAddress) -> str | None:
    return None if address == ipaddress.ip_address("127.0.0.1") else public_only(address)


Handler = Script()  # the test server's routes and the requests it saw


@pytest.fixture()
def server() -> Iterator[str]:
    Handler.routes, Handler.seen = {}, []
    yield from serve("127.0.0.1", Handler)


@pytest.fixture()
def other_server() -> Iterator[str]:
    yield from serve("127.0.0.2", Handler)  # all of 127/8 is loopback on Linux


@pytest.mark.parametrize(("url", "why"), [
    ("http://93.184.215.14/a.jpg", "must start with https://"),
    ("ftp://93.184.215.14/a.jpg", "must start with https://"),
    ("file:///etc/passwd", "must start with https://"),
    ("gopher://93.184.215.14/", "must start with https://"),
    ("https:///a.jpg", "no host"),
    ("https://user:pw@93.184.215.14/a.jpg", "user name or password"),
    ("https://93.184.215.14:99999/a.jpg", "not a valid URL"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://127.0.0.1/a.jpg", "loopback"),
    ("https://2130706433/a.jpg", "loopback"),  # 127.0.0.1 written as one number
    ("https://[::1]/a.jpg", "loopback"),
    ("https://[::ffff:127.0.0.1]/a.jpg", "loopback"),
    ("https://[64:ff9b::a9fe:a9fe]/a.jpg", "link-local"),  # NAT64 of 169.254.169.254
    ("https://[fc00::1]/a.jpg", "private"),
    ("https://[fe80::1]/a.jpg", "link-local"),
    ("https://10.1.2.3/a.jpg", "private"),
    ("https://192.168.0.1/a.jpg", "private"),
    ("https://100.64.0.1/a.jpg", "not a public address"),  # carrier-grade NAT
    ("https://0.0.0.0/a.jpg", "unspecified"),
    ("https://localhost/a.jpg", "localhost resolves to"),
])
def test_check_url_refuses_with_a_reason(url: str, why: str) -> None:
    with pytest.raises(ForbiddenURL, match=why):
        check_url(url)


def test_check_url_accepts_a_public_address_and_leaves_an_unresolvable_name_to_the_fetch() -> None:
    check_url("https://93.184.215.14/a.jpg")
    check_url("https://no-such-host.invalid/a.jpg")


@override_settings(IMAGEGEN_FETCH_ALLOW_HTTP=True)
def test_http_needs_its_setting() -> None:
    check_url("http://93.184.215.14/a.jpg")


@override_settings(IMAGEGEN_FETCH_ALLOW_HTTP=True, IMAGEGEN_FETCH_ALLOW_PRIVATE=True)
def test_private_needs_its_setting_and_then_fetches(server: str) -> None:
    Handler.routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG)
    check_url(f"{server}/a.png")
    got = fetch(f"{server}/a.png", max_bytes=1000, timeout=5)
    assert (got.content, got.content_type) == (PNG, "image/png")


@override_settings(IMAGEGEN_FETCH_ALLOW_HTTP=True)
def test_a_loopback_server_is_refused_at_connect_time_without_the_setting(server: str) -> None:
    Handler.routes["/a.png"] = (200, {}, PNG)
    with pytest.raises(FetchFailed, match="loopback") as failed:
        fetch(f"{server}/a.png", max_bytes=1000, timeout=5)
    assert not failed.value.transient and Handler.seen == []
    port = server.rsplit(":", 1)[1]
    with pytest.raises(FetchFailed, match="localhost resolves to 127.0.0.1, a loopback address"):
        fetch(f"http://localhost:{port}/a.png", max_bytes=1000, timeout=5)
    assert Handler.seen == []


@override_settings(IMAGEGEN_FETCH_ALLOW_HTTP=True)
def test_every_redirect_hop_is_checked_again(server: str, other_server: str) -> None:
    Handler.routes["/ok.png"] = (200, {}, PNG)
    Handler.routes["/to-other"] = (302, {"Location": f"{other_server}/ok.png"}, b"")
    Handler.routes["/to-metadata"] = (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    Handler.routes["/to-file"] = (302, {"Location": "file:///etc/passwd"}, b"")
    Handler.routes["/hop"] = (302, {"Location": "/ok.png"}, b"")

    assert fetch(f"{server}/hop", max_bytes=1000, timeout=5, policy=loopback_is_public).content == PNG
    for path, why in [("/to-other", "127.0.0.2 is a loopback"), ("/to-metadata", "link-local"),
                      ("/to-file", "file")]:
        with pytest.raises(FetchFailed, match=why) as failed:
            fetch(f"{server}{path}", max_bytes=1000, timeout=5, policy=loopback_is_public)
        assert not failed.value.transient
    assert ("/ok.png", f"127.0.0.2:{other_server.rsplit(':', 1)[1]}") not in Handler.seen


@override_settings(IMAGEGEN_FETCH_ALLOW_HTTP=True)
def test_at_most_three_redirects(server: str) -> None:
    for hop in range(5):
        Handler.routes[f"/r{hop}"] = (302, {"Location": f"/r{hop + 1}"}, b"")
    Handler.routes["/r5"] = (200, {}, PNG)
    Handler.routes["/three"] = (302, {"Location": "/r3"}, b"")  # /three, r3, r4: three redirects
    assert fetch(f"{server}/three", max_bytes=1000, timeout=5, policy=loopback_is_public).content == PNG
    with pytest.raises(FetchFailed, match="more than 3 redirects"):
        fetch(f"{server}/r0", max_bytes=1000, timeout=5, policy=loopback_is_public)


@override_settings(IMAGEGEN_FETCH_ALLOW_HTTP=True)
@pytest.mark.parametrize(("status", "transient"), [(404, False), (403, False), (503, True), (429, True)])
def test_status_codes_say_whether_to_try_again(server: str, status: int, transient: bool) -> None:
    Handler.routes["/x"] = (status, {}, b"no")
    with pytest.raises(FetchFailed, match=str(status)) as failed:
        fetch(f"{server}/x", max_bytes=1000, timeout=5, policy=loopback_is_public)
    assert failed.value.transient is transient


@override_settings(IMAGEGEN_FETCH_ALLOW_HTTP=True)
def test_the_byte_limit_holds_with_and_without_a_content_length(server: str) -> None:
    Handler.routes["/big"] = (200, {}, b"x" * 5000)
    Handler.routes["/liar"] = (200, {"Content-Length": "10"}, b"x" * 10)
    with pytest.raises(FetchFailed, match="5000 bytes, more than the limit of 1000"):
        fetch(f"{server}/big", max_bytes=1000, timeout=5, policy=loopback_is_public)
    assert fetch(f"{server}/liar", max_bytes=1000, timeout=5, policy=loopback_is_public).content == b"x" * 10


def test_an_unresolvable_name_is_a_failed_fetch() -> None:
    with pytest.raises(FetchFailed, match="does not resolve"):
        fetch("https://no-such-host.invalid/a.jpg", max_bytes=1000, timeout=5)


@override_settings(IMAGEGEN_FETCH_ALLOW_HTTP=True)
def test_a_client_for_calls_does_not_follow_redirects_and_ignores_proxy_variables(
        server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://169.254.169.254:80")  # would bypass the check if honoured
    Handler.routes["/hook"] = (307, {"Location": "http://169.254.169.254/"}, b"")
    with guarded_client(timeout=5, policy=loopback_is_public) as client:
        answer = client.get(f"{server}/hook")
    assert answer.status_code == 307 and Handler.seen == [("/hook", server.removeprefix("http://"))]
