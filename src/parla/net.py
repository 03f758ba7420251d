"""Fetching a client-given URL without letting the client reach into the server's own network.

The host is resolved once; every address it resolves to must be public (no loopback, private,
link-local, multicast or reserved ranges), and the connection goes to that checked address, so a
second DNS answer cannot swap in an internal one (DNS rebinding). Redirects are followed by hand
and checked the same way. The body is read up to a size limit, within a time limit.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

MAX_REDIRECTS = 3


class FetchError(ValueError):
    """The URL was refused or could not be fetched; the message says why."""


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    return sorted({str(info[4][0]) for info in infos})


def _check_address(address: str, host: str, allow_private: bool) -> None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if allow_private:
        return
    if not ip.is_global or ip.is_multicast:
        raise FetchError(f"refusing to fetch from {host!r}: it resolves to a non-public address ({ip})")


def fetch(url: str, *, max_bytes: int, timeout: float, allow_private: bool = False) -> bytes:
    """GET ``url`` (http or https) and return its body; ``FetchError`` for anything refused or failed."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"only http and https URLs are accepted, not {parts.scheme or 'no scheme'!r}")
        host = parts.hostname
        if not host:
            raise FetchError("the URL has no host")
        if parts.username or parts.password:
            raise FetchError("URLs with credentials are not accepted")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = _resolve(host, port)
        for address in addresses:
            _check_address(address, host, allow_private)
        pinned = addresses[0]
        netloc = f"[{pinned}]" if ":" in pinned else pinned
        target = urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"fetching the URL took longer than {timeout:g} s")
        default_port = port == (443 if parts.scheme == "https" else 80)
        headers = {"Host": host if default_port else f"{host}:{port}", "User-Agent": "parla"}
        try:
            with (
                httpx.Client(timeout=remaining, follow_redirects=False) as client,
                client.stream("GET", target, headers=headers, extensions={"sni_hostname": host}) as response,
            ):
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code >= 400:
                    raise FetchError(f"the URL answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"the file is {int(declared)} bytes; the limit is {max_bytes}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError(f"the file is larger than the limit of {max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError(f"fetching the URL took longer than {timeout:g} s")
                return bytes(body)
        except httpx.TimeoutException:
            raise FetchError(f"fetching the URL took longer than {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"could not fetch the URL: {exc}") from None
    raise FetchError(f"too many redirects (more than {MAX_REDIRECTS})")
