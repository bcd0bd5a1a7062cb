"""Outbound fetches (workflow_url, remote descriptors) with an SSRF guard.

By default a URL whose host resolves to a loopback, private, link-local (cloud metadata),
multicast or reserved address is refused; ``outbound_allow_list`` names hosts
(``host`` or ``host:port``) that are allowed anyway, e.g. the site's own TRS. Redirects are
followed by hand so that every hop is checked.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import requests

from helixgate.errors import BadRequest, Forbidden, PayloadTooLarge, UpstreamError


def _host_port(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise BadRequest(f"only http(s) URLs can be fetched, not {parts.scheme or 'a relative path'!r}")
    if not parts.hostname:
        raise BadRequest("URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname, port, parts.scheme


def check_destination(url: str, *, allow_list: tuple[str, ...] = (), allow_private: bool = False) -> None:
    """Raise Forbidden unless ``url`` may be fetched under the SSRF policy."""
    host, port, _ = _host_port(url)
    if host in allow_list or f"{host}:{port}" in allow_list:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise BadRequest(f"cannot resolve host {host}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if addr.is_link_local or addr.is_multicast or addr.is_reserved or addr.is_unspecified:
            blocked = True  # cloud metadata (169.254.169.254) and friends: never, whatever the policy
        else:
            blocked = (addr.is_loopback or addr.is_private) and not allow_private
        if blocked:
            raise Forbidden(f"refusing to fetch {host}: it resolves to a non-public address ({addr})")


def fetch(
    url: str,
    *,
    max_bytes: int,
    allow_list: tuple[str, ...] = (),
    allow_private: bool = False,
    verify: bool | str = True,
    timeout: float = 20.0,
    max_redirects: int = 3,
) -> bytes:
    """GET ``url`` under the SSRF policy, checking each redirect hop, with a size cap."""
    for _ in range(max_redirects + 1):
        check_destination(url, allow_list=allow_list, allow_private=allow_private)
        try:
            resp = requests.get(url, stream=True, timeout=timeout, allow_redirects=False, verify=verify)
        except requests.RequestException as exc:
            raise UpstreamError(f"cannot fetch {url}: {type(exc).__name__}") from None
        with resp:
            if resp.is_redirect:
                url = urljoin(url, resp.headers.get("Location", ""))
                continue
            if resp.status_code != 200:
                raise BadRequest(f"fetching {url} answered HTTP {resp.status_code}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise PayloadTooLarge(f"{url} is larger than {max_bytes} bytes")
            out = bytearray()
            for chunk in resp.iter_content(65536):
                out += chunk
                if len(out) > max_bytes:
                    raise PayloadTooLarge(f"{url} is larger than {max_bytes} bytes")
            return bytes(out)
    raise BadRequest(f"too many redirects fetching {url}")
