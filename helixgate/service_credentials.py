"""Service credentials: how a WES worker gets its tokens without the token issuer's key.

The service identity (``settings.service_user``) authenticates with an opaque random client
secret, ``hgsc1.<id>.<secret>``, exchanged at the core API's OAuth2 token endpoint
(``<issuer_url>/token``, grant ``client_credentials``, RFC 6749 section 4.4) for a short-lived
token the core signs. Only SHA-256 of the secret is stored (``core_service_credentials``); the
secret itself is shown once, when it is created (``helixgate service-credential create``,
or by ``helixgate serve all`` for its own worker process, which gets it through a pipe).

A worker reads its credential from ``service_credential_file`` (0600) or the environment
variable ``HELIXGATE_SERVICE_CREDENTIAL``; deployments whose tokens come from an external IdP
configure ``service_token_file`` instead. Refused credentials get the OAuth2 error shape
(``{"error": "invalid_client"}``), are audited as ``auth.failed`` and are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_plus

import requests
from sqlalchemy import Index, String, select
from sqlalchemy.orm import Mapped, mapped_column

from helixgate.audit.models import UTCDateTime
from helixgate.db import Base, Database
from helixgate.errors import ConfigurationError, NotFound, UpstreamError

if TYPE_CHECKING:  # helixgate.platform imports this module
    from helixgate.platform import Platform

log = logging.getLogger(__name__)

PREFIX: Final = "hgsc1"
ENV_CREDENTIAL: Final = "HELIXGATE_SERVICE_CREDENTIAL"
#: Lifetime of a token minted for a service credential (capped by ``token_max_lifetime``).
SERVICE_TOKEN_TTL: Final = 300
_FORMAT = re.compile(rf"{PREFIX}\.([0-9a-f]{{32}})\.([A-Za-z0-9_-]{{43}})")
_MAX_PRESENTED = 256


class ServiceCredentialRow(Base):
    __tablename__ = "core_service_credentials"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(255), nullable=False)
    secret_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    label: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_core_service_credentials_username", "username"),)


@dataclass(frozen=True)
class ServiceCredential:
    """A credential as stored (never its secret)."""

    id: str
    username: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "label": self.label,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


class InvalidClient(Exception):
    """Client authentication failed. ``reason`` is for the audit trail (never the secret);
    clients only ever see ``invalid_client``."""

    def __init__(self, reason: str, credential_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.credential_id = credential_id


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _info(row: ServiceCredentialRow) -> ServiceCredential:
    return ServiceCredential(row.id, row.username, row.label, row.created_at, row.expires_at, row.revoked_at)


class ServiceCredentials:
    """The stored credentials of service identities (hashes only)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, username: str, *, label: str = "", ttl_seconds: int | None = None
    ) -> tuple[ServiceCredential, str]:
        """A new credential for ``username`` (valid ``ttl_seconds``, or until revoked); returns it
        and the secret string (shown once)."""
        now = datetime.now(UTC)
        cred_id = secrets.token_hex(16)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
        row = ServiceCredentialRow(
            id=cred_id,
            username=username,
            secret_sha256=_digest(secret),
            label=label[:128],
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds) if ttl_seconds else None,
            revoked_at=None,
        )
        with self.db.session() as s:
            s.add(row)
            s.flush()
            info = _info(row)
        return info, f"{PREFIX}.{cred_id}.{secret}"

    def authenticate(self, presented: str) -> ServiceCredential:
        """The live credential ``presented`` names, or InvalidClient."""
        match = _FORMAT.fullmatch(presented) if len(presented) <= _MAX_PRESENTED else None
        if match is None:
            raise InvalidClient("malformed client secret")
        cred_id, secret = match.groups()
        with self.db.session() as s:
            row = s.get(ServiceCredentialRow, cred_id)
            info = _info(row) if row is not None else None
            stored = row.secret_sha256 if row is not None else _digest("")
        # compare even for an unknown id: the answer takes the same time either way
        if not hmac.compare_digest(stored, _digest(secret)) or info is None:
            raise InvalidClient("unknown credential or wrong secret", cred_id if info else None)
        if info.revoked_at is not None:
            raise InvalidClient("credential revoked", cred_id)
        if info.expires_at is not None and info.expires_at <= datetime.now(UTC):
            raise InvalidClient("credential expired", cred_id)
        return info

    def revoke(self, cred_id: str) -> ServiceCredential:
        with self.db.session() as s:
            row = s.get(ServiceCredentialRow, cred_id)
            if row is None:
                raise NotFound(f"no service credential {cred_id[:64]}")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            s.flush()
            return _info(row)

    def list(self, username: str | None = None) -> list[ServiceCredential]:
        stmt = select(ServiceCredentialRow).order_by(ServiceCredentialRow.created_at)
        if username is not None:
            stmt = stmt.where(ServiceCredentialRow.username == username)
        with self.db.session() as s:
            return [_info(r) for r in s.scalars(stmt).all()]


