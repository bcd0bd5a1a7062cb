"""Tables of the tool registry (prefix ``trs_``).

A tool is owned by the developer who created it. A published version is frozen: its
files, checksums, pinned images and signature bundle are written once, in one
transaction, and never updated; only descriptive metadata (name, authors, verification
flags) changes afterwards, each change bumping ``meta_version``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from helixgate.audit import UTCDateTime  # timezone-aware UTC on SQLite and PostgreSQL
from helixgate.db import Base


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ToolRow(Base):
    __tablename__ = "trs_tools"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    organization: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(256), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    toolclass: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128), index=True)
    has_checker: Mapped[bool] = mapped_column(Boolean, default=False)
    checker_url: Mapped[str] = mapped_column(String(2048), default="")
    # [{"identity": ..., "issuer": ...}]: when non-empty every publish needs a publisher bundle
    required_publisher_identities: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    meta_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128), default="")

    aliases: Mapped[list[ToolAliasRow]] = relationship(
        back_populates="tool", cascade="all, delete-orphan", lazy="selectin", order_by="ToolAliasRow.alias"
    )
    versions: Mapped[list[ToolVersionRow]] = relationship(back_populates="tool", cascade="all, delete-orphan")


class ToolAliasRow(Base):
    __tablename__ = "trs_tool_aliases"

    alias: Mapped[str] = mapped_column(String(256), primary_key=True)  # unique across the registry
    tool_id: Mapped[str] = mapped_column(String(128), ForeignKey("trs_tools.id", ondelete="CASCADE"), index=True)
    tool: Mapped[ToolRow] = relationship(back_populates="aliases")


class ToolVersionRow(Base):
    __tablename__ = "trs_tool_versions"
    __table_args__ = (UniqueConstraint("tool_id", "version_id", name="uq_trs_tool_versions_tool_version"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tool_id: Mapped[str] = mapped_column(String(128), ForeignKey("trs_tools.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256), default="")
    is_production: Mapped[bool] = mapped_column(Boolean, default=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    verified_source: Mapped[list[str]] = mapped_column(JSON, default=list)
    included_apps: Mapped[list[str]] = mapped_column(JSON, default=list)
    descriptor_type_versions: Mapped[dict[str, list[str]]] = mapped_column(JSON, default=dict)
    meta_version: Mapped[int] = mapped_column(Integer, default=1)
    publisher: Mapped[str] = mapped_column(String(128))
    # signing: the statement's subject is the primary image (position 0)
    signed: Mapped[bool] = mapped_column(Boolean, default=False)
    bundle: Mapped[str] = mapped_column(Text, default="")
    signer_kind: Mapped[str] = mapped_column(String(16), default="")
    signer: Mapped[str] = mapped_column(String(512), default="")  # key id, or identity (issuer)
    signed_digest: Mapped[str] = mapped_column(String(71), default="")
    digest_kind: Mapped[str] = mapped_column(String(16), default="")
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    publisher_bundle: Mapped[str] = mapped_column(Text, default="")
    publisher_signer: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128), default="")

    tool: Mapped[ToolRow] = relationship(back_populates="versions")
    authors: Mapped[list[VersionAuthorRow]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="VersionAuthorRow.position"
    )
    files: Mapped[list[ToolFileRow]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="ToolFileRow.path"
    )
    images: Mapped[list[ImageRow]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="ImageRow.position"
    )


class VersionAuthorRow(Base):
    __tablename__ = "trs_version_authors"

    version_pk: Mapped[int] = mapped_column(
        Integer, ForeignKey("trs_tool_versions.pk", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    author: Mapped[str] = mapped_column(String(256), index=True)


class ToolFileRow(Base):
    __tablename__ = "trs_tool_files"
    __table_args__ = (UniqueConstraint("version_pk", "path", name="uq_trs_tool_files_version_path"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_pk: Mapped[int] = mapped_column(Integer, ForeignKey("trs_tool_versions.pk", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(512))
    file_type: Mapped[str] = mapped_column(String(32))
    # CWL/WDL/... for descriptors and test files; None for containerfiles and other files
    descriptor_type: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)


class ImageRow(Base):
    __tablename__ = "trs_images"

    version_pk: Mapped[int] = mapped_column(
        Integer, ForeignKey("trs_tool_versions.pk", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0 = primary, the signed subject
    reference: Mapped[str] = mapped_column(String(512))  # as the publisher wrote it
    source: Mapped[str] = mapped_column(String(16))  # "registry" | "local"
    registry_host: Mapped[str] = mapped_column(String(256), default="", index=True)
    repository: Mapped[str] = mapped_column(String(256), default="", index=True)
    tag: Mapped[str] = mapped_column(String(128), default="")
    manifest_digest: Mapped[str] = mapped_column(String(71), default="")  # "" for local-only images
    config_digest: Mapped[str] = mapped_column(String(71))  # the image id the engine shows
    media_type: Mapped[str] = mapped_column(String(128), default="")
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
