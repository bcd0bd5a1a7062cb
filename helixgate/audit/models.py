"""The tables of the audit trail (core_audit_*)."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from helixgate.audit.records import COLUMN_LIMITS, AuditRecord, Checkpoint, _utc
from helixgate.db import Base


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
    action: Mapped[str] = mapped_column(String(COLUMN_LIMITS["action"]), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    actor: Mapped[str] = mapped_column(String(COLUMN_LIMITS["actor"]), nullable=False)
    on_behalf_of: Mapped[str | None] = mapped_column(String(COLUMN_LIMITS["on_behalf_of"]))
    service: Mapped[str] = mapped_column(String(8), nullable=False)
    target: Mapped[str | None] = mapped_column(String(COLUMN_LIMITS["target"]))
    request_id: Mapped[str | None] = mapped_column(String(COLUMN_LIMITS["request_id"]))
    client_addr: Mapped[str | None] = mapped_column(String(COLUMN_LIMITS["client_addr"]))
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


def to_record(row: AuditRecordRow) -> AuditRecord:
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


def to_checkpoint(row: AuditCheckpointRow) -> Checkpoint:
    return Checkpoint(seq=row.seq, hash=row.hash, time=_utc(row.time), key_id=row.key_id, signature=row.signature)