# ------------------------------------------------------------------ the token endpoint (core API)
@dataclass(frozen=True)
class TokenResponse:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _oauth_error(status: int, error: str, description: str) -> TokenResponse:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="helixgate", charset="UTF-8"'
    return TokenResponse(status, {"error": error, "error_description": description}, headers)


def _basic_client(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or not authorization[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ("", "")
    user, sep, password = decoded.partition(":")
    if not sep:
        return ("", "")
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding
    return unquote_plus(user), unquote_plus(password)


def token_endpoint(
    platform: Platform,
    form: Mapping[str, str],
    authorization: str | None,
    *,
    client_addr: str | None = None,
    request_id: str | None = None,
) -> TokenResponse:
    """``POST <issuer>/token`` with ``grant_type=client_credentials``: a short-lived token for
    the service identity whose credential authenticates the client."""
    grant = form.get("grant_type")
    if not grant:
        return _oauth_error(400, "invalid_request", "grant_type is required")
    if grant != "client_credentials":
        return _oauth_error(
            400,
            "unsupported_grant_type",
            "supported grant types: authorization_code, refresh_token, "
            "urn:ietf:params:oauth:grant-type:device_code, client_credentials",
        )
    basic = _basic_client(authorization)
    if basic is not None and ("client_secret" in form or "client_id" in form):
        return _oauth_error(400, "invalid_request", "use one client authentication method, not two")
    client_id, client_secret = (
        basic if basic is not None else (form.get("client_id", ""), form.get("client_secret", ""))
    )
    if platform.issuer is None:
        return _oauth_error(400, "unsupported_grant_type", "the built-in token issuer is disabled")
    try:
        if not client_id or not client_secret:
            raise InvalidClient("no client authentication")
        cred = ServiceCredentials(platform.db).authenticate(client_secret)
        if cred.username != client_id:
            raise InvalidClient("credential belongs to another client", cred.id)
        user = platform.users.get(cred.username)
        if user is None or not user.active or "service" not in user.roles:
            raise InvalidClient("client identity is not an active service identity", cred.id)
    except InvalidClient as exc:
        platform.audit.security_event(
            "auth.failed",
            # a client id is the caller's text: never record a credential sent in its place
            actor=(client_id[:255] if PREFIX + "." not in client_id else "[REDACTED]") or None,
            service="core",
            target=exc.credential_id,
            request_id=request_id,
            client_addr=client_addr,
            details={"operation": "oauth2.token", "grant_type": "client_credentials", "reason": exc.reason},
        )
        return _oauth_error(401, "invalid_client", "client authentication failed")
    ttl = min(SERVICE_TOKEN_TTL, platform.settings.token_max_lifetime)
    token = platform.issuer.issue(cred.username, ttl, extra_claims={"client_id": cred.username, "cid": cred.id})
    platform.audit.security_event(
        "auth.service_token",
        outcome="success",
        severity=1,
        actor=cred.username,
        service="core",
        target=cred.id,
        request_id=request_id,
        client_addr=client_addr,
        details={"grant_type": "client_credentials", "ttl": ttl},
    )
    return TokenResponse(200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl}, _NO_STORE)


# ------------------------------------------------------------------ the client side (workers)
def read_credential_file(path: str | os.PathLike[str]) -> str:
    """The credential in ``path``, which must be private to its owner (like an ssh key)."""
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
        text = p.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read service_credential_file {p}: {type(exc).__name__}") from None
    if mode & 0o077:
        raise ConfigurationError(
            f"service_credential_file {p} is accessible by other users (mode {mode:04o}); expected 0600"
        )
    return text


def write_credential_file(path: str | os.PathLike[str], credential: str) -> None:
    """Write ``credential`` to a new 0600 file (never over an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(credential + "\n")


class ClientCredentialsTokenSource:
    """Tokens for the service identity from the core's token endpoint, cached until shortly
    before they expire. Thread-safe; callable (the token source the HTTP clients take)."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        credential: str,
        *,
        verify: bool | str = True,
        timeout: tuple[float, float] = (5.0, 30.0),
        patience: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._credential = credential
        self.verify = verify
        self.timeout = timeout
        self.patience = patience
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    def __repr__(self) -> str:  # never show the credential
        return f"ClientCredentialsTokenSource(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def __call__(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._token, ttl = self._fetch()
                self._renew_at = self._clock() + max(1.0, ttl * 0.7)
            return self._token

    def _post(self) -> requests.Response:
        """The token request; a core that is not (yet) listening is waited for, briefly: the
        workers of `serve all` start before their parent's server accepts connections, and
        split processes start in any order."""
        delay, waited = 0.25, 0.0
        while True:
            try:
                r = requests.post(
                    self.token_url,
                    data={"grant_type": "client_credentials"},
                    auth=(self.client_id, self._credential),
                    timeout=self.timeout,
                    verify=self.verify,
                )
                if r.status_code not in (502, 503, 504) or waited >= self.patience:
                    return r
            except (requests.ConnectionError, requests.Timeout) as exc:
                if waited >= self.patience:
                    raise UpstreamError(f"token endpoint {self.token_url} unreachable: {type(exc).__name__}") from None
            except requests.RequestException as exc:
                raise UpstreamError(f"token endpoint {self.token_url} unreachable: {type(exc).__name__}") from None
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)

    def _fetch(self) -> tuple[str, int]:
        r = self._post()
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            raise UpstreamError(
                f"token endpoint {self.token_url} refused the service credential: "
                f"HTTP {r.status_code} {error or ''}".strip()
            )
        ttl = body.get("expires_in")
        return body["access_token"], int(ttl) if isinstance(ttl, int) and ttl > 0 else 60


