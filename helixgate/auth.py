"""Bearer JWT verification (OAuth2 / OIDC access tokens).

One :class:`TokenVerifier` per process, shared by request threads:
``verifier.verify(token) -> Principal`` or :class:`~helixgate.errors.Unauthorized` with a
precise, client-safe message (the token itself is never echoed, logged or kept).

Rules, in the order they are checked:

1. the token is a compact JWS (three parts) no larger than :data:`MAX_TOKEN_CHARS`;
2. the header ``alg`` is an asymmetric algorithm (never ``none`` or ``HS*``) configured for
   the token's issuer, and the issuer (``iss``) is on the allow-list;
3. the key is looked up by ``kid`` in the issuer's JWKS (from OIDC discovery, cached for
   ``jwks_cache_seconds``, refetched on an unknown ``kid`` at most once per
   ``min_refetch_interval`` per issuer) and its type must match ``alg``: an RSA key never
   verifies an ES256 token and vice versa. Header members naming keys (``jku``, ``x5u``,
   ``jwk``) are ignored: keys only ever come from the configured issuer;
4. signature, then ``exp``/``iat``/``iss``/``sub``/``aud`` present, ``nbf``/``iat``/``exp``
   within ``clock_skew``, ``aud`` matches the issuer's audience;
5. ``exp - iat`` is at most ``max_lifetime`` (time-limited tokens).

The built-in issuer (:mod:`helixgate.issuer`) is trusted from its local keys, without an
HTTP round trip; see :func:`make_verifier`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from helixgate.config import ASYMMETRIC_ALGORITHMS, IssuerConfig, Settings
from helixgate.errors import ConfigurationError, HelixGateError, Unauthorized, UpstreamError
from helixgate.issuer import ALGORITHM as BUILTIN_ALGORITHM
from helixgate.issuer import BuiltinIssuer

__all__ = [
    "SELECTED_CLAIMS",
    "Principal",
    "TokenVerifier",
    "bearer_token",
    "builtin_issuer_for",
    "make_verifier",
]

log = logging.getLogger(__name__)

#: Claims copied into :attr:`Principal.claims` when present (identity and authorization hints).
SELECTED_CLAIMS = (
    "email",
    "email_verified",
    "name",
    "preferred_username",
    "groups",
    "roles",
    "scope",
    "scp",
    "azp",
    "client_id",
)
#: Tokens longer than this are refused before any parsing (bounded work per request).
MAX_TOKEN_CHARS = 16 * 1024
#: Claims every accepted token must carry.
REQUIRED_CLAIMS = ("exp", "iat", "iss", "sub", "aud")
MIN_RSA_KEY_BITS = 2048
_MAX_DOCUMENT_BYTES = 1024 * 1024  # discovery documents and JWKS are a few KiB
_MAX_USERNAME = 255

# Which JWK a given alg may be verified with: (kty, allowed curves or None).
_KEY_TYPE_FOR_ALG: dict[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}


# ------------------------------------------------------------------ principal
@dataclass(frozen=True)
class Principal:
    """The authenticated caller. Holds claims, never the raw token."""

    username: str
    issuer: str
    subject: str
    token_id: str | None
    issued_at: datetime
    expires_at: datetime
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


# ------------------------------------------------------------------ helpers
def bearer_token(authorization: str | None) -> str:
    """Extract the token from an ``Authorization: Bearer <token>`` header value."""
    if not authorization or not authorization.strip():
        raise Unauthorized("missing bearer token")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("authorization scheme must be Bearer")
    value = value.strip()
    if not value or any(c.isspace() for c in value):
        raise Unauthorized("malformed bearer token")
    return value


def _safe(value: str, limit: int = 100) -> str:
    """Attacker-controlled text made fit for an error message: printable and short."""
    cleaned = "".join(c if c.isprintable() else "?" for c in value[:limit])
    return cleaned + ("..." if len(value) > limit else "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_fetch_url(url: str) -> str | None:
    """Why ``url`` is unfit to fetch keys from, or None. Plain HTTP would let anyone on the path inject keys."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return None
    return "must be an https:// URL (plain http only on loopback)"


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _numeric_date(claims: Mapping[str, Any], name: str) -> int:
    value = claims[name]
    # PyJWT accepts anything int() accepts (e.g. "123"); RFC 7519 NumericDate is a JSON number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f"malformed token: '{name}' must be a number")
    return int(value)


