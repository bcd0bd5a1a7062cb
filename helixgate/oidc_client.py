"""The command line's side of interactive login: ``helixgate login`` / ``logout``.

``helixgate login`` uses the OAuth 2.0 device authorization grant (RFC 8628) at the built-in
issuer (``<url>/oidc``) or, with ``--issuer``, any OIDC provider whose discovery document
lists a ``device_authorization_endpoint``: it prints a link and a code, the person signs in
with a browser anywhere, and the CLI polls for its tokens. Short access tokens and the
refresh token are kept in a token cache file (mode 0600 in a 0700 directory; never printed),
one entry per server URL.

:class:`RefreshingToken` is the token source the CLI's HTTP client calls before every
request: it refreshes the access token shortly before it expires (rotating the refresh
token), so long commands such as ``run wait`` or ``logs --follow`` outlive any one access
token. Refreshes are serialised across processes with a file lock and re-read the cache
first: two CLI processes never present the same (already rotated) refresh token, which the
issuer would take for theft and answer by ending the login.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from helixgate.errors import HelixGateError
from helixgate.fsutil import file_lock, write_private

CLI_CLIENT = "helixgate-cli"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_MARGIN = 30  # seconds before expiry at which a token is renewed


class LoginError(HelixGateError):
    status = 401


def default_cache_path() -> Path:
    explicit = os.environ.get("HELIXGATE_CREDENTIALS")
    if explicit:
        return Path(explicit).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "helixgate" / "credentials.json"


class TokenCache:
    """``{server_url: entry}`` in one private JSON file. An entry holds the provider's
    endpoints, the client id, the access token, its expiry and the refresh token."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_path()

    def _ensure_dir(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def lock(self) -> Any:
        self._ensure_dir()
        return file_lock(self.path.with_name(self.path.name + ".lock"))

    def read(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        if st.st_mode & 0o077:
            raise LoginError(
                f"token cache {self.path} is accessible by other users (mode {st.st_mode & 0o777:04o}); "
                "expected 0600: remove it and log in again"
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise LoginError(f"token cache {self.path} is unreadable: remove it and log in again") from None
        return data if isinstance(data, dict) else {}

    def get(self, server: str) -> dict[str, Any] | None:
        entry = self.read().get(server.rstrip("/"))
        return entry if isinstance(entry, dict) else None

    def put(self, server: str, entry: dict[str, Any] | None) -> None:
        """Write (or with None remove) ``server``'s entry; the caller holds :meth:`lock`."""
        data = self.read()
        if entry is None:
            data.pop(server.rstrip("/"), None)
        else:
            data[server.rstrip("/")] = entry
        self._ensure_dir()
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


@dataclass(frozen=True)
class ProviderEndpoints:
    issuer: str
    token_endpoint: str
    device_authorization_endpoint: str | None
    revocation_endpoint: str | None


def discover(issuer: str, *, verify: bool | str = True) -> ProviderEndpoints:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        r = requests.get(url, timeout=30, verify=verify)
    except requests.RequestException as exc:
        raise LoginError(f"cannot reach the identity provider at {url}: {type(exc).__name__}") from None
    try:
        doc = r.json()
    except ValueError:
        doc = None
    if r.status_code != 200 or not isinstance(doc, dict) or not isinstance(doc.get("token_endpoint"), str):
        raise LoginError(f"{url} did not answer with an OIDC discovery document (HTTP {r.status_code})")
    if str(doc.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise LoginError(f"{url} names another issuer ({str(doc.get('issuer'))[:100]!r}), refusing it")
    return ProviderEndpoints(
        issuer=str(doc["issuer"]),
        token_endpoint=doc["token_endpoint"],
        device_authorization_endpoint=doc.get("device_authorization_endpoint"),
        revocation_endpoint=doc.get("revocation_endpoint"),
    )


def _post(url: str, form: dict[str, str], verify: bool | str) -> tuple[int, dict[str, Any]]:
    try:
        r = requests.post(url, data=form, timeout=30, verify=verify)
    except requests.RequestException as exc:
        raise LoginError(f"cannot reach {url}: {type(exc).__name__}") from None
    try:
        body = r.json()
    except ValueError:
        body = {}
    return r.status_code, body if isinstance(body, dict) else {}


def _entry(provider: ProviderEndpoints, client_id: str, body: dict[str, Any], now: float) -> dict[str, Any]:
    expires_in = body.get("expires_in")
    ttl = int(expires_in) if isinstance(expires_in, int) and expires_in > 0 else 300
    return {
        "issuer": provider.issuer,
        "token_endpoint": provider.token_endpoint,
        "revocation_endpoint": provider.revocation_endpoint,
        "client_id": client_id,
        "access_token": body["access_token"],
        "access_exp": int(now) + ttl,
        "refresh_token": body.get("refresh_token"),
    }


def device_login(
    server: str,
    provider: ProviderEndpoints,
    *,
    client_id: str = CLI_CLIENT,
    cache: TokenCache,
    tell: Callable[[str], None],
    verify: bool | str = True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Run the device grant to its end and store the tokens for ``server``; the cache entry."""
    if not provider.device_authorization_endpoint:
        raise LoginError(f"the identity provider {provider.issuer} offers no device authorization endpoint")
    status, start = _post(
        provider.device_authorization_endpoint, {"client_id": client_id, "scope": "openid offline_access"}, verify
    )
    if status != 200 or not isinstance(start.get("device_code"), str):
        raise LoginError(f"the identity provider refused to start the login: {_describe(status, start)}")
    link = start.get("verification_uri_complete") or start.get("verification_uri")
    tell(f"To sign in, open {link} in a browser and confirm the code {start.get('user_code')}")
    interval = int(start.get("interval") or 5)
    deadline = clock() + int(start.get("expires_in") or 600)
    while clock() < deadline:
        sleep(interval)
        status, body = _post(
            provider.token_endpoint,
            {"grant_type": DEVICE_GRANT, "device_code": start["device_code"], "client_id": client_id},
            verify,
        )
        if status == 200 and isinstance(body.get("access_token"), str):
            entry = _entry(provider, client_id, body, clock())
            with cache.lock():
                cache.put(server, entry)
            return entry
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        raise LoginError(f"login failed: {_describe(status, body)}")
    raise LoginError("login timed out: the code was not confirmed in time")


def logout(server: str, *, cache: TokenCache, verify: bool | str = True) -> bool:
    """Revoke the refresh token at the provider (RFC 7009) and forget ``server``'s tokens.
    False when there was no login to end."""
    with cache.lock():
        entry = cache.get(server)
        if entry is None:
            return False
        revocation, refresh = entry.get("revocation_endpoint"), entry.get("refresh_token")
        problem = None
        if revocation and refresh:
            status, body = _post(
                revocation,
                {"token": refresh, "token_type_hint": "refresh_token", "client_id": entry.get("client_id", "")},
                verify,
            )
            if status != 200:
                problem = _describe(status, body)
        cache.put(server, None)
    if problem:
        raise LoginError(f"the local tokens are deleted, but the provider refused the revocation: {problem}")
    return True


class RefreshingToken:
    """Callable token source for :class:`helixgate.client.ApiClient`: the cached access token,
    renewed with the refresh token when it is about to expire."""

    def __init__(
        self,
        server: str,
        cache: TokenCache,
        *,
        verify: bool | str = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server.rstrip("/")
        self.cache = cache
        self.verify = verify
        self._clock = clock
        self._lock = threading.Lock()
        self._entry: dict[str, Any] | None = None

    def __repr__(self) -> str:  # never show a token
        return f"RefreshingToken(server={self.server!r})"

    def _fresh(self, entry: dict[str, Any] | None) -> bool:
        return entry is not None and entry.get("access_exp", 0) - REFRESH_MARGIN > self._clock()

    def __call__(self) -> str:
        with self._lock:
            if not self._fresh(self._entry):
                self._entry = self._renew()
            assert self._entry is not None
            return str(self._entry["access_token"])

    def _renew(self) -> dict[str, Any]:
        with self.cache.lock():
            entry = self.cache.get(self.server)  # another process may have renewed it already
            if entry is None:
                raise LoginError(f"not logged in to {self.server}: run `helixgate login`")
            if self._fresh(entry):
                return entry
            refresh = entry.get("refresh_token")
            if not refresh:
                raise LoginError(f"the login to {self.server} expired: run `helixgate login` again")
            status, body = _post(
                entry["token_endpoint"],
                {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": entry["client_id"]},
                self.verify,
            )
            if status != 200 or not isinstance(body.get("access_token"), str):
                if body.get("error") == "invalid_grant":
                    self.cache.put(self.server, None)  # dead for good: do not try it again
                raise LoginError(
                    f"the login to {self.server} ended ({_describe(status, body)}): run `helixgate login` again"
                )
            provider = ProviderEndpoints(
                entry["issuer"], entry["token_endpoint"], None, entry.get("revocation_endpoint")
            )
            renewed = _entry(provider, entry["client_id"], body, self._clock())
            renewed["refresh_token"] = renewed["refresh_token"] or refresh  # a provider that does not rotate
            self.cache.put(self.server, renewed)
            return renewed


def _describe(status: int, body: dict[str, Any]) -> str:
    error = body.get("error")
    desc = body.get("error_description")
    if error:
        return f"{error}: {str(desc)[:200]}" if desc else str(error)
    return f"HTTP {status}"
