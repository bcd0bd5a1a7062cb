"""Tamper-evident audit trail: one append-only, hash-chained sequence of records.

Every record carries ``seq`` (1, 2, 3, ... without gaps), ``prev_hash`` (the previous
record's ``hash``; 64 zeros for the first record) and ``hash`` = SHA-256 over the canonical
JSON (sorted keys, no whitespace, UTF-8) of all its fields including ``seq`` and
``prev_hash``. Editing, deleting or inserting a record therefore breaks the chain.

A hash chain alone cannot reveal a cut-off tail, so the chain head is periodically signed
(Ed25519, key under the data directory): a signed checkpoint naming a record that no
longer exists, or whose hash differs, proves truncation or rewriting. Retention purges
export the oldest records first and leave a signed anchor (seq and hash of the last
purged record) from which the remaining chain is verified.

Appends from many processes are serialized on one chain-head row: ``SELECT ... FOR UPDATE``
on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite (whose write lock is database-wide).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
)
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from helixgate.cef import record_to_cef
from helixgate.db import Base, Database
from helixgate.errors import BadRequest, ConfigurationError, Conflict, IntegrityError
from helixgate.fsutil import write_private
from helixgate.limits import bounded_int

log = logging.getLogger(__name__)

CATEGORIES: Final = ("request", "change", "execution", "security")
OUTCOMES: Final = ("success", "failure", "denied", "error")
SERVICES: Final = ("wes", "trs", "drs", "core")
GENESIS_HASH: Final = "0" * 64
ANONYMOUS: Final = "anonymous"

# Security actions emitted by the platform (names shown in CEF come from helixgate.cef).
AUTH_SESSION: Final = "auth.session"
AUTH_FAILED: Final = "auth.failed"
AUTH_DENIED: Final = "auth.denied"
INTEGRITY_FAILED: Final = "integrity.failed"

KEY_FILENAME: Final = "audit-ed25519.pem"
MAX_PAGE_SIZE: Final = 1000
MAX_PROBLEMS: Final = 1000  # a wholesale rewrite must not turn verify() into a memory bomb

_DEFAULT_SEVERITY: Final = {"success": 1, "failure": 3, "denied": 5, "error": 6}
_COLUMN_LIMITS: Final = {
    "action": 128,
    "actor": 255,
    "on_behalf_of": 255,
    "target": 512,
    "request_id": 128,
    "client_addr": 64,
}
_DETAIL_STRING_LIMIT: Final = 1024
_DETAIL_ITEMS_LIMIT: Final = 100
_DETAIL_DEPTH_LIMIT: Final = 6
_DETAILS_TOTAL_LIMIT: Final = 16 * 1024
_TRUNCATED: Final = "...(truncated)"

# Key names (lower-cased, without '-'/'_') whose values are never recorded.
_SECRET_KEY_PARTS: Final = (
    "authorization",
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "cookie",
    "credential",
    "privatekey",
    "apikey",
    "accesskey",
    "datakey",
    "masterkey",
    "signingkey",
    "sessionkey",
    "keymaterial",
)
_SECRET_KEY_EXACT: Final = frozenset({"key", "jwt", "bearer", "pem", "sig", "otp"})
# Secrets that hide in values under innocent keys (e.g. a copied header line).
_BEARER_VALUE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_JWT_VALUE = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_PEM_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)


# ----------------------------------------------------------------------------- models
class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _utc(value)


# SQLite only auto-numbers (and keys efficiently on) INTEGER PRIMARY KEY.
_BIGINT = BigInteger().with_variant(Integer, "sqlite")


class AuditRecordRow(Base):
    __tablename__ = "core_audit_records"

    seq: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    category: Mapped[str] = mapped_column(String(16), nullable=False)
    action: Mapped[str] = mapped_column(String(_COLUMN_LIMITS["action"]), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    actor: Mapped[str] = mapped_column(String(_COLUMN_LIMITS["actor"]), nullable=False)
    on_behalf_of: Mapped[str | None] = mapped_column(String(_COLUMN_LIMITS["on_behalf_of"]))
    service: Mapped[str] = mapped_column(String(8), nullable=False)
    target: Mapped[str | None] = mapped_column(String(_COLUMN_LIMITS["target"]))
    request_id: Mapped[str | None] = mapped_column(String(_COLUMN_LIMITS["request_id"]))
    client_addr: Mapped[str | None] = mapped_column(String(_COLUMN_LIMITS["client_addr"]))
    severity: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    # Canonical JSON text, not a JSON column: the stored bytes are exactly what was hashed.
    details: Mapped[str] = mapped_column(Text, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)

    __table_args__ = (
        UniqueConstraint("prev_hash"),
        Index("ix_core_audit_records_time", "time"),
        Index("ix_core_audit_records_category_seq", "category", "seq"),
        Index("ix_core_audit_records_actor", "actor"),
        Index("ix_core_audit_records_target", "target"),
        Index("ix_core_audit_records_request_id", "request_id"),
    )


class AuditHeadRow(Base):
    """The single row (id = 1) every append locks: the last seq and hash of the chain."""

    __tablename__ = "core_audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditCheckpointRow(Base):
    __tablename__ = "core_audit_checkpoints"

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    key_id: Mapped[str] = mapped_column(String(64), nullable=False)
    signature: Mapped[str] = mapped_column(String(128), nullable=False)


class AuditAnchorRow(Base):
    """Signed seq + hash of the last record removed by a purge: the remaining chain starts there."""

    __tablename__ = "core_audit_anchor"

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    purged: Mapped[int] = mapped_column(BigInteger, nullable=False)
    key_id: Mapped[str] = mapped_column(String(64), nullable=False)
    signature: Mapped[str] = mapped_column(String(128), nullable=False)


# ----------------------------------------------------------------------------- values
@dataclass(frozen=True)
class AuditRecord:
    seq: int
    time: datetime
    category: str
    action: str
    outcome: str
    actor: str
    on_behalf_of: str | None
    service: str
    target: str | None
    request_id: str | None
    client_addr: str | None
    severity: int
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (also the line format of purge exports)."""
        out = _hashed_fields(self)
        out["hash"] = self.hash
        return out

    def to_cef(self) -> str:
        return record_to_cef(self)

    def computed_hash(self) -> str:
        return _record_hash(_hashed_fields(self))


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    time: datetime
    key_id: str
    signature: str  # base64 Ed25519 signature over the canonical checkpoint statement

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "time": _iso(self.time),
            "key_id": self.key_id,
            "signature": self.signature,
        }


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    records_checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints_checked: int = 0
    anchor_seq: int | None = None
    problems_omitted: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.problems_omitted += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "problems_omitted": self.problems_omitted,
            "records_checked": self.records_checked,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "checkpoints_checked": self.checkpoints_checked,
            "anchor_seq": self.anchor_seq,
        }


