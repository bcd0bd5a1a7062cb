"""The identity of one deployment: a random installation id stored once in its database.

Every process of a deployment (API replicas, workers) reads the same id, so they agree on
things that must separate deployments sharing infrastructure — above all the Docker label
scope of task containers (``container_scope``, default ``hg-<id prefix>``). Another
deployment has another database and therefore another id. The id is created during the
locked first start (``helixgate.db.startup_lock``), so concurrent first starts agree on one.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from sqlalchemy import DateTime, Integer, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from helixgate.db import Base, Database
from helixgate.errors import ConfigurationError

_ROW = 1  # a single row


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class InstallationRow(Base):
    __tablename__ = "core_installation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    installation_id: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def installation_id(db: Database) -> str | None:
    """The stored installation id, or None before the first start."""
    with db.session() as s:
        return s.scalar(select(InstallationRow.installation_id).where(InstallationRow.id == _ROW))


def ensure_installation_id(db: Database) -> str:
    """The installation id, created (random, 128 bits) on first call; never changed afterwards."""
    existing = installation_id(db)
    if existing:
        return existing
    try:
        with db.session() as s:
            s.add(InstallationRow(id=_ROW, installation_id=secrets.token_hex(16)))
    except IntegrityError:  # another process won (only without startup_lock): use its id
        pass
    stored = installation_id(db)
    if stored is None:
        raise ConfigurationError("the installation id could not be stored in the database")
    return stored


def default_container_scope(installation: str) -> str:
    """The container label scope of a deployment that did not configure ``container_scope``."""
    return f"hg-{installation[:16]}"
