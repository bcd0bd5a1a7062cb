"""Who may read a DRS object, and the short-lived signed URLs that stream its bytes.

Read policy (one rule, used by every read path: metadata, access URLs, streaming, bulk,
checksum lookup, delegation):

* the object is public, or its dataset is public; or
* the reader owns the object (uploader, or the user a service identity uploaded it for); or
* the reader created the object's dataset; or
* the reader holds an active (not revoked) grant on the object's dataset.

Administrators get no implicit read access (separation of duties): a steward grants it.

Signed URLs carry ``(object id, user, expiry)`` and an HMAC-SHA256 over them. The key is
32 random bytes kept in ``<data_dir>/drs/url-signing.key`` (mode 0600, created on first
use) or, for several API replicas that do not share a data directory, supplied as
base64 in ``HELIXGATE_DRS_URL_SIGNING_KEY``. The key never appears in a repr or message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from helixgate import rbac
from helixgate.errors import ConfigurationError, Forbidden, HelixGateError, NotFound, Unauthorized

ENV_SIGNING_KEY = "HELIXGATE_DRS_URL_SIGNING_KEY"
KEY_BYTES = 32
_CONTEXT = b"helixgate-drs-signed-url/v1"
_SIG = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of 32 bytes, unpadded


@dataclass(frozen=True)
class Principal:
    """The caller as the data store sees it.

    ``user``/``roles`` are the *effective* identity whose rights apply (the delegating user
    when a service identity acts on someone's behalf); ``actor`` is who authenticated.
    """

    user: str | None
    roles: tuple[str, ...] = ()
    actor: str | None = None

    @property
    def delegated(self) -> bool:
        return self.actor is not None and self.user is not None and self.actor != self.user

    def has(self, permission: str) -> bool:
        return self.user is not None and rbac.allows(self.roles, permission)


@dataclass(frozen=True)
class ReadFacts:
    """What the policy needs to know about one object for one reader."""

    object_public: bool
    owner: str
    dataset_public: bool = False
    dataset_creator: str | None = None
    has_grant: bool = False


def may_read(user: str | None, facts: ReadFacts) -> bool:
    if facts.object_public or facts.dataset_public:
        return True
    if user is None:
        return False
    return user == facts.owner or user == facts.dataset_creator or facts.has_grant


def principal_may_read(who: Principal, facts: ReadFacts) -> bool:
    """The read rule for a caller: a signed-in caller also needs the ``drs:read`` permission."""
    if who.user is not None and not who.has("drs:read"):
        return False
    return may_read(who.user, facts)


def may_see_dataset(who: Principal, *, public: bool, creator: str, has_grant: bool) -> bool:
    return public or (who.user is not None and (who.user == creator or has_grant))


def may_manage_dataset(who: Principal, creator: str) -> bool:
    """Add objects to a dataset, manage its grants: its creator or an admin."""
    return who.user == creator or who.has("drs:admin")


def may_delete(who: Principal, *, owner: str, dataset_creator: str | None) -> bool:
    """Delete an object: its owner, its dataset's creator or an admin."""
    return who.user is not None and (who.user == owner or who.user == dataset_creator or who.has("drs:admin"))


class ObjectHidden(NotFound):
    """A read refused by policy, answered as 'not found' (settings.drs_hide_existence)."""


def read_refusal(object_id: str, who: Principal, *, hide_existence: bool) -> HelixGateError:
    """The error a refused read answers: 404 when existence is hidden, else 401 or 403."""
    if hide_existence:
        return ObjectHidden(f"object not found: {object_id}")
    if who.user is None:
        return Unauthorized(f"object {object_id} is not public: authentication required")
    if who.delegated:
        return Forbidden(f"{who.user} may not read object {object_id} (delegated by {who.actor})")
    return Forbidden(f"{who.user} may not read object {object_id}: ask a data steward for a grant on its dataset")


@dataclass(frozen=True)
class SignedUrlClaims:
    object_id: str
    user: str | None
    expires: int


class UrlSigner:
    """HMAC-SHA256 signatures for stream URLs, compared in constant time."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigurationError(f"URL signing key must be {KEY_BYTES} bytes, got {len(key)}")
        self.__key = key

    def __repr__(self) -> str:
        return "UrlSigner(<key hidden>)"

    @classmethod
    def from_data_dir(cls, data_dir: Path, env: Mapping[str, str] | None = None) -> UrlSigner:
        env = os.environ if env is None else env
        value = env.get(ENV_SIGNING_KEY, "")
        if value:
            try:
                key = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), altchars=b"-_")
            except (binascii.Error, ValueError):
                raise ConfigurationError(f"invalid {ENV_SIGNING_KEY}: not base64") from None
            if len(key) != KEY_BYTES:
                raise ConfigurationError(f"invalid {ENV_SIGNING_KEY}: expected {KEY_BYTES} bytes, got {len(key)}")
            return cls(key)
        return cls(_load_or_create_key(Path(data_dir) / "drs" / "url-signing.key"))

    def sign(self, object_id: str, user: str | None, ttl: int, *, now: float | None = None) -> dict[str, str]:
        """Query parameters of a URL for ``object_id`` issued to ``user``, valid ``ttl`` seconds."""
        expires = int(now if now is not None else time.time()) + ttl
        params = {"exp": str(expires), "sig": self._mac(object_id, user, expires)}
        if user is not None:
            params["u"] = user
        return params

    def verify(
        self, object_id: str, user: str | None, expires: str, signature: str, *, now: float | None = None
    ) -> SignedUrlClaims:
        """Check a URL's signature, then its expiry. Any failure is Forbidden (403)."""
        try:
            exp = int(expires)
        except (TypeError, ValueError):
            raise Forbidden("signed URL is malformed: exp must be a unix timestamp") from None
        if not _SIG.match(signature or ""):
            raise Forbidden("signed URL signature is malformed")
        if not hmac.compare_digest(self._mac(object_id, user, exp).encode(), signature.encode()):
            raise Forbidden("signed URL signature is invalid (forged or altered URL)")
        current = int(now if now is not None else time.time())
        if current >= exp:
            raise Forbidden(f"signed URL expired {current - exp} seconds ago: request a new access URL")
        return SignedUrlClaims(object_id, user, exp)

    def _mac(self, object_id: str, user: str | None, expires: int) -> str:
        # Length-prefixed fields: no two (id, user, exp) triples share a message.
        fields = [object_id.encode(), b"" if user is None else b"u:" + user.encode(), str(expires).encode()]
        msg = _CONTEXT + b"".join(len(f).to_bytes(4, "big") + f for f in fields)
        digest = hmac.new(self.__key, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _load_or_create_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii"))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # another process may have won the race: then we use its key
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigurationError(
            f"URL signing key {path} is accessible by group/others (mode {mode:o}); it must be 0600"
        )
    try:
        key = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"cannot read URL signing key {path}: not base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"URL signing key {path} must hold {KEY_BYTES} bytes, found {len(key)}")
    return key
