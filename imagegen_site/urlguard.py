"""The guard on every URL the server fetches (``image_url``) or calls (webhooks).

A URL given by a user must never make the server talk to itself, its private network or the cloud
metadata service (169.254.169.254). Checking the URL's text is not enough: a public-looking name can
resolve to 127.0.0.1, resolve to something else a second later (DNS rebinding), or redirect to
``http://[::ffff:127.0.0.1]/``. So the check happens where the connection is made: every connection
resolves the host once, checks every address it got, and connects to an address it checked (TLS SNI
and the Host header keep the name). Redirects go through the same connection path, hop by hop.

``IMAGEGEN_FETCH_ALLOW_PRIVATE=1`` lifts the address check (tests with a loopback server),
``IMAGEGEN_FETCH_ALLOW_HTTP=1`` allows plain ``http://``.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Returns None when the address may be reached, else what it is ("a private address").
AddressPolicy = Callable[[IPAddress], "str | None"]

MAX_URL_LENGTH = 2048
USER_AGENT = "imagegen (+https://github.com/imagegen)"


class ForbiddenURL(ValueError):
    """The URL may not be fetched or called; ``str()`` says why, in words for the API's 400."""


class FetchFailed(Exception):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Fetched:
    content: bytes
    content_type: str
    url: str  # after redirects


def public_only(address: IPAddress) -> str | None:
    """The default policy: only globally routable unicast addresses."""
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and the NAT64 prefix carry an IPv4 address that the network will reach.
        if address.ipv4_mapped is not None:
            return public_only(address.ipv4_mapped)
        if address in _NAT64:
            return public_only(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _allow_all(address: IPAddress) -> str | None:
    return None


def default_policy() -> AddressPolicy:
    return _allow_all if settings.IMAGEGEN_FETCH_ALLOW_PRIVATE else public_only


def allowed_schemes() -> tuple[str, ...]:
    return ("https", "http") if settings.IMAGEGEN_FETCH_ALLOW_HTTP else ("https",)


class UnresolvedHost(Exception):
    def __init__(self, host: str, error: socket.gaierror) -> None:
        super().__init__(f"the host name {host} does not resolve ({error.strerror})")
        # EAI_AGAIN is a DNS server that did not answer; anything else is an answer ("no such name").
        self.transient = error.errno == socket.EAI_AGAIN


def resolve(host: str, port: int, policy: AddressPolicy) -> list[str]:
    """Every address of ``host``, each checked; raises ForbiddenURL if any one is forbidden.

    All of them, not the first: a name with one public and one private address would let the
    resolver's order (or an attacker's round-robin) pick the private one later.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UnresolvedHost(host, error) from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        reason = policy(ipaddress.ip_address(text))
        if reason is not None:
            raise ForbiddenURL(f"{text} is {reason}" if host == text else f"{host} resolves to {text}, {reason}")
        if text not in addresses:
            addresses.append(text)
    return addresses


def _split(url: str) -> tuple[str, str, int]:
    if len(url) > MAX_URL_LENGTH:
        raise ForbiddenURL(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise ForbiddenURL(f"not a valid URL ({error})") from None
    schemes = allowed_schemes()
    if parts.scheme.lower() not in schemes:
        allowed = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ForbiddenURL(f"the URL must start with {allowed}")
    if not parts.hostname:
        raise ForbiddenURL("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ForbiddenURL("the URL must not carry a user name or password")
    return parts.scheme.lower(), parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80)


def check_url(url: str, *, policy: AddressPolicy | None = None) -> None:
    """Refuse a URL that is malformed, of another scheme, or whose host resolves to a forbidden address.

    A name that does not resolve now passes: that is a failed fetch later (perhaps transient), not bad
    input. Every connection is checked again anyway (DNS answers change).
    """
    _, host, port = _split(url)
    try:
        resolve(host, port, policy or default_policy())
    except UnresolvedHost:
        pass


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync network backend, resolving and checking before it connects."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for address in resolve(host, port, self._policy):
            try:
                return self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                               socket_options=socket_options)
            except httpcore.ConnectError as error:  # try the name's next address, as a browser would
                last_error = error
        raise last_error or httpcore.ConnectError(f"no address to connect to for {host}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise ForbiddenURL("unix sockets are not reachable by URL")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def guarded_client(*, timeout: float, follow_redirects: bool = False, max_redirects: int = 3,
                   policy: AddressPolicy | None = None) -> httpx.Client:
    """An httpx client that can only reach what the policy allows, on every hop."""
    policy = policy or default_policy()
    schemes = allowed_schemes()

    def check_scheme(request: httpx.Request) -> None:  # runs for the first request and for each redirect
        if request.url.scheme not in schemes:
            raise ForbiddenURL(f"{request.url.scheme}:// is not allowed (redirected to {request.url})")

    # trust_env=False: an HTTP(S)_PROXY from the environment would connect to the proxy instead,
    # and the proxy would resolve the name where we cannot check it.
    transport = httpx.HTTPTransport(retries=0, trust_env=False)
    # httpx does not take a network backend; its pool does. The guard tests fail if this stops working.
    transport._pool = httpcore.ConnectionPool(  # noqa: SLF001
        ssl_context=httpx.create_ssl_context(), network_backend=_GuardedBackend(policy), retries=0)
    return httpx.Client(transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=follow_redirects,
                        max_redirects=max_redirects, trust_env=False, headers={"User-Agent": USER_AGENT},
                        event_hooks={"request": [check_scheme]})


def fetch(url: str, *, max_bytes: int, timeout: float, policy: AddressPolicy | None = None) -> Fetched:
    """GET ``url`` (redirects re-checked, at most 3), at most ``max_bytes``, within ``timeout`` seconds in all.

    Raises FetchFailed; ``transient`` says whether trying again later can help.
    """
    _split(url)  # the same refusals as at submit, in case the settings changed since
    deadline = time.monotonic() + timeout
    try:
        with guarded_client(timeout=timeout, follow_redirects=True, policy=policy) as client, \
                client.stream("GET", url) as response:
            status = response.status_code
            if status == 429 or status >= 500:
                raise FetchFailed(f"the server answered {status} {response.reason_phrase}", transient=True)
            if status >= 300:
                raise FetchFailed(f"the server answered {status} {response.reason_phrase}", transient=False)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchFailed(f"the file is {int(declared)} bytes, more than the limit of {max_bytes}",
                                  transient=False)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchFailed(f"the file is larger than the limit of {max_bytes} bytes", transient=False)
                if time.monotonic() > deadline:
                    raise FetchFailed(f"the download took longer than {timeout:g} s", transient=True)
            return Fetched(bytes(body), response.headers.get("content-type", ""), str(response.url))
    except ForbiddenURL as error:
        raise FetchFailed(f"refused: {error}", transient=False) from None
    except UnresolvedHost as error:
        raise FetchFailed(str(error), transient=error.transient) from None
    except httpx.TooManyRedirects:
        raise FetchFailed("more than 3 redirects", transient=False) from None
    except httpx.UnsupportedProtocol as error:
        raise FetchFailed(f"unsupported URL after a redirect ({error})", transient=False) from None
    except httpx.TimeoutException:
        raise FetchFailed(f"no answer within {timeout:g} s", transient=True) from None
    except httpx.TransportError as error:
        raise FetchFailed(f"could not connect ({error or type(error).__name__})", transient=True) from None