# ------------------------------------------------------------------ key sets
JwksFetcher = Callable[[], Mapping[str, Any]]


class _HttpJwks:
    """Fetches an issuer's JWKS, via OIDC discovery unless ``jwks_uri`` is configured."""

    def __init__(self, issuer: str, jwks_uri: str | None, *, ca_bundle: str, timeout: tuple[float, float]) -> None:
        self._issuer = issuer
        self._jwks_uri = jwks_uri
        self._verify: str | bool = ca_bundle or True
        self._timeout = timeout
        target = jwks_uri or issuer
        problem = _check_fetch_url(target)
        if problem:
            what = "jwks_uri" if jwks_uri else "issuer URL"
            raise ConfigurationError(f"invalid setting issuers: {what} {target!r} of issuer {issuer!r} {problem}")

    def __call__(self) -> Mapping[str, Any]:
        uri = self._jwks_uri or self._discover()
        doc = self._get_json(uri, "JWKS")
        if not isinstance(doc.get("keys"), list):
            raise UpstreamError(f"JWKS of issuer {self._issuer} has no 'keys' list")
        return doc

    def _discover(self) -> str:
        doc = self._get_json(self._issuer + "/.well-known/openid-configuration", "discovery document")
        announced = doc.get("issuer")
        # OIDC Discovery 1.0, section 4.3: the document must name the issuer it was fetched for.
        if not isinstance(announced, str) or announced.rstrip("/") != self._issuer:
            raise UpstreamError(f"discovery document of issuer {self._issuer} names issuer {_safe(str(announced))!r}")
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str):
            raise UpstreamError(f"discovery document of issuer {self._issuer} has no jwks_uri")
        problem = _check_fetch_url(uri)
        if problem:
            raise UpstreamError(f"jwks_uri of issuer {self._issuer} {problem}: {_safe(uri)!r}")
        return uri

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            # No redirects: the URL we validated is the URL we read keys from.
            with requests.get(
                url,
                timeout=self._timeout,
                verify=self._verify,
                allow_redirects=False,
                stream=True,
                headers={"Accept": "application/json"},
            ) as resp:
                if resp.status_code != 200:
                    raise UpstreamError(f"cannot fetch the {what} of issuer {self._issuer}: HTTP {resp.status_code}")
                body = bytearray()
                for chunk in resp.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > _MAX_DOCUMENT_BYTES:
                        raise UpstreamError(f"the {what} of issuer {self._issuer} exceeds {_MAX_DOCUMENT_BYTES} bytes")
        except requests.RequestException as exc:
            raise UpstreamError(f"cannot fetch the {what} of issuer {self._issuer}: {type(exc).__name__}") from None
        try:
            doc = json.loads(bytes(body))
        except ValueError:
            raise UpstreamError(f"the {what} of issuer {self._issuer} is not valid JSON") from None
        if not isinstance(doc, dict):
            raise UpstreamError(f"the {what} of issuer {self._issuer} is not a JSON object")
        return doc


@dataclass
class _KeySet:
    keys: tuple[Mapping[str, Any], ...]
    fetched_at: float
    parsed: dict[tuple[int, str], jwt.PyJWK] = field(default_factory=dict)


