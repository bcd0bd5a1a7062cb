"""Built-in token issuer for the embedded mode.

HelixGate can run without an external identity provider: this module keeps an EC P-256
signing key under the data directory and mints short-lived ES256 bearer JWTs
(``helixgate token issue --user U --ttl 15m``). The HTTP layer publishes
:meth:`BuiltinIssuer.discovery_document` at ``<issuer_url>/.well-known/openid-configuration``
and :meth:`BuiltinIssuer.jwks` at ``<issuer_url>/jwks.json`` so other services can verify
the tokens like any OIDC issuer's; the local verifier reads the keys directly.

On disk (``key_dir``, mode 0700):

- ``signing-key.pem``: the current private key, PKCS#8 PEM, mode 0600;
- ``retired-keys.json``: public JWKs of previous keys, still published after :meth:`rotate`
  so tokens signed before a rotation stay valid until they expire.

Writes are atomic (temporary file + rename) and serialised across processes with an
``flock`` on ``.lock``, so a server and the CLI can share one directory; each process
notices a rotation made by another one on its next call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helixgate.errors import BadRequest, ConfigurationError
from helixgate.fsutil import file_lock, write_private

__all__ = ["ALGORITHM", "REGISTERED_CLAIMS", "BuiltinIssuer", "parse_duration"]

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
#: Claims set by :meth:`BuiltinIssuer.issue`; ``extra_claims`` may not override them.
REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "iat", "nbf", "exp", "jti"})
#: Previous public keys kept in the JWKS after rotations (oldest dropped first).
MAX_RETIRED_KEYS = 4

_KEY_FILE = "signing-key.pem"
_RETIRED_FILE = "retired-keys.json"
_SERVED_FILE = "served-issuer-urls.json"  # issuer URLs servers on this key directory announced
_MAX_SERVED = 16
_LOCK_FILE = ".lock"
_MAX_USERNAME = 255
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


# ------------------------------------------------------------------ durations
_DURATION = re.compile(r"(\d{1,9})([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> int:
    """Parse ``"900"``, ``"30s"``, ``"15m"``, ``"1h"`` or ``"2d"`` into a positive number of seconds."""
    text = value.strip().lower() if isinstance(value, str) else ""
    match = _DURATION.fullmatch(text)
    if match is None:
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise BadRequest(
            f"invalid duration {shown!r}: expected seconds or a number followed by s, m, h or d (e.g. 15m)"
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise BadRequest(f"invalid duration {value.strip()!r}: must be positive")
    return seconds


# ------------------------------------------------------------------ keys
def _b64url_uint(number: int, length: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(length, "big")).rstrip(b"=").decode("ascii")


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    # RFC 7638: the thumbprint covers exactly the required members, sorted, without whitespace.
    required = {"crv": "P-256", "kty": "EC", "x": _b64url_uint(numbers.x, 32), "y": _b64url_uint(numbers.y, 32)}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode("ascii")
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode("ascii")
    return {**required, "kid": kid, "use": "sig", "alg": ALGORITHM}


@dataclass(frozen=True)
class _KeyState:
    private_key: ec.EllipticCurvePrivateKey
    kid: str
    jwks: dict[str, Any]
    # (inode, mtime_ns, size) of the two files, to notice changes made by another process
    fingerprint: tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]

    def __repr__(self) -> str:  # never show the private key
        return f"_KeyState(kid={self.kid!r})"


class BuiltinIssuer:
    """Mints ES256 tokens for ``issuer_url`` with a key kept in ``key_dir``.

    ``max_ttl_seconds`` (optional) makes :meth:`issue` refuse lifetimes the verifier would
    refuse anyway (``settings.token_max_lifetime``), so the CLI fails early and clearly.
    """

    def __init__(
        self,
        key_dir: Path,
        issuer_url: str,
        audience: str,
        *,
        max_ttl_seconds: int | None = None,
        create_key: bool = True,
    ) -> None:
        parts = urlsplit(issuer_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(f"invalid built-in issuer URL {issuer_url!r}: expected http(s)://host[:port]/path")
        if not audience:
            raise ConfigurationError("invalid built-in issuer audience: must not be empty")
        if max_ttl_seconds is not None and max_ttl_seconds <= 0:
            raise ConfigurationError("invalid built-in issuer max_ttl_seconds: must be positive")
        self.key_dir = Path(key_dir)
        self.issuer_url = issuer_url.rstrip("/")
        self.audience = audience
        self.max_ttl_seconds = max_ttl_seconds
        # False (the CLI): only ever use the key the server created; a new key would mint tokens
        # the server rejects (unknown key id)
        self.create_key = create_key
        self._lock = threading.RLock()
        self._state: _KeyState | None = None

    def __repr__(self) -> str:
        return f"BuiltinIssuer(issuer_url={self.issuer_url!r}, key_dir={str(self.key_dir)!r})"

    # ------------------------------------------------------------ public API
    @property
    def key_id(self) -> str:
        """Key id (RFC 7638 thumbprint) of the current signing key."""
        return self._current().kid

    def issue(
        self,
        username: str,
        ttl_seconds: int,
        *,
        audience: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """Return a signed JWT for ``username`` valid for ``ttl_seconds`` from now."""
        if not isinstance(username, str) or not username.strip():
            raise BadRequest("invalid username: must be a non-empty string")
        if len(username) > _MAX_USERNAME or _CONTROL_CHARS.search(username) or username != username.strip():
            raise BadRequest(
                f"invalid username: at most {_MAX_USERNAME} characters, no control characters "
                "and no leading or trailing whitespace"
            )
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
            raise BadRequest(f"invalid token lifetime {ttl_seconds!r}: must be a positive number of seconds")
        if self.max_ttl_seconds is not None and ttl_seconds > self.max_ttl_seconds:
            raise BadRequest(f"token lifetime {ttl_seconds}s exceeds the maximum of {self.max_ttl_seconds}s")
        extra = dict(extra_claims or {})
        clashing = sorted(REGISTERED_CLAIMS & extra.keys())
        if clashing:
            raise BadRequest(f"extra claims may not override registered claims: {', '.join(clashing)}")
        now = int(time.time())
        claims: dict[str, Any] = {
            **extra,
            "iss": self.issuer_url,
            "sub": username,
            "aud": audience or self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        state = self._current()
        try:
            return jwt.encode(claims, state.private_key, algorithm=ALGORITHM, headers={"kid": state.kid})
        except TypeError:
            raise BadRequest("extra claims must be JSON-serialisable") from None

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set to publish: current and retired public keys, never private material."""
        keys = self._current().jwks["keys"]
        return {"keys": [dict(k) for k in keys]}

    def discovery_document(self) -> dict[str, Any]:
        """OIDC discovery metadata served at ``<issuer_url>/.well-known/openid-configuration``.

        Interactive login (:mod:`helixgate.login`): the authorization code grant with PKCE S256
        for registered public clients, refresh tokens with rotation, revocation (RFC 7009) and
        the device authorization grant (RFC 8628). Service identities exchange their credential
        at the token endpoint (``client_credentials``).
        """
        return {
            "issuer": self.issuer_url,
            "jwks_uri": self.issuer_url + "/jwks.json",
            "authorization_endpoint": self.issuer_url + "/authorize",
            "token_endpoint": self.issuer_url + "/token",
            "revocation_endpoint": self.issuer_url + "/revoke",
            "device_authorization_endpoint": self.issuer_url + "/device_authorization",
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code",
                "client_credentials",
            ],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_signing_alg_values_supported": [ALGORITHM],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "authorization_response_iss_parameter_supported": True,
            "scopes_supported": ["openid", "offline_access"],
            "subject_types_supported": ["public"],
            "claims_supported": sorted(REGISTERED_CLAIMS | {"nonce", "azp", "client_id", "scope"}),
        }

    def rotate(self, *, keep_previous: bool = True) -> str:
        """Replace the signing key and return the new key id.

        The previous public key stays in the JWKS (up to :data:`MAX_RETIRED_KEYS`) so tokens
        already issued keep verifying. ``keep_previous=False`` drops every old key at once:
        the response to a leaked key, invalidating all tokens signed before.
        """
        with self._lock, self._file_lock():
            self._ensure_dir()
            state = self._load_or_create()
            retired: list[dict[str, Any]] = []
            if keep_previous:
                current_public = dict(state.jwks["keys"][0])
                current_public["retired_at"] = int(time.time())
                retired = [current_public, *self._read_retired()][:MAX_RETIRED_KEYS]
            new_key = ec.generate_private_key(ec.SECP256R1())
            # Retired keys first: if we crash in between, the old key is still published.
            self._write_atomic(self.key_dir / _RETIRED_FILE, json.dumps({"keys": retired}, indent=1).encode())
            self._write_atomic(self.key_dir / _KEY_FILE, _pem(new_key))
            self._state = self._load_or_create()
            log.info(
                "built-in issuer key rotated: new key id %s (previous keys kept: %d)", self._state.kid, len(retired)
            )
            return self._state.kid

    # ------------------------------------------------------------ state
    def _current(self) -> _KeyState:
        with self._lock:
            state = self._state
            if state is not None and state.fingerprint == self._fingerprint():
                return state
            if not (self.key_dir / _KEY_FILE).exists():
                if not self.create_key:
                    raise self._no_key()  # and create nothing, not even the directory
                with self._file_lock():
                    self._state = self._load_or_create()
            else:
                self._state = self._load_or_create()
            return self._state

    def record_served(self) -> None:
        """Note that a server publishes this key under ``issuer_url`` (called at server start), so
        the CLI can tell when its settings name another issuer than the server's. Creates the
        key if there is none yet."""
        self._current()  # takes the file lock itself when it creates the key: not nested below
        with self._lock, self._file_lock():
            urls = [u for u in self.served_urls() if u != self.issuer_url]
            urls = [self.issuer_url, *urls][:_MAX_SERVED]
            self._write_atomic(self.key_dir / _SERVED_FILE, json.dumps({"issuer_urls": urls}, indent=1).encode())

    def served_urls(self) -> list[str]:
        """Issuer URLs servers announced for this key directory, newest first ([] if none)."""
        try:
            doc = json.loads((self.key_dir / _SERVED_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        urls = doc.get("issuer_urls") if isinstance(doc, dict) else None
        return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []

    def _no_key(self) -> ConfigurationError:
        return ConfigurationError(
            f"no built-in issuer key in {self.key_dir}: it is created by `helixgate serve`; start the server "
            "with this data directory first, or give the server's data directory "
            "(--data-dir, --config or HELIXGATE_DATA_DIR)"
        )

    def _fingerprint(self) -> tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]:
        return (_stat_id(self.key_dir / _KEY_FILE), _stat_id(self.key_dir / _RETIRED_FILE))

    def _load_or_create(self) -> _KeyState:
        key_path = self.key_dir / _KEY_FILE
        if not self.create_key and not key_path.exists():
            raise self._no_key()
        self._ensure_dir()
        if not key_path.exists():
            # Only reached with the file lock held (first use or rotation), so no second writer races us.
            self._write_atomic(key_path, _pem(ec.generate_private_key(ec.SECP256R1())))
            log.info("built-in issuer: generated a new signing key in %s", self.key_dir)
        fingerprint = self._fingerprint()
        private_key = self._read_private_key(key_path)
        current = _public_jwk(private_key.public_key())
        keys: list[dict[str, Any]] = [current]
        seen = {current["kid"]}
        for jwk_data in self._read_retired():
            public: dict[str, Any] = {
                k: jwk_data[k] for k in ("kty", "crv", "x", "y", "kid", "use", "alg") if k in jwk_data
            }
            if public.get("kid") not in seen and public.get("kty") == "EC":
                seen.add(public["kid"])
                keys.append(public)
        return _KeyState(private_key=private_key, kid=current["kid"], jwks={"keys": keys}, fingerprint=fingerprint)

    def _read_private_key(self, path: Path) -> ec.EllipticCurvePrivateKey:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            # Like ssh: a key others could read may have leaked; refuse rather than silently fix.
            raise ConfigurationError(
                f"built-in issuer key {path} is accessible by other users (mode {mode:04o}); "
                "expected 0600 (chmod 600 it, or rotate the key if it may have leaked)"
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise ConfigurationError(f"built-in issuer key {path} is not a readable PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ConfigurationError(f"built-in issuer key {path} is not an EC P-256 key")
        return key

    def _read_retired(self) -> list[dict[str, Any]]:
        path = self.key_dir / _RETIRED_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            raise ConfigurationError(f"built-in issuer retired key file {path} is not valid JSON") from None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list):
            raise ConfigurationError(f"built-in issuer retired key file {path} has no 'keys' list")
        return [k for k in keys if isinstance(k, dict)]

    # ------------------------------------------------------------ files
    def _ensure_dir(self) -> None:
        self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(self.key_dir.stat().st_mode)
        if mode != 0o700:
            os.chmod(self.key_dir, 0o700)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        self._ensure_dir()
        with file_lock(self.key_dir / _LOCK_FILE):
            yield

    def _write_atomic(self, path: Path, data: bytes) -> None:
        write_private(path, data)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _stat_id(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
