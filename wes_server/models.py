"""WES persistence: runs, their tags and attachments, tasks, and the SQL run queue."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from helixgate.db import Base

# Sqlite only autoincrements INTEGER PRIMARY KEY; BigInteger elsewhere.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RunRow(Base):
    __tablename__ = "wes_runs"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    state: Mapped[str] = mapped_column(String(24), index=True)
    request: Mapped[dict] = mapped_column(JSON)  # the RunRequest as submitted (workflow_params parsed)
    workflow_source: Mapped[dict] = mapped_column(JSON, default=dict)  # how the workflow was resolved (trs pins...)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    outputs: Mapped[dict] = mapped_column(JSON, default=dict)
    system_logs: Mapped[list] = mapped_column(JSON, default=list)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_wes_runs_owner_seq", "owner", "seq"),
        Index("ix_wes_runs_state_heartbeat", "state", "heartbeat_at"),
    )


class RunTagRow(Base):
    __tablename__ = "wes_run_tags"

    run_id: Mapped[str] = mapped_column(String(36), ForeignKey("wes_runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(512), index=True)


class AttachmentRow(Base):
    """Workflow attachments live in the database so any worker on any host can run the run."""

    __tablename__ = "wes_attachments"

    run_id: Mapped[str] = mapped_column(String(36), ForeignKey("wes_runs.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)


class TaskRow(Base):
    __tablename__ = "wes_tasks"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(200), index=True)
    run_id: Mapped[str] = mapped_column(String(36), ForeignKey("wes_runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(24))
    cmd: Mapped[list] = mapped_column(JSON, default=list)
    image: Mapped[str | None] = mapped_column(String(512))
    image_id: Mapped[str | None] = mapped_column(String(80))
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    inputs: Mapped[list] = mapped_column(JSON, default=list)  # [{path, sha256, expected, source}]
    # what the gate proved ({image: {signer, ...}}) or why it refused ({refusal: {message, expected, actual}})
    verification: Mapped[dict | None] = mapped_column(JSON, default=dict)
    outputs: Mapped[list] = mapped_column(JSON, default=list)  # [{path, sha256, size}]
    system_logs: Mapped[list] = mapped_column(JSON, default=list)
    resources: Mapped[dict] = mapped_column(JSON, default=dict)
    stdout: Mapped[bytes | None] = mapped_column(LargeBinary)
    stderr: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_wes_tasks_run_seq", "run_id", "seq"),)


class QueueRow(Base):
    """The ``sql`` queue backend: one row per queued run, leased with an expiry."""

    __tablename__ = "wes_queue"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    leased_by: Mapped[str | None] = mapped_column(String(128))
    receipt: Mapped[str | None] = mapped_column(String(64))
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