class _KeyCache:
    """One issuer's keys: cached, refreshed after ``ttl``, refetched on unknown kid (rate-limited)."""

    def __init__(
        self,
        issuer: str,
        fetch: JwksFetcher,
        *,
        ttl: float,
        min_refetch_interval: float,
        monotonic: Callable[[], float],
    ) -> None:
        self._issuer = issuer
        self._fetch = fetch
        self._ttl = ttl
        self._min_interval = min_refetch_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._current: _KeySet | None = None
        self._last_attempt: float | None = None
        self._last_error: UpstreamError | None = None

    def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        keys = self._current
        if keys is None or _find(keys, kid, alg) is None:
            with self._lock:
                keys = self._refresh_locked(kid, alg)
        elif self._monotonic() - keys.fetched_at >= self._ttl and self._lock.acquire(blocking=False):
            # Known kid in a stale set: refresh, unless another thread is already at it.
            try:
                keys = self._refresh_locked(kid, alg)
            finally:
                self._lock.release()
        jwk_data = _find(keys, kid, alg)
        if jwk_data is None:
            raise Unauthorized("unknown key id" if kid is not None else "token has no key id and no single key fits")
        return _parsed_key(keys, jwk_data, alg, self._issuer)

    def _refresh_locked(self, kid: str | None, alg: str) -> _KeySet:
        now = self._monotonic()
        current = self._current
        if current is not None and now - current.fetched_at < self._ttl and _find(current, kid, alg) is not None:
            return current  # another thread fetched what we need while we waited for the lock
        if self._last_attempt is not None and now - self._last_attempt < self._min_interval:
            # Rate limit: random kids must not make us hammer the IdP; answer from what we have.
            if current is None:
                reason = self._last_error.message if self._last_error else "unavailable"
                raise UpstreamError(f"signing keys of issuer {self._issuer} are unavailable: {reason}")
            return current
        self._last_attempt = now
        try:
            doc = self._fetch()
        except UpstreamError as exc:
            self._last_error = exc
            if current is None:
                raise
            log.warning("keeping cached signing keys of issuer %s: %s", self._issuer, exc.message)
            return current
        keys = tuple(k for k in doc.get("keys", ()) if isinstance(k, Mapping) and k.get("use", "sig") == "sig")
        self._last_error = None
        kids = [k.get("kid") for k in keys]
        if current is None or kids != [k.get("kid") for k in current.keys]:
            log.info("signing keys of issuer %s: %s", self._issuer, ", ".join(map(str, kids)) or "none")
        self._current = _KeySet(keys=keys, fetched_at=now)
        return self._current


def _fits(jwk_data: Mapping[str, Any], alg: str) -> bool:
    kty, curves = _KEY_TYPE_FOR_ALG[alg]
    if jwk_data.get("kty") != kty:
        return False
    if curves is not None and jwk_data.get("crv") not in curves:
        return False
    declared = jwk_data.get("alg")
    return declared is None or declared == alg


def _find(keys: _KeySet, kid: str | None, alg: str) -> Mapping[str, Any] | None:
    """The key with ``kid`` (any type: the type is checked later, with a precise message)."""
    if kid is None:
        fitting = [k for k in keys.keys if _fits(k, alg)]
        return fitting[0] if len(fitting) == 1 else None
    named = [k for k in keys.keys if k.get("kid") == kid]
    for k in named:
        if _fits(k, alg):
            return k
    return named[0] if named else None


def _parsed_key(keys: _KeySet, jwk_data: Mapping[str, Any], alg: str, issuer: str) -> jwt.PyJWK:
    if not _fits(jwk_data, alg):
        declared = jwk_data.get("alg")
        kind = f"{jwk_data.get('kty')}" + (f"/{declared}" if isinstance(declared, str) else "")
        raise Unauthorized(f"algorithm {alg} does not match the signing key type ({_safe(kind, 30)})")
    cache_key = (id(jwk_data), alg)
    parsed = keys.parsed.get(cache_key)
    if parsed is None:
        try:
            parsed = jwt.PyJWK(dict(jwk_data), algorithm=alg)
        except jwt.PyJWTError as exc:
            log.warning("issuer %s publishes an unusable key: %s", issuer, type(exc).__name__)
            raise Unauthorized("the issuer's signing key is unusable") from None
        if isinstance(parsed.key, rsa.RSAPublicKey) and parsed.key.key_size < MIN_RSA_KEY_BITS:
            log.warning("issuer %s publishes a %d-bit RSA key; refused", issuer, parsed.key.key_size)
            raise Unauthorized(f"the issuer's signing key is too weak (RSA below {MIN_RSA_KEY_BITS} bits)")
        keys.parsed[cache_key] = parsed
    return parsed


# ------------------------------------------------------------------ verifier
@dataclass(frozen=True)
class _Trusted:
    config: IssuerConfig
    keys: _KeyCache


