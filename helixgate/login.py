"""Interactive login at the built-in issuer: passwords, authorization codes with PKCE, refresh
tokens with rotation, throttled failed logins.

The HTTP layer (:mod:`helixgate.oidc_routes`) is thin; every rule lives here:

- passwords are scrypt hashes (``core_user_passwords``); the password itself never reaches a
  log, an error or the audit trail;
- failed logins are counted per username and per client address (``core_login_failures``);
  past ``login_max_failures`` within ``login_throttle_seconds`` further attempts are refused
  without checking the password, and every failure is a ``auth.login`` security event;
- clients are registered (public clients, PKCE S256 only): ``helixgate-ui`` with redirect
  ``<public_url>/ui/callback`` and ``helixgate-cli`` with loopback redirects (RFC 8252);
- authorization codes are random, stored as SHA-256, single-use, bound to client, redirect
  and code challenge, valid 60 s; a replayed code revokes the tokens issued for it;
- refresh tokens are random, stored as SHA-256, rotated at every use; presenting a rotated
  (or revoked) one revokes its whole family (RFC 6819 5.2.2.3); a family lives at most
  ``refresh_token_lifetime`` seconds from the login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from sqlalchemy import ForeignKey, Index, Integer, String, Text, delete, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from helixgate.audit.models import UTCDateTime
from helixgate.db import Base, Database, rowcount
from helixgate.errors import BadRequest, NotFound

if TYPE_CHECKING:
    from helixgate.platform import Platform

log = logging.getLogger(__name__)

UI_CLIENT = "helixgate-ui"
CLI_CLIENT = "helixgate-cli"
CODE_TTL = 60
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024**2
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 section 4.1
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # BASE64URL(SHA256(verifier)) without padding
DEVICE_CODE_TTL = 600
DEVICE_POLL_INTERVAL = 5
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# no vowels (no words), no look-alikes: RFC 8628 6.1
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"


def normalize_user_code(text: str) -> str:
    """What the person typed, as stored: upper case, without dashes or spaces."""
    return "".join(c for c in text.upper() if c in _USER_CODE_ALPHABET)[:8]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _failure_key(username: str) -> str:
    return hashlib.sha256(username[:MAX_PASSWORD].encode("utf-8", "replace")).hexdigest()


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------ tables
class PasswordRow(Base):
    __tablename__ = "core_user_passwords"

    username: Mapped[str] = mapped_column(
        String(128), ForeignKey("core_users.username", ondelete="CASCADE"), primary_key=True
    )
    scrypt_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class LoginFailureRow(Base):
    """A failed login, counted for throttling. ``username`` holds SHA-256 of what was typed."""

    __tablename__ = "core_login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(128), nullable=False)
    client_addr: Mapped[str] = mapped_column(String(64), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index("ix_core_login_failures_username", "username"),
        Index("ix_core_login_failures_client_addr", "client_addr"),
    )


class AuthCodeRow(Base):
    __tablename__ = "core_auth_codes"

    code_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    redirect_uri: Mapped[str] = mapped_column(String(512), nullable=False)
    username: Mapped[str] = mapped_column(String(128), nullable=False)
    code_challenge: Mapped[str] = mapped_column(String(64), nullable=False)
    scope: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    nonce: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    family_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # tokens issued for it


class RefreshTokenRow(Base):
    __tablename__ = "core_refresh_tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(32), nullable=False)
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    username: Mapped[str] = mapped_column(String(128), nullable=False)
    scope: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)  # the family's absolute end
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_core_refresh_tokens_family_id", "family_id"),)


class DeviceCodeRow(Base):
    """RFC 8628 device authorization requests (``device_code`` stored as SHA-256)."""

    __tablename__ = "core_device_codes"

    device_code_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_code: Mapped[str] = mapped_column(String(16), nullable=False, unique=True)
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    scope: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    interval: Mapped[int] = mapped_column(Integer, nullable=False)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    username: Mapped[str | None] = mapped_column(String(128), nullable=True)


class UiSessionRow(Base):
    """A web UI session (:mod:`helixgate_ui.session`): keyed by SHA-256 of the cookie's id;
    ``sealed`` is AES-GCM ciphertext under a key derived from the cookie's secret half, so the
    database alone cannot replay the tokens inside."""

    __tablename__ = "core_ui_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sealed: Mapped[str] = mapped_column(Text, nullable=False)


# ------------------------------------------------------------------ errors
class OAuthError(Exception):
    """An OAuth2 refusal: ``error`` is the RFC 6749 code, ``description`` is safe to show;
    ``reason`` (for the audit trail only) may say more."""

    def __init__(self, error: str, description: str, *, status: int = 400, reason: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.reason = reason or description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


# ------------------------------------------------------------------ passwords
def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=32,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


# a hash of nothing anyone knows: unknown users cost the same time as known ones
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def validate_password(password: Any) -> str:
    if not isinstance(password, str) or not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise BadRequest(f"a password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


class Passwords:
    def __init__(self, db: Database) -> None:
        self.db = db

    def set(self, username: str, password: str) -> None:
        from helixgate.users import UserRow

        validate_password(password)
        hashed = hash_password(password)
        with self.db.session() as s:
            if s.get(UserRow, username) is None:
                raise NotFound(f"user not found: {username}")
            row = s.get(PasswordRow, username)
            if row is None:
                s.add(PasswordRow(username=username, scrypt_hash=hashed, updated_at=utcnow()))
            else:
                row.scrypt_hash, row.updated_at = hashed, utcnow()

    def clear(self, username: str) -> None:
        with self.db.session() as s:
            s.execute(delete(PasswordRow).where(PasswordRow.username == username))

    def verify(self, username: str, password: str) -> bool:
        with self.db.session() as s:
            row = s.get(PasswordRow, username) if len(username) <= 128 else None
            stored = row.scrypt_hash if row is not None else None
        ok = check_password(password[:MAX_PASSWORD], stored or _DUMMY_HASH)
        return ok and stored is not None


# ------------------------------------------------------------------ clients
@dataclass(frozen=True)
class Client:
    client_id: str
    redirect_uris: tuple[str, ...]
    loopback: bool = False  # any port on 127.0.0.1/[::1] with path /callback (RFC 8252 7.3)

    def allows_redirect(self, uri: str) -> bool:
        if uri in self.redirect_uris:
            return True
        if not self.loopback:
            return False
        parts = urlsplit(uri)
        try:
            port = parts.port
        except ValueError:
            return False
        return (
            parts.scheme == "http"
            and parts.hostname in ("127.0.0.1", "::1")
            and port is not None
            and parts.path == "/callback"
            and not parts.query
            and not parts.fragment
            and not parts.username
        )


def parse_extra_clients(text: str) -> list[Client]:
    """``oidc_clients``: a JSON list of ``{"client_id", "redirect_uris"}`` (exact http(s) URIs
    without fragment); ValueError says what is wrong."""
    try:
        items = json.loads(text) if text.strip() else []
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(items, list):
        raise ValueError("expected a JSON list of clients")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("client_id"), str) or not item["client_id"]:
            raise ValueError("each client needs a non-empty client_id")
        uris = item.get("redirect_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            raise ValueError(f"client {item['client_id'][:64]!r} needs a non-empty list of redirect_uris")
        for uri in uris:
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
                raise ValueError(f"redirect URI {uri[:100]!r} must be an absolute http(s) URL without fragment")
        if item["client_id"] in (UI_CLIENT, CLI_CLIENT):
            raise ValueError(f"client_id {item['client_id']!r} is built in")
        out.append(Client(item["client_id"][:64], tuple(uris)))
    return out


def clients(public_url: str, extra: str = "") -> dict[str, Client]:
    """The registered public clients: the web UI, the CLI, and ``oidc_clients``."""
    registered = {
        UI_CLIENT: Client(UI_CLIENT, (public_url.rstrip("/") + "/ui/callback",)),
        CLI_CLIENT: Client(CLI_CLIENT, (), loopback=True),
    }
    for client in parse_extra_clients(extra):
        registered[client.client_id] = client
    return registered


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    scope: str
    nonce: str


def parse_authorization_request(params: Mapping[str, str], registered: Mapping[str, Client]) -> AuthorizationRequest:
    """Validate an authorization request. A bad client or redirect is ``redirectable=False``
    (shown to the user, never redirected: RFC 6749 4.1.2.1); the rest go back to the client."""
    client = registered.get(params.get("client_id", ""))
    if client is None:
        raise OAuthError("invalid_client", "unknown client_id", status=400)
    redirect_uri = params.get("redirect_uri", "")
    if not client.allows_redirect(redirect_uri):
        raise OAuthError("invalid_request", "redirect_uri is not registered for this client", status=400)
    state = params.get("state", "")
    if params.get("response_type") != "code":
        raise RedirectableError(
            "unsupported_response_type", "only response_type=code is supported", redirect_uri, state
        )
    if params.get("code_challenge_method") != "S256":
        raise RedirectableError(
            "invalid_request", "PKCE is required: code_challenge_method must be S256", redirect_uri, state
        )
    challenge = params.get("code_challenge", "")
    if not _CHALLENGE.match(challenge):
        raise RedirectableError(
            "invalid_request", "code_challenge must be 43 base64url characters (S256)", redirect_uri, state
        )
    if len(state) > 512 or len(params.get("nonce", "")) > 256 or len(params.get("scope", "")) > 256:
        raise RedirectableError("invalid_request", "state, nonce or scope too long", redirect_uri, state)
    return AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=challenge,
        scope=params.get("scope", "openid"),
        nonce=params.get("nonce", ""),
    )


class RedirectableError(OAuthError):
    def __init__(self, error: str, description: str, redirect_uri: str, state: str) -> None:
        super().__init__(error, description)
        self.redirect_uri = redirect_uri
        self.state = state


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


# ------------------------------------------------------------------ tokens
@dataclass(frozen=True)
class Tokens:
    access_token: str
    expires_in: int
    refresh_token: str
    scope: str
    id_token: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "scope": self.scope,
        }
        if self.id_token:
            out["id_token"] = self.id_token
        return out


class LoginService:
    """The built-in issuer's interactive side, over the platform's database and signing key."""

    def __init__(self, platform: Platform) -> None:
        if platform.issuer is None:
            raise BadRequest("the built-in token issuer is disabled")
        self.platform = platform
        self.db = platform.db
        self.settings = platform.settings
        self.issuer = platform.issuer
        self.passwords = Passwords(self.db)

    @property
    def clients(self) -> dict[str, Client]:
        return clients(self.settings.effective_public_url, self.settings.oidc_clients)

    # ---------------------------------------------------------------- login
    def throttled(self, username: str, client_addr: str) -> bool:
        since = utcnow() - timedelta(seconds=self.settings.login_throttle_seconds)
        with self.db.session() as s:
            by_user = s.scalar(
                select(func.count())
                .select_from(LoginFailureRow)
                .where(LoginFailureRow.username == _failure_key(username), LoginFailureRow.at > since)
            )
            by_addr = s.scalar(
                select(func.count())
                .select_from(LoginFailureRow)
                .where(LoginFailureRow.client_addr == client_addr[:64], LoginFailureRow.at > since)
            )
        limit = self.settings.login_max_failures
        return (by_user or 0) >= limit or (by_addr or 0) >= 4 * limit

    def authenticate(self, username: str, password: str, *, client_addr: str, client_id: str) -> str | None:
        """The username when ``password`` is right for an active user, else None (audited).
        A throttled username or address is refused before the password is checked.

        What a person typed as the username is recorded only when it names a registered user:
        a password typed into the username field must not land in the audit trail. Failures
        are counted under SHA-256 of the name for the same reason."""
        client_addr = client_addr or "unknown"
        typed = username[:MAX_PASSWORD]
        known = self.platform.users.get(typed) if len(typed) <= 128 else None
        actor = known.username if known is not None else None
        base: dict[str, Any] = {"operation": "oauth2.authorize", "client_id": client_id}
        if known is None:
            base["username_registered"] = False

        def refuse(reason: str) -> None:
            cutoff = utcnow() - timedelta(seconds=self.settings.login_throttle_seconds)
            with self.db.session() as s:
                s.execute(delete(LoginFailureRow).where(LoginFailureRow.at < cutoff))  # housekeeping
                s.add(LoginFailureRow(username=_failure_key(typed), client_addr=client_addr[:64], at=utcnow()))
            self.platform.audit.security_event(
                "auth.login", actor=actor, service="core", client_addr=client_addr, details={**base, "reason": reason}
            )

        if self.throttled(typed, client_addr):
            self.platform.audit.security_event(
                "auth.login",
                actor=actor,
                service="core",
                client_addr=client_addr,
                details={**base, "reason": "throttled"},
            )
            raise LoginThrottled()
        if not self.passwords.verify(typed, password) or known is None:
            refuse("wrong username or password")
            return None
        user = self.platform.users.get(known.username)  # re-read: the check above took a while
        if user is None or not user.active:
            refuse("user is not registered or not active")
            return None
        self.platform.audit.security_event(
            "auth.login",
            outcome="success",
            severity=1,
            actor=user.username,
            service="core",
            client_addr=client_addr,
            details=base,
        )
        return user.username

    def issue_code(self, request: AuthorizationRequest, username: str) -> str:
        code = secrets.token_urlsafe(32)
        with self.db.session() as s:
            # housekeeping: codes long expired (kept a while so a late replay is still recognised)
            s.execute(delete(AuthCodeRow).where(AuthCodeRow.expires_at < utcnow() - timedelta(days=1)))
            s.add(
                AuthCodeRow(
                    code_sha256=_sha256(code),
                    client_id=request.client_id,
                    redirect_uri=request.redirect_uri,
                    username=username,
                    code_challenge=request.code_challenge,
                    scope=request.scope,
                    nonce=request.nonce,
                    expires_at=utcnow() + timedelta(seconds=CODE_TTL),
                )
            )
        return code

    # ---------------------------------------------------------------- token endpoint
    def exchange_code(self, form: Mapping[str, str]) -> Tokens:
        client_id = form.get("client_id", "")
        if client_id not in self.clients:
            raise OAuthError("invalid_client", "unknown client_id", status=401)
        code, verifier, redirect_uri = form.get("code", ""), form.get("code_verifier", ""), form.get("redirect_uri", "")
        if not code or not redirect_uri:
            raise OAuthError("invalid_request", "code and redirect_uri are required")
        if not _VERIFIER.match(verifier):
            raise OAuthError("invalid_request", "code_verifier is required (43-128 unreserved characters)")
        now = utcnow()
        refusal: OAuthError | None = None
        # the transaction commits even when the code is refused: a code is used up by any
        # attempt (a wrong verifier cannot be retried), and a replay's revocation must stick
        with self.db.session() as s:
            claimed = rowcount(
                s.execute(
                    update(AuthCodeRow)
                    .where(AuthCodeRow.code_sha256 == _sha256(code), AuthCodeRow.used_at.is_(None))
                    .values(used_at=now)
                )
            )
            row = s.get(AuthCodeRow, _sha256(code)) if len(code) <= 256 else None
            if row is None:
                refusal = OAuthError("invalid_grant", "authorization code is unknown or expired")
            elif not claimed:
                # a replayed code: whatever it bought is revoked (RFC 6749 4.1.2)
                if row.family_id:
                    self._revoke_family(s, row.family_id, now)
                refusal = OAuthError("invalid_grant", "authorization code was already used", reason="code replayed")
            elif row.expires_at <= now:
                refusal = OAuthError("invalid_grant", "authorization code is unknown or expired")
            elif row.client_id != client_id or row.redirect_uri != redirect_uri:
                refusal = OAuthError("invalid_grant", "authorization code was issued to another client or redirect_uri")
            elif not hmac.compare_digest(s256(verifier), row.code_challenge):
                refusal = OAuthError("invalid_grant", "code_verifier does not match the code_challenge (PKCE)")
            else:
                username, scope, nonce = row.username, row.scope, row.nonce
                family = secrets.token_hex(16)
                row.family_id = family
        if refusal is not None:
            raise refusal
        self._require_active(username)
        return self._mint(username, client_id, scope, family, nonce=nonce, new_family=True)

    def refresh(self, form: Mapping[str, str]) -> Tokens:
        client_id = form.get("client_id", "")
        if client_id not in self.clients:
            raise OAuthError("invalid_client", "unknown client_id", status=401)
        presented = form.get("refresh_token", "")
        if not presented:
            raise OAuthError("invalid_request", "refresh_token is required")
        now = utcnow()
        with self.db.session() as s:
            row = s.get(RefreshTokenRow, _sha256(presented)) if len(presented) <= 256 else None
            if row is None:
                raise OAuthError("invalid_grant", "refresh token is unknown")
            if row.client_id != client_id:
                raise OAuthError("invalid_grant", "refresh token was issued to another client")
            if row.revoked_at is not None:
                raise OAuthError("invalid_grant", "refresh token was revoked")
            claimed = rowcount(
                s.execute(
                    update(RefreshTokenRow)
                    .where(RefreshTokenRow.token_sha256 == row.token_sha256, RefreshTokenRow.rotated_at.is_(None))
                    .values(rotated_at=now)
                )
            )
            if not claimed:
                # reuse of a rotated token: someone else holds a copy; end the whole login
                self._revoke_family(s, row.family_id, now)
                family, username = row.family_id, row.username
                reuse = True
            else:
                reuse = False
                if row.expires_at <= now:
                    raise OAuthError("invalid_grant", "refresh token expired: log in again")
                username, scope, family, family_end = row.username, row.scope, row.family_id, row.expires_at
        if reuse:
            self.platform.audit.security_event(
                "auth.refresh_reuse",
                actor=username,
                service="core",
                target=family,
                severity=9,
                details={"operation": "oauth2.token", "client_id": client_id, "family_revoked": True},
            )
            raise OAuthError(
                "invalid_grant", "refresh token was already used: the login is revoked", reason="refresh token reuse"
            )
        self._require_active(username)
        return self._mint(username, client_id, scope, family, family_end=family_end)

    # ---------------------------------------------------------------- device grant (RFC 8628)
    def start_device(self, client_id: str, scope: str) -> dict[str, Any]:
        """``POST <issuer>/device_authorization``: a device code for the client to poll with and a
        short user code the person enters at the verification page."""
        if client_id not in self.clients:
            raise OAuthError("invalid_client", "unknown client_id", status=401)
        if len(scope) > 256:
            raise OAuthError("invalid_scope", "scope too long")
        device_code = secrets.token_urlsafe(32)
        user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
        with self.db.session() as s:
            s.execute(delete(DeviceCodeRow).where(DeviceCodeRow.expires_at < utcnow() - timedelta(hours=1)))
            s.add(
                DeviceCodeRow(
                    device_code_sha256=_sha256(device_code),
                    user_code=user_code,
                    client_id=client_id,
                    scope=scope or "openid",
                    expires_at=utcnow() + timedelta(seconds=DEVICE_CODE_TTL),
                    interval=DEVICE_POLL_INTERVAL,
                    status="pending",
                )
            )
        shown = f"{user_code[:4]}-{user_code[4:]}"
        verification = self.issuer.issuer_url + "/device"
        return {
            "device_code": device_code,
            "user_code": shown,
            "verification_uri": verification,
            "verification_uri_complete": f"{verification}?user_code={shown}",
            "expires_in": DEVICE_CODE_TTL,
            "interval": DEVICE_POLL_INTERVAL,
        }

    def approve_device(self, user_code: str, username: str) -> bool:
        """Bind a pending, unexpired device code to ``username`` (who just signed in); False if
        there is no such code."""
        code = normalize_user_code(user_code)
        with self.db.session() as s:
            approved = rowcount(
                s.execute(
                    update(DeviceCodeRow)
                    .where(
                        DeviceCodeRow.user_code == code,
                        DeviceCodeRow.status == "pending",
                        DeviceCodeRow.expires_at > utcnow(),
                    )
                    .values(status="approved", username=username)
                )
            )
        if approved:
            self.platform.audit.security_event(
                "auth.device_approved",
                outcome="success",
                severity=1,
                actor=username,
                service="core",
                details={"operation": "oauth2.device"},
            )
        return bool(approved)

    def poll_device(self, form: Mapping[str, str]) -> Tokens:
        """The token endpoint's device_code grant: pending, slow_down, expired, or the tokens
        (once: the code is used up when they are issued)."""
        client_id = form.get("client_id", "")
        if client_id not in self.clients:
            raise OAuthError("invalid_client", "unknown client_id", status=401)
        device_code = form.get("device_code", "")
        if not device_code or len(device_code) > 256:
            raise OAuthError("invalid_request", "device_code is required")
        now = utcnow()
        refusal: OAuthError | None = None
        with self.db.session() as s:
            row = s.get(DeviceCodeRow, _sha256(device_code))
            if row is None or row.client_id != client_id:
                refusal = OAuthError("invalid_grant", "device code is unknown")
            elif row.expires_at <= now:
                refusal = OAuthError("expired_token", "the device code expired: start again")
            elif row.status == "used":
                refusal = OAuthError("invalid_grant", "device code was already used")
            elif row.last_poll_at is not None and (now - row.last_poll_at).total_seconds() < row.interval:
                row.interval += 5  # RFC 8628 3.5: every slow_down adds 5 seconds
                row.last_poll_at = now
                refusal = OAuthError("slow_down", f"poll at most every {row.interval} seconds")
            elif row.status == "pending":
                row.last_poll_at = now
                refusal = OAuthError("authorization_pending", "the user has not approved this device yet")
            else:
                claimed = rowcount(
                    s.execute(
                        update(DeviceCodeRow)
                        .where(
                            DeviceCodeRow.device_code_sha256 == row.device_code_sha256,
                            DeviceCodeRow.status == "approved",
                        )
                        .values(status="used", last_poll_at=now)
                    )
                )
                if not claimed or row.username is None:
                    refusal = OAuthError("invalid_grant", "device code was already used")
                else:
                    username, scope = row.username, row.scope
        if refusal is not None:
            raise refusal
        self._require_active(username)
        return self._mint(username, client_id, scope, secrets.token_hex(16), new_family=True)

    def revoke(self, token: str, client_id: str) -> None:
        """RFC 7009: revoke the refresh token's family; unknown tokens are not an error."""
        if not token or len(token) > 4096:
            return
        now = utcnow()
        with self.db.session() as s:
            row = s.get(RefreshTokenRow, _sha256(token))
            if row is None or (client_id and row.client_id != client_id):
                return
            self._revoke_family(s, row.family_id, now)
            username, family = row.username, row.family_id
        self.platform.audit.security_event(
            "auth.logout",
            outcome="success",
            severity=1,
            actor=username,
            service="core",
            target=family,
            details={"operation": "oauth2.revoke", "client_id": client_id},
        )

    # ---------------------------------------------------------------- helpers
    def _require_active(self, username: str) -> None:
        user = self.platform.users.get(username)
        if user is None or not user.active:
            raise OAuthError("invalid_grant", f"user {username} is not registered or not active")

    @staticmethod
    def _revoke_family(s: Any, family: str, now: datetime) -> None:
        s.execute(
            update(RefreshTokenRow)
            .where(RefreshTokenRow.family_id == family, RefreshTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    def _mint(
        self,
        username: str,
        client_id: str,
        scope: str,
        family: str,
        *,
        nonce: str = "",
        new_family: bool = False,
        family_end: datetime | None = None,
    ) -> Tokens:
        now = utcnow()
        ttl = min(self.settings.access_token_ttl, self.settings.token_max_lifetime)
        refresh = secrets.token_urlsafe(32)
        end = family_end or now + timedelta(seconds=self.settings.refresh_token_lifetime)
        with self.db.session() as s:
            if new_family:  # housekeeping: logins that ended long ago
                s.execute(delete(RefreshTokenRow).where(RefreshTokenRow.expires_at < now - timedelta(days=1)))
            s.add(
                RefreshTokenRow(
                    token_sha256=_sha256(refresh),
                    family_id=family,
                    client_id=client_id,
                    username=username,
                    scope=scope,
                    created_at=now,
                    expires_at=end,
                )
            )
        access = self.issuer.issue(username, ttl, extra_claims={"client_id": client_id, "scope": scope})
        id_token = None
        if new_family and "openid" in scope.split():
            claims: dict[str, Any] = {"azp": client_id}
            if nonce:
                claims["nonce"] = nonce
            id_token = self.issuer.issue(username, ttl, audience=client_id, extra_claims=claims)
        self.platform.audit.security_event(
            "auth.token",
            outcome="success",
            severity=1,
            actor=username,
            service="core",
            target=family,
            details={"client_id": client_id, "grant_type": "authorization_code" if new_family else "refresh_token"},
        )
        return Tokens(access, ttl, refresh, scope, id_token)


class LoginThrottled(Exception):
    """Too many failed logins for this username or address: try again later."""


# ------------------------------------------------------------------ operator command (local)
def set_password_local(settings: Any, username: str, password: str | None) -> None:
    """``helixgate users set-password``: set (or, with None, remove) ``username``'s password on
    the deployment's database, audited as a change (never the password)."""
    from pathlib import Path

    from helixgate.audit import AuditTrail
    from helixgate.errors import HelixGateError

    db = Database(settings.effective_database_url)
    try:
        if db.sqlite_path is not None and not db.sqlite_path.is_file():
            raise HelixGateError(
                f"no database at {db.sqlite_path}: start `helixgate serve` with this data directory first"
            )
        passwords = Passwords(db)
        if password is None:
            passwords.clear(username)
        else:
            passwords.set(username, password)
        # appended without the checkpoint key: the core API signs the checkpoint
        AuditTrail(db, Path(settings.data_dir) / "audit", signer=False).record(
            category="change",
            action="core.user.password_" + ("clear" if password is None else "set"),
            outcome="success",
            actor=None,
            service="core",
            target=username,
            details={"via": "cli"},
        )
    finally:
        db.dispose()