def token_url_for(settings: Any) -> str:
    """The built-in issuer's token endpoint (``<issuer_url>/token``)."""
    base = settings.builtin_issuer_url or f"{settings.effective_public_url}/oidc"
    return base.rstrip("/") + "/token"


def service_token_source(settings: Any, issuer: Any, credential: str | None = None) -> Callable[[], str]:
    """The service identity's token source for a process: the core API (which holds the
    built-in issuer's key, ``issuer``) mints its own; every other process is a worker."""
    if issuer is not None and not settings.service_token_file:
        return lambda: str(issuer.issue(settings.service_user, SERVICE_TOKEN_TTL))
    return worker_token_source(settings, credential)


def worker_token_source(settings: Any, credential: str | None = None) -> Callable[[], str]:
    """How a process without the issuer's key gets the service identity's tokens:
    ``service_token_file`` (external IdP), else the service credential (given, from
    ``service_credential_file``, or from ``HELIXGATE_SERVICE_CREDENTIAL``)."""
    if settings.service_token_file:
        path = Path(settings.service_token_file)
        return lambda: path.read_text().strip()
    if credential is None:
        if settings.service_credential_file:
            credential = read_credential_file(settings.service_credential_file)
        else:
            credential = os.environ.get(ENV_CREDENTIAL, "").strip() or None
    if not credential:
        raise ConfigurationError(
            "a worker needs the service identity's credential: set service_credential_file "
            f"(created by `helixgate service-credential create`), {ENV_CREDENTIAL}, or, with an "
            "external identity provider, service_token_file"
        )
    if not settings.builtin_issuer:
        raise ConfigurationError(
            "service_credential_file needs the built-in issuer; with an external IdP use service_token_file"
        )
    return ClientCredentialsTokenSource(
        token_url_for(settings), settings.service_user, credential, verify=settings.tls_ca_bundle or True
    )


# ------------------------------------------------------------------ operator commands (local)
def _local(
    settings: Any, action: str, target: str, details: Mapping[str, Any], op: Callable[[ServiceCredentials], Any]
) -> Any:
    """Run ``op`` on the deployment's database (as ``helixgate token issue`` does) and audit it."""
    from helixgate.audit import AuditTrail
    from helixgate.errors import HelixGateError

    db = Database(settings.effective_database_url)
    try:
        if db.sqlite_path is not None and not db.sqlite_path.is_file():
            raise HelixGateError(
                f"no database at {db.sqlite_path}: start `helixgate serve` with this data directory first"
            )
        result = op(ServiceCredentials(db))
        # appended without the checkpoint key: the core API signs the checkpoint
        AuditTrail(db, Path(settings.data_dir) / "audit", signer=False).record(
            category="change",
            action=action,
            outcome="success",
            actor=None,
            service="core",
            target=target if target else getattr(result[0] if isinstance(result, tuple) else result, "id", None),
            details={**details, "via": "cli"},
        )
        return result
    finally:
        db.dispose()


def create_local(
    settings: Any, *, label: str = "", out: str | None = None, ttl_seconds: int | None = None
) -> tuple[ServiceCredential, str]:
    """``helixgate service-credential create``: a new credential for ``service_user``, written to
    ``out`` (a new 0600 file) when given."""
    if out is not None and os.path.exists(out):
        raise ConfigurationError(f"{out} already exists: refusing to overwrite a credential file")

    def op(store: ServiceCredentials) -> tuple[ServiceCredential, str]:
        return store.create(settings.service_user, label=label, ttl_seconds=ttl_seconds)

    info, secret = _local(settings, "core.service_credential.create", "", {"label": label, "ttl": ttl_seconds}, op)
    if out is not None:
        write_credential_file(out, secret)
    return info, secret


def revoke_local(settings: Any, cred_id: str) -> ServiceCredential:
    result: ServiceCredential = _local(
        settings, "core.service_credential.revoke", cred_id, {}, lambda store: store.revoke(cred_id)
    )
    return result


def list_local(settings: Any) -> list[ServiceCredential]:
    db = Database(settings.effective_database_url)
    try:
        return ServiceCredentials(db).list()
    finally:
        db.dispose()