class TokenVerifier:
    """Verifies bearer JWTs from an allow-list of issuers. Thread-safe.

    ``local_jwks`` maps an issuer URL to a function returning its JWKS, for issuers whose keys
    are at hand (the built-in issuer); other issuers' keys are fetched over HTTPS.
    """

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        local_jwks: Mapping[str, JwksFetcher] | None = None,
        clock_skew: int = 30,
        max_lifetime: int = 3600,
        jwks_cache_seconds: int = 300,
        min_refetch_interval: float = 10.0,
        tls_ca_bundle: str = "",
        http_timeout: tuple[float, float] = (3.05, 10.0),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuers:
            raise ConfigurationError("invalid setting issuers: no token issuer configured")
        if clock_skew < 0:
            raise ConfigurationError(f"invalid setting clock_skew: must not be negative, got {clock_skew}")
        if max_lifetime <= 0:
            raise ConfigurationError(f"invalid setting token_max_lifetime: must be positive, got {max_lifetime}")
        if jwks_cache_seconds <= 0:
            raise ConfigurationError(f"invalid setting jwks_cache_seconds: must be positive, got {jwks_cache_seconds}")
        local = {k.rstrip("/"): v for k, v in (local_jwks or {}).items()}
        self._clock_skew = clock_skew
        self._max_lifetime = max_lifetime
        self._issuers: dict[str, _Trusted] = {}
        for cfg in issuers:
            name = cfg.issuer.rstrip("/")
            if name in self._issuers:
                raise ConfigurationError(f"invalid setting issuers: issuer {name!r} is configured twice")
            bad = [a for a in cfg.algorithms if a not in ASYMMETRIC_ALGORITHMS]
            if bad or not cfg.algorithms:
                raise ConfigurationError(
                    f"invalid setting issuers: issuer {name!r} must list asymmetric algorithms only, "
                    f"got {bad or 'none'}"
                )
            if not cfg.audience:
                raise ConfigurationError(f"invalid setting issuers: issuer {name!r} has no audience")
            fetch: JwksFetcher
            if name in local:
                # Local keys cost a stat() to re-read: no rate limit needed, and a short cache so a
                # rotation (or a key withdrawn after a leak) by another process applies within a second.
                fetch, ttl, interval = local[name], 1.0, 0.0
            else:
                fetch = _HttpJwks(name, cfg.jwks_uri, ca_bundle=tls_ca_bundle, timeout=http_timeout)
                ttl, interval = float(jwks_cache_seconds), min_refetch_interval
            cache = _KeyCache(name, fetch, ttl=ttl, min_refetch_interval=interval, monotonic=monotonic)
            self._issuers[name] = _Trusted(config=cfg, keys=cache)
        unknown_local = sorted(set(local) - set(self._issuers))
        if unknown_local:
            raise ConfigurationError(f"local keys given for unconfigured issuer(s): {', '.join(unknown_local)}")

    @property
    def issuers(self) -> tuple[str, ...]:
        """The allow-listed issuer URLs."""
        return tuple(self._issuers)

    def verify(self, token: str) -> Principal:
        """Verify ``token`` and return who it speaks for; raise Unauthorized otherwise.

        May raise :class:`~helixgate.errors.UpstreamError` when an issuer's keys have never been
        fetchable (the IdP is down): that is not the client's fault.
        """
        try:
            return self._verify(token)
        except HelixGateError:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed input must never escape as another exception type
            log.warning("unexpected %s while verifying a token", type(exc).__name__)
            raise Unauthorized("malformed token") from None

    def _verify(self, token: str) -> Principal:
        if not isinstance(token, str) or not token:
            raise Unauthorized("missing bearer token")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized(f"token too large: more than {MAX_TOKEN_CHARS} characters")
        if token.count(".") != 2:
            raise Unauthorized("malformed token: expected a signed JWT (three dot-separated parts)")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise Unauthorized("malformed token: no algorithm in the header")
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise Unauthorized(f"algorithm not allowed: {_safe(alg, 20)}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("malformed token: kid must be a string")
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise Unauthorized("token has no issuer (iss)")
        trusted = self._issuers.get(iss.rstrip("/"))
        if trusted is None:
            raise Unauthorized(f"issuer not allowed: {_safe(iss)}")
        cfg = trusted.config
        if alg not in cfg.algorithms:
            raise Unauthorized(f"algorithm not allowed: {alg} (issuer accepts {', '.join(cfg.algorithms)})")

        key = trusted.keys.key_for(kid, alg)
        name = cfg.issuer.rstrip("/")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=cfg.audience,
                issuer=(name, name + "/"),
                leeway=self._clock_skew,
                options={"require": list(REQUIRED_CLAIMS), "enforce_minimum_key_length": True},
            )
        except jwt.InvalidSignatureError:
            raise Unauthorized("signature verification failed") from None
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.ImmatureSignatureError as exc:
            which = "iat" if "iat" in str(exc) else "nbf"
            detail = "issued in the future (iat)" if which == "iat" else "not valid yet (nbf)"
            raise Unauthorized(f"token {detail}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token is missing the required '{exc.claim}' claim") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"audience mismatch: expected {cfg.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(f"issuer not allowed: {_safe(iss)}") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized(f"algorithm not allowed: {alg}") from None
        except jwt.InvalidIssuedAtError:
            raise Unauthorized("malformed token: 'iat' must be a number") from None
        except jwt.InvalidKeyError:
            raise Unauthorized("the issuer's signing key is too weak") from None
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None

        iat = _numeric_date(claims, "iat")
        exp = _numeric_date(claims, "exp")
        if "nbf" in claims:
            _numeric_date(claims, "nbf")
        lifetime = exp - iat
        if lifetime <= 0:
            raise Unauthorized("token expires before it was issued (exp <= iat)")
        if lifetime > self._max_lifetime:
            raise Unauthorized(f"token lifetime {lifetime}s exceeds the maximum of {self._max_lifetime}s")

        username = claims.get(cfg.username_claim)
        if not isinstance(username, str) or not username.strip():
            raise Unauthorized(f"token has no usable '{cfg.username_claim}' claim (the username)")
        if len(username) > _MAX_USERNAME or not username.isprintable():
            raise Unauthorized(f"token's '{cfg.username_claim}' claim is not a valid username")
        jti = claims.get("jti")
        return Principal(
            username=username,
            issuer=name,
            subject=str(claims["sub"]),
            token_id=jti if isinstance(jti, str) else None,
            issued_at=datetime.fromtimestamp(iat, tz=UTC),
            expires_at=datetime.fromtimestamp(exp, tz=UTC),
            claims=MappingProxyType({k: _freeze(claims[k]) for k in SELECTED_CLAIMS if k in claims}),
        )


