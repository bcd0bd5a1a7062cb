"""Registered users and their roles.

A valid token is not enough: the user must be registered here and active. Deactivation
takes effect on the next request because every request reads the user row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, ForeignKey, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from helixgate.audit.models import UTCDateTime
from helixgate.db import Base, Database
from helixgate.errors import BadRequest, Conflict, NotFound
from helixgate.rbac import ROLES

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UserRow(Base):
    __tablename__ = "core_users"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    # UTCDateTime: SQLite drops the zone, which the API's date-time (core.yaml) requires
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    roles: Mapped[list["UserRoleRow"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )


class UserRoleRow(Base):
    __tablename__ = "core_user_roles"

    username: Mapped[str] = mapped_column(
        String(128), ForeignKey("core_users.username", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[UserRow] = relationship(back_populates="roles")


class BootstrapRow(Base):
    """A one-time start-up step that has happened (e.g. the bootstrap admin was created)."""

    __tablename__ = "core_bootstrap"

    step: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(128))
    done_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class User:
    username: str
    display_name: str
    active: bool
    roles: tuple[str, ...]
    created_at: datetime

    def to_dict(self) -> dict[str, object]:
        return {
            "username": self.username,
            "display_name": self.display_name,
            "active": self.active,
            "roles": list(self.roles),
            "created_at": self.created_at.isoformat(),
        }


def _to_user(row: UserRow) -> User:
    return User(
        username=row.username,
        display_name=row.display_name,
        active=row.active,
        roles=tuple(sorted(r.role for r in row.roles)),
        created_at=row.created_at,
    )


def validate_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise BadRequest("username must be 1-128 characters of letters, digits and . _ @ + -")
    return username


def validate_roles(roles: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise BadRequest(f"unknown role(s): {', '.join(map(str, unknown))}; known roles: {', '.join(ROLES)}")
    return tuple(sorted(set(roles)))


class UserDirectory:
    """Create, activate, deactivate users and assign roles."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _row(self, s: Session, username: str) -> UserRow:
        row = s.get(UserRow, username)
        if row is None:
            raise NotFound(f"user not found: {username}")
        return row

    def get(self, username: str) -> User | None:
        with self.db.session() as s:
            row = s.get(UserRow, username)
            return _to_user(row) if row else None

    def all(self) -> list[User]:
        with self.db.session() as s:
            return [_to_user(r) for r in s.scalars(select(UserRow).order_by(UserRow.username))]

    def register(
        self, username: str, *, roles: tuple[str, ...] = (), active: bool = False, display_name: str = ""
    ) -> User:
        validate_username(username)
        roles = validate_roles(roles)
        with self.db.session() as s:
            if s.get(UserRow, username) is not None:
                raise Conflict(f"user already registered: {username}")
            row = UserRow(username=username, display_name=display_name[:256], active=active)
            row.roles = [UserRoleRow(username=username, role=r) for r in roles]
            s.add(row)
            s.flush()
            return _to_user(row)

    def ensure(self, username: str, *, roles: tuple[str, ...], active: bool = True) -> User:
        """Create ``username`` with these roles if it does not exist. An existing user is left
        exactly as administrators made it: a restart never re-activates or re-promotes anyone."""
        with self.db.session() as s:
            row = s.get(UserRow, username)
            if row is None:
                row = UserRow(username=validate_username(username), active=active)
                row.roles = [UserRoleRow(username=username, role=r) for r in validate_roles(roles)]
                s.add(row)
                s.flush()
            return _to_user(row)

    def bootstrap_admin(self, username: str) -> bool:
        """Create the first administrator once per deployment (first start only).

        Whether it happened is recorded in ``core_bootstrap``: later starts (and concurrent
        first starts of other processes) do nothing, even if the admin was deactivated,
        demoted or deleted since. Returns True when this call created it.
        """
        try:
            with self.db.session() as s:
                if s.get(BootstrapRow, "admin") is not None:
                    return False
                s.add(BootstrapRow(step="admin", subject=validate_username(username)))
                s.flush()  # a concurrent first start fails here on the primary key
                created = s.get(UserRow, username) is None
                if created:
                    row = UserRow(username=username, active=True)
                    row.roles = [UserRoleRow(username=username, role="admin")]
                    s.add(row)
                return created
        except IntegrityError:
            return False

    def set_active(self, username: str, active: bool) -> User:
        with self.db.session() as s:
            row = self._row(s, username)
            row.active = active
            s.flush()
            return _to_user(row)

    def set_roles(self, username: str, roles: list[str]) -> User:
        roles_t = validate_roles(roles)
        with self.db.session() as s:
            row = self._row(s, username)
            row.roles = [UserRoleRow(username=username, role=r) for r in roles_t]
            s.flush()
            s.refresh(row)
            return _to_user(row)

    def delete(self, username: str) -> None:
        with self.db.session() as s:
            s.delete(self._row(s, username))
