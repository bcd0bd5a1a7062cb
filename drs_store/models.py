"""Tables of the data store (prefix ``drs_``).

Objects are never removed: a soft delete sets ``deleted_at`` (the row, its checksum, owner
and provenance stay for the audit trail) and the stored bytes are deleted. A quarantined
object stays visible as metadata but its bytes are never served again.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from helixgate.audit import UTCDateTime
from helixgate.db import Base


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DatasetRow(Base):
    """A group of objects that access is granted on."""

    __tablename__ = "drs_datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ObjectRow(Base):
    """A DRS object: a blob (stored bytes) or a bundle (``drs_bundle_members``)."""

    __tablename__ = "drs_objects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # "blob" | "bundle"
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    mime_type: Mapped[str | None] = mapped_column(String(255))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("drs_datasets.id"), index=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    # owner: whose object it is (the delegating user for service-made outputs);
    # created_by: the identity that actually made the call.
    owner: Mapped[str] = mapped_column(String(128), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # storage record (blobs only): backend, opaque location, key id, registered in place
    backend: Mapped[str | None] = mapped_column(String(16))
    location: Mapped[str | None] = mapped_column(String(1100))
    key_id: Mapped[str | None] = mapped_column(String(256))
    external: Mapped[bool] = mapped_column(Boolean, default=False)
    provenance: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    quarantine_reason: Mapped[str | None] = mapped_column(String(500))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_by: Mapped[str | None] = mapped_column(String(128))
    blob_deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class BundleMemberRow(Base):
    """One named entry of a bundle. Bundles are immutable once created."""

    __tablename__ = "drs_bundle_members"

    bundle_id: Mapped[str] = mapped_column(ForeignKey("drs_objects.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("drs_objects.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)


class GrantRow(Base):
    """Read access to a dataset for one user. Revocation keeps the row (``revoked_at``)."""

    __tablename__ = "drs_grants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("drs_datasets.id"))
    username: Mapped[str] = mapped_column(String(128))
    granted_by: Mapped[str] = mapped_column(String(128))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_by: Mapped[str | None] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_drs_grants_dataset_user", "dataset_id", "username"),)