# ------------------------------------------------------------------ factories
def builtin_issuer_for(settings: Settings, *, create_key: bool = True) -> BuiltinIssuer:
    """The built-in issuer: keys under ``<data_dir>/issuer``, URL ``builtin_issuer_url`` or ``<public_url>/oidc``."""
    return BuiltinIssuer(
        settings.data_dir / "issuer",
        issuer_url=settings.builtin_issuer_url or f"{settings.effective_public_url}/oidc",
        audience=settings.audience,
        max_ttl_seconds=settings.token_max_lifetime,
        create_key=create_key,
    )


def make_verifier(settings: Settings, builtin: BuiltinIssuer | None) -> TokenVerifier:
    """The verifier for ``settings``: the built-in issuer (if enabled) plus ``settings.issuers``.

    With ``settings.builtin_issuer`` on and ``builtin`` None, the built-in issuer is created from
    the settings (its key is generated on first use). With it off, ``builtin`` is ignored.
    """
    issuers = list(settings.issuers)
    local: dict[str, JwksFetcher] = {}
    if settings.builtin_issuer:
        builtin = builtin or builtin_issuer_for(settings)
        issuers.insert(
            0,
            IssuerConfig(
                issuer=builtin.issuer_url,
                audience=settings.audience,
                algorithms=(BUILTIN_ALGORITHM,),
                username_claim="sub",
            ),
        )
        local[builtin.issuer_url] = builtin.jwks
    return TokenVerifier(
        issuers,
        local_jwks=local,
        clock_skew=settings.clock_skew,
        max_lifetime=settings.token_max_lifetime,
        jwks_cache_seconds=settings.jwks_cache_seconds,
        tls_ca_bundle=settings.tls_ca_bundle,
    )