# ----------------------------------------------------------------------------- helpers
def _utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> datetime:
    return datetime.now(UTC)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _record_hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(fields).encode("utf-8")).hexdigest()


def _hashed_fields(r: AuditRecord | AuditRecordRow) -> dict[str, Any]:
    details = r.details if isinstance(r.details, dict) else json.loads(r.details)
    return {
        "seq": r.seq,
        "time": _iso(r.time),
        "category": r.category,
        "action": r.action,
        "outcome": r.outcome,
        "actor": r.actor,
        "on_behalf_of": r.on_behalf_of,
        "service": r.service,
        "target": r.target,
        "request_id": r.request_id,
        "client_addr": r.client_addr,
        "severity": r.severity,
        "details": details,
        "prev_hash": r.prev_hash,
    }


def _to_record(row: AuditRecordRow) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        time=_utc(row.time),
        category=row.category,
        action=row.action,
        outcome=row.outcome,
        actor=row.actor,
        on_behalf_of=row.on_behalf_of,
        service=row.service,
        target=row.target,
        request_id=row.request_id,
        client_addr=row.client_addr,
        severity=row.severity,
        details=json.loads(row.details),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _clean_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; lone surrogates cannot be encoded as UTF-8.
    value = value.replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8")


def _column_text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    return _clean_text(str(value))[: _COLUMN_LIMITS[name]]


def _is_secret_key(key: str) -> bool:
    norm = key.lower().replace("-", "").replace("_", "").replace(" ", "")
    return norm in _SECRET_KEY_EXACT or any(part in norm for part in _SECRET_KEY_PARTS)


def _scrub_string(value: str) -> str:
    value = _clean_text(value)
    value = _PEM_VALUE.sub("[REDACTED PRIVATE KEY]", value)
    value = _JWT_VALUE.sub("[REDACTED JWT]", value)
    value = _BEARER_VALUE.sub(lambda m: f"{m.group(1)} [REDACTED]", value)
    if len(value) > _DETAIL_STRING_LIMIT:
        value = value[: _DETAIL_STRING_LIMIT - len(_TRUNCATED)] + _TRUNCATED
    return value


def _sanitize(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _scrub_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"  # raw bytes are too often key material to record
    if depth >= _DETAIL_DEPTH_LIMIT:
        return "...(nested too deep)"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _scrub_string(str(k))[:128]
            if _is_secret_key(key):
                continue
            if len(out) >= _DETAIL_ITEMS_LIMIT:
                out["..."] = "(more keys truncated)"
                break
            out[key] = _sanitize(v, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        res = [_sanitize(v, depth + 1) for v in items[:_DETAIL_ITEMS_LIMIT]]
        if len(items) > _DETAIL_ITEMS_LIMIT:
            res.append(f"...({len(items) - _DETAIL_ITEMS_LIMIT} more items)")
        return res
    if isinstance(value, datetime):
        return _iso(value)
    return _scrub_string(str(value))


def sanitize_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """Details as they will be stored: secrets dropped, strings and containers bounded, JSON-safe."""
    if not details:
        return {}
    clean = _sanitize(details, 0)
    assert isinstance(clean, dict)
    size = len(_canonical(clean))
    if size > _DETAILS_TOTAL_LIMIT:
        return {"truncated": True, "original_size": size, "keys": sorted(clean)[:_DETAIL_ITEMS_LIMIT]}
    return clean


def retention_cutoff(retention_days: int, *, now: datetime | None = None) -> datetime:
    """``older_than`` for :meth:`AuditTrail.purge` given ``Settings.audit_retention_days``."""
    if retention_days <= 0:
        raise ConfigurationError(f"invalid setting audit_retention_days: must be positive, got {retention_days}")
    return _utc(now or _now()) - timedelta(days=retention_days)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise BadRequest(f"invalid audit {name} {str(value)[:40]!r}: expected one of {', '.join(allowed)}")
    return value


def _statement(kind: str, seq: int, hash_: str, time: datetime) -> bytes:
    # Domain-separated so a checkpoint signature can never pass as an anchor and vice versa.
    return _canonical({"type": f"helixgate.audit.{kind}.v1", "seq": seq, "hash": hash_, "time": _iso(time)}).encode()


# ----------------------------------------------------------------------------- signing key
class _SigningKey:
    """Ed25519 key in ``<key_dir>/audit-ed25519.pem`` (PKCS#8, mode 0600), created on first use."""

    def __init__(self, key_dir: Path) -> None:
        self.path = key_dir / KEY_FILENAME
        self._private: Ed25519PrivateKey | None = None

    def __repr__(self) -> str:
        return f"_SigningKey(path={str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.exists()

    def private(self) -> Ed25519PrivateKey:
        if self._private is None:
            if not self.path.exists():
                self._create()
            self._private = self._load()
        return self._private

    def public(self) -> Ed25519PublicKey:
        return self.private().public_key()

    @property
    def key_id(self) -> str:
        raw = self.public().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:32]

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private().sign(message)).decode("ascii")

    def verifies(self, message: bytes, signature: str) -> bool:
        try:
            sig = base64.b64decode(signature, validate=True)
            self.public().verify(sig, message)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    def _create(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # Write a private temp file, then link it into place: concurrent first starts never
        # see a half-written key, and exactly one key wins.
        write_private(self.path, pem, first_writer_wins=True)

    def _load(self) -> Ed25519PrivateKey:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"audit signing key {self.path} must be private to its owner: expected mode 0600, found {mode:04o}"
            )
        try:
            key = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
        except ValueError:
            raise ConfigurationError(f"audit signing key {self.path} is not a readable PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"audit signing key {self.path}: expected an Ed25519 key")
        return key


# ----------------------------------------------------------------------------- the trail
Order = Literal["newest", "oldest"]


@dataclass(frozen=True)
class _Filters:
    category: str | None = None
    action_prefix: str | None = None
    actor: str | None = None
    outcome: str | None = None
    target: str | None = None
    service: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        r = AuditRecordRow
        out: list[ColumnElement[bool]] = []
        if self.category is not None:
            out.append(r.category == _choice("category", self.category, CATEGORIES))
        if self.outcome is not None:
            out.append(r.outcome == _choice("outcome", self.outcome, OUTCOMES))
        if self.service is not None:
            out.append(r.service == _choice("service", self.service, SERVICES))
        if self.action_prefix:
            out.append(r.action.startswith(self.action_prefix, autoescape=True))
        if self.actor is not None:
            out.append(r.actor == self.actor)
        if self.target is not None:
            out.append(r.target == self.target)
        if self.request_id is not None:
            out.append(r.request_id == self.request_id)
        if self.since is not None:
            out.append(r.time >= _utc(self.since))
        if self.until is not None:
            out.append(r.time < _utc(self.until))
        return out


class AuditTrail:
    """The audit trail of one HelixGate deployment (one chain per database).

    Thread-safe; any number of processes may append to the same database concurrently.
    """

    def __init__(
        self,
        db: Database,
        key_dir: Path,
        *,
        checkpoint_every: int = 1000,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if checkpoint_every < 0:
            raise ConfigurationError(f"audit checkpoint_every must be >= 0 (0 disables), got {checkpoint_every}")
        if db.engine.dialect.name not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"audit trail supports SQLite and PostgreSQL, not {db.engine.dialect.name}")
        self.db = db
        self.checkpoint_every = checkpoint_every
        self._key = _SigningKey(Path(key_dir))
        self._clock = clock

    def __repr__(self) -> str:
        return f"AuditTrail(db={self.db.engine.dialect.name}, key={str(self._key.path)!r})"

    @classmethod
    def from_settings(cls, db: Database, settings: Any, *, checkpoint_every: int = 1000) -> AuditTrail:
        """Signing key under ``<data_dir>/audit``."""
        return cls(db, Path(settings.data_dir) / "audit", checkpoint_every=checkpoint_every)

    # ------------------------------------------------------------------ keys
    @property
    def key_id(self) -> str:
        return self._key.key_id

    def public_key_pem(self) -> str:
        """The checkpoint verification key, for auditors who verify exports elsewhere."""
        return (
            self._key.public()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )

    # ------------------------------------------------------------------ appending
    def record(
        self,
        *,
        category: str,
        action: str,
        outcome: str,
        actor: str | None,
        service: str,
        target: str | None = None,
        request_id: str | None = None,
        client_addr: str | None = None,
        on_behalf_of: str | None = None,
        severity: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one record; returns its seq. Secrets in ``details`` are dropped."""
        _choice("category", category, CATEGORIES)
        _choice("outcome", outcome, OUTCOMES)
        _choice("service", service, SERVICES)
        action_text = _column_text("action", action)
        if not action_text or not action_text.strip():
            raise BadRequest("audit action must be a non-empty string")
        if severity is None:
            severity = 7 if category == "security" and outcome != "success" else _DEFAULT_SEVERITY[outcome]
        if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 10:
            raise BadRequest(f"invalid audit severity {severity!r}: expected an integer 0..10")
        values: dict[str, Any] = {
            "category": category,
            "action": action_text,
            "outcome": outcome,
            "actor": _column_text("actor", actor) or ANONYMOUS,
            "on_behalf_of": _column_text("on_behalf_of", on_behalf_of),
            "service": service,
            "target": _column_text("target", target),
            "request_id": _column_text("request_id", request_id),
            "client_addr": _column_text("client_addr", client_addr),
            "severity": severity,
        }
        clean_details = sanitize_details(details)
        with self.db.session() as s:
            head = self._lock_head(s)
            seq = head.seq + 1
            # Timestamp taken under the lock so time never runs backwards along seq on one host.
            now = _utc(self._clock())
            fields = {"seq": seq, "time": _iso(now), **values, "details": clean_details, "prev_hash": head.hash}
            digest = _record_hash(fields)
            s.add(
                AuditRecordRow(
                    seq=seq,
                    time=now,
                    details=_canonical(clean_details),
                    prev_hash=head.hash,
                    hash=digest,
                    **values,
                )
            )
            head.seq, head.hash = seq, digest
            s.flush()
            if self.checkpoint_every and seq % self.checkpoint_every == 0:
                try:
                    self._sign_checkpoint(s, seq, digest)
                except ConfigurationError as exc:
                    # Losing the record would be worse than a missed checkpoint; checkpoint()
                    # on demand keeps raising until the key is fixed.
                    log.error("audit checkpoint at seq %d skipped: %s", seq, exc.message)
        return seq

    def security_event(
        self,
        action: str,
        *,
        outcome: str = "denied",
        severity: int = 7,
        actor: str | None = None,
        service: str = "core",
        target: str | None = None,
        request_id: str | None = None,
        client_addr: str | None = None,
        on_behalf_of: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Append a security event (sign-in, failed authentication, denial, integrity failure)."""
        return self.record(
            category="security",
            action=action,
            outcome=outcome,
            actor=actor,
            service=service,
            target=target,
            request_id=request_id,
            client_addr=client_addr,
            on_behalf_of=on_behalf_of,
            severity=severity,
            details=details,
        )

    def _lock_head(self, s: Session) -> AuditHeadRow:
        if self.db.engine.dialect.name == "sqlite":
            # pysqlite would open a deferred transaction and fail with SQLITE_BUSY when two
            # readers both try to upgrade; take the write lock first (waits on busy_timeout).
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
        head = s.scalars(select(AuditHeadRow).where(AuditHeadRow.id == 1).with_for_update()).one_or_none()
        if head is None:
            self._create_head(s)
            head = s.scalars(select(AuditHeadRow).where(AuditHeadRow.id == 1).with_for_update()).one()
        return head

    def _create_head(self, s: Session) -> None:
        # A purge may have removed everything; otherwise an empty chain starts at genesis.
        if self.db.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Executable = pg_insert(AuditHeadRow).values(id=1, seq=0, hash=GENESIS_HASH).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(AuditHeadRow).values(id=1, seq=0, hash=GENESIS_HASH).on_conflict_do_nothing()
        records = s.scalar(select(func.count()).select_from(AuditRecordRow)) or 0
        anchors = s.scalar(select(func.count()).select_from(AuditAnchorRow)) or 0
        if records or anchors:
            # The head was deleted. Never silently restart the chain from genesis.
            raise IntegrityError(
                "audit chain head is missing while records or purge anchors exist; run 'helixgate audit verify'",
                subject="core_audit_head",
                expected="1 head row",
                actual="0 head rows",
            )
        s.execute(stmt)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> Checkpoint | None:
        """Sign the current chain head; None while the chain is empty. Idempotent per head."""
        with self.db.session() as s:
            head = self._lock_head(s)
            if head.seq == 0 or head.hash == GENESIS_HASH:
                return None
            existing = s.scalars(select(AuditCheckpointRow).where(AuditCheckpointRow.seq == head.seq)).one_or_none()
            if existing is not None:
                return _to_checkpoint(existing)
            return self._sign_checkpoint(s, head.seq, head.hash)

    def _sign_checkpoint(self, s: Session, seq: int, hash_: str) -> Checkpoint:
        now = self._clock()
        row = AuditCheckpointRow(
            seq=seq,
            hash=hash_,
            time=now,
            key_id=self._key.key_id,
            signature=self._key.sign(_statement("checkpoint", seq, hash_, now)),
        )
        s.add(row)
        s.flush()
        return _to_checkpoint(row)

    def checkpoints(self) -> list[Checkpoint]:
        with self.db.session() as s:
            rows = s.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.seq)).all()
            return [_to_checkpoint(r) for r in rows]

    # ------------------------------------------------------------------ verification
    def verify(self) -> VerifyReport:
        """Check the whole chain, every checkpoint and anchor. Never raises for tampering."""
        report = VerifyReport()
        have_key = self._key.exists()
        with self.db.session() as s:
            anchors = s.scalars(select(AuditAnchorRow).order_by(AuditAnchorRow.seq)).all()
            checkpoints = s.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.seq)).all()
            head = s.scalars(select(AuditHeadRow).where(AuditHeadRow.id == 1)).one_or_none()

            anchor: AuditAnchorRow | None = None
            for a in anchors:
                if self._signature_ok(report, "anchor", a, have_key):
                    anchor = a
            report.anchor_seq = anchor.seq if anchor else None

            wanted = {c.seq: c for c in checkpoints}
            seen_hashes: dict[int, str] = {}
            expected_seq = anchor.seq + 1 if anchor else 1
            prev_hash = anchor.hash if anchor else GENESIS_HASH
            last: AuditRecordRow | None = None
            # Appends may commit while we read: check the chain up to the head as read above,
            # and look for anything beyond the head only at the end.
            for row in self._iter_rows(s, upto=head.seq if head else None):
                report.records_checked += 1
                if report.first_seq is None:
                    report.first_seq = row.seq
                if row.seq > expected_seq:
                    gap_end = row.seq - 1
                    missing = f"seq {expected_seq}" if gap_end == expected_seq else f"seq {expected_seq}..{gap_end}"
                    report.add(f"record seq {row.seq}: {missing} missing before it (deleted records)")
                elif row.seq < expected_seq:
                    report.add(f"record seq {row.seq}: precedes the purge anchor at seq {expected_seq - 1}")
                if row.prev_hash != prev_hash:
                    report.add(
                        f"record seq {row.seq}: previous-hash link broken (expected {prev_hash}, found {row.prev_hash})"
                    )
                try:
                    computed = _record_hash(_hashed_fields(row))
                except (ValueError, TypeError):
                    computed = "<unparseable details>"
                if computed != row.hash:
                    report.add(f"record seq {row.seq}: content hash mismatch (computed {computed}, stored {row.hash})")
                if row.seq in wanted:
                    seen_hashes[row.seq] = row.hash
                expected_seq, prev_hash, last = row.seq + 1, row.hash, row
            report.last_seq = last.seq if last else None

            last_seq = last.seq if last else (anchor.seq if anchor else 0)
            for c in checkpoints:
                report.checkpoints_checked += 1
                if not self._signature_ok(report, "checkpoint", c, have_key):
                    continue
                if anchor is not None and c.seq <= anchor.seq:
                    if c.seq == anchor.seq and c.hash != anchor.hash:
                        report.add(f"checkpoint seq {c.seq}: hash differs from the purge anchor at that seq")
                    continue
                if c.seq > last_seq:
                    report.add(
                        f"checkpoint seq {c.seq}: refers beyond the last record seq {last_seq} (chain truncated)"
                    )
                elif c.seq not in seen_hashes:
                    report.add(f"checkpoint seq {c.seq}: record seq {c.seq} is missing")
                elif seen_hashes[c.seq] != c.hash:
                    report.add(
                        f"checkpoint seq {c.seq}: signed hash {c.hash} does not match record hash {seen_hashes[c.seq]}"
                    )

            head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
            tail_seq = last.seq if last else (anchor.seq if anchor else 0)
            tail_hash = last.hash if last else (anchor.hash if anchor else GENESIS_HASH)
            if head is None and tail_seq:
                report.add(f"chain head row is missing; last record seq {tail_seq}")
            elif (head_seq, head_hash) != (tail_seq, tail_hash):
                report.add(
                    f"chain head says seq {head_seq} (hash {head_hash}) but the last record is seq {tail_seq} "
                    f"(hash {tail_hash}): records after seq {min(head_seq, tail_seq)} were removed or appended "
                    "outside the trail"
                )
            if head is not None:
                # max(seq) before the head: a concurrent append can only raise the head past it.
                max_seq = s.scalar(select(func.max(AuditRecordRow.seq)))
                head_now = s.scalar(select(AuditHeadRow.seq).where(AuditHeadRow.id == 1))
                limit = max(head_seq, head_now or 0)
                if max_seq is not None and max_seq > limit:
                    report.add(
                        f"record seq {limit + 1}: records seq {limit + 1}..{max_seq} lie beyond the chain head "
                        f"seq {limit} (inserted outside the trail)"
                    )
        return report

    def _signature_ok(
        self, report: VerifyReport, kind: Literal["anchor", "checkpoint"], row: AuditAnchorRow | AuditCheckpointRow,
        have_key: bool,
    ) -> bool:
        label = "purge anchor" if kind == "anchor" else "checkpoint"
        if not have_key:
            report.add(f"{label} seq {row.seq}: cannot verify signature, audit signing key {self._key.path} is missing")
            return False
        if row.key_id != self._key.key_id:
            report.add(f"{label} seq {row.seq}: signed by unknown key {row.key_id[:32]} (expected {self._key.key_id})")
            return False
        if not self._key.verifies(_statement(kind, row.seq, row.hash, row.time), row.signature):
            report.add(f"{label} seq {row.seq}: signature does not verify (forged or altered)")
            return False
        return True

    @staticmethod
    def _iter_rows(s: Session, *, upto: int | None = None, batch: int = 1000) -> Iterator[AuditRecordRow]:
        after = -1
        while True:
            stmt = select(AuditRecordRow).where(AuditRecordRow.seq > after)
            if upto is not None:
                stmt = stmt.where(AuditRecordRow.seq <= upto)
            rows = s.scalars(stmt.order_by(AuditRecordRow.seq).limit(batch)).all()
            if not rows:
                return
            yield from rows
            after = rows[-1].seq
            s.expunge_all()  # keep memory flat over millions of rows

    # ------------------------------------------------------------------ querying
    def query(
        self,
        *,
        category: str | None = None,
        action_prefix: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        target: str | None = None,
        service: str | None = None,
        request_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        order: Order = "newest",
        page_size: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[AuditRecord], str | None]:
        """One page of records; ``since`` inclusive, ``until`` exclusive. Next token is None on the last page."""
        if order not in ("newest", "oldest"):
            raise BadRequest(f"invalid order {str(order)[:20]!r}: expected newest or oldest")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise BadRequest(f"invalid page_size {page_size!r}: expected 1..{MAX_PAGE_SIZE}")
        filters = _Filters(category, action_prefix, actor, outcome, target, service, request_id, since, until)
        stmt = select(AuditRecordRow).where(*filters.clauses())
        if page_token:
            after = _decode_token(page_token, order)
            stmt = stmt.where(AuditRecordRow.seq < after if order == "newest" else AuditRecordRow.seq > after)
        key = AuditRecordRow.seq.desc() if order == "newest" else AuditRecordRow.seq.asc()
        with self.db.session() as s:
            rows = s.scalars(stmt.order_by(key).limit(page_size + 1)).all()
            records = [_to_record(r) for r in rows[:page_size]]
        next_token = _encode_token(records[-1].seq, order) if len(rows) > page_size else None
        return records, next_token

    def get(self, seq: int) -> AuditRecord | None:
        with self.db.session() as s:
            row = s.get(AuditRecordRow, seq)
            return _to_record(row) if row else None

    def export_cef(
        self,
        *,
        category: str | None = "security",
        action_prefix: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[str]:
        """CEF lines (no newline), oldest first; security events unless ``category`` says otherwise."""
        token: str | None = None
        while True:
            page, token = self.query(
                category=category,
                action_prefix=action_prefix,
                actor=actor,
                outcome=outcome,
                target=target,
                since=since,
                until=until,
                order="oldest",
                page_size=MAX_PAGE_SIZE,
                page_token=token,
            )
            for rec in page:
                yield record_to_cef(rec)
            if token is None:
                return

    # ------------------------------------------------------------------ retention
    def purge(self, *, older_than: datetime, export_path: Path) -> int:
        """Export, then delete, the oldest records whose time is before ``older_than``.

        Only a prefix of the chain is removed (up to the first record at or after the
        cut-off), so the remaining chain stays contiguous from the signed anchor. The export
        (JSON lines, one record with its hashes per line) is written and fsynced before
        anything is deleted. Refuses to purge records whose chain does not verify: purging
        them would destroy the evidence. Returns the number of records purged (0: nothing
        to purge, no file written).
        """
        cutoff = _utc(older_than)
        export_path = Path(export_path)
        if export_path.exists():
            raise Conflict(f"audit export file {export_path} already exists; refusing to overwrite an archive")
        with self.db.session() as s:
            first_kept = s.scalar(select(func.min(AuditRecordRow.seq)).where(AuditRecordRow.time >= cutoff))
            stmt = select(func.max(AuditRecordRow.seq)).where(AuditRecordRow.time < cutoff)
            if first_kept is not None:
                stmt = stmt.where(AuditRecordRow.seq < first_kept)
            last_purged = s.scalar(stmt)
            anchor = s.scalars(select(AuditAnchorRow).order_by(AuditAnchorRow.seq.desc()).limit(1)).one_or_none()
        if last_purged is None:
            return 0
        if anchor is not None and not self._key.verifies(
            _statement("anchor", anchor.seq, anchor.hash, anchor.time), anchor.signature
        ):
            raise IntegrityError(
                f"refusing to purge: the purge anchor at seq {anchor.seq} does not verify",
                subject="core_audit_anchor",
            )

        count, last_hash = self._export(export_path, last_purged, anchor)
        committing = False
        try:
            with self.db.session() as s:
                self._lock_head(s)
                latest = s.scalar(select(func.max(AuditAnchorRow.seq)))
                if latest != (anchor.seq if anchor else None):
                    raise Conflict("another audit purge ran at the same time; run the purge again")
                current = s.get(AuditRecordRow, last_purged)
                if current is None or current.hash != last_hash:
                    raise IntegrityError(
                        f"audit record seq {last_purged} changed while purging",
                        subject=f"audit record {last_purged}",
                        expected=last_hash,
                        actual=None if current is None else current.hash,
                    )
                result = s.execute(delete(AuditRecordRow).where(AuditRecordRow.seq <= last_purged))
                deleted = cast(CursorResult[Any], result).rowcount
                if deleted != count:
                    raise IntegrityError(
                        f"audit purge up to seq {last_purged}: record count changed while purging",
                        subject="core_audit_records",
                        expected=str(count),
                        actual=str(deleted),
                    )
                s.execute(delete(AuditCheckpointRow).where(AuditCheckpointRow.seq < last_purged))
                now = self._clock()
                s.add(
                    AuditAnchorRow(
                        seq=last_purged,
                        hash=last_hash,
                        time=now,
                        purged=count,
                        key_id=self._key.key_id,
                        signature=self._key.sign(_statement("anchor", last_purged, last_hash, now)),
                    )
                )
                s.flush()
                committing = True
        except BaseException:
            # Before COMMIT nothing was deleted: drop the archive. A failed COMMIT is ambiguous
            # (it may have happened), so the archive is kept.
            if not committing:
                export_path.unlink(missing_ok=True)
            raise
        return count

    def _export(self, path: Path, upto: int, anchor: AuditAnchorRow | None) -> tuple[int, str]:
        """Write records seq <= upto to ``path`` after checking their chain; returns (count, last hash)."""
        expected_seq = anchor.seq + 1 if anchor else 1
        prev = anchor.hash if anchor else GENESIS_HASH
        count = 0
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh, self.db.session() as s:
                for row in self._iter_rows(s, upto=upto):
                    rec = _to_record(row)
                    if rec.seq != expected_seq or rec.prev_hash != prev or rec.computed_hash() != rec.hash:
                        raise IntegrityError(
                            f"refusing to purge: audit chain broken at seq {rec.seq}; run 'helixgate audit verify'",
                            subject=f"audit record {rec.seq}",
                            expected=f"seq {expected_seq} linked to {prev}",
                            actual=f"seq {rec.seq} linked to {rec.prev_hash}",
                        )
                    fh.write(_canonical(rec.to_dict()) + "\n")
                    expected_seq, prev, count = rec.seq + 1, rec.hash, count + 1
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)  # fails rather than overwrite an archive created meanwhile
        except FileExistsError:
            raise Conflict(f"audit export file {path} already exists; refusing to overwrite an archive") from None
        finally:
            tmp.unlink(missing_ok=True)
        return count, prev


# ----------------------------------------------------------------------------- page tokens
def _encode_token(seq: int, order: str) -> str:
    raw = f"{order[0]}{seq}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_token(token: str, order: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        if raw[:1] != order[0] or not raw[1:].isdigit() or len(raw) > 20:
            raise ValueError
        return bounded_int(int(raw[1:]), "page_token", 0)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            f"invalid page_token for order {order!r}: use the token returned by the previous page"
        ) from None


def _to_checkpoint(row: AuditCheckpointRow) -> Checkpoint:
    return Checkpoint(seq=row.seq, hash=row.hash, time=_utc(row.time), key_id=row.key_id, signature=row.signature)


__all__ = [
    "ANONYMOUS",
    "AUTH_DENIED",
    "AUTH_FAILED",
    "AUTH_SESSION",
    "CATEGORIES",
    "INTEGRITY_FAILED",
    "OUTCOMES",
    "SERVICES",
    "AuditAnchorRow",
    "AuditCheckpointRow",
    "AuditHeadRow",
    "AuditRecord",
    "AuditRecordRow",
    "AuditTrail",
    "Checkpoint",
    "VerifyReport",
    "retention_cutoff",
    "sanitize_details",
]
