"""The data store's SQL: small queries over the DRS tables, each taking an open session.

``DrsStore`` (drs_store.domain) owns the transactions and the rules; the read policy lives
in ``drs_store.access``; this module only finds and counts rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session

from drs_store.models import BundleMemberRow, DatasetRow, GrantRow, ObjectRow
from helixgate.errors import NotFound

ID = re.compile(r"^[0-9a-f]{32}$")


def live_object(s: Session, object_id: str) -> ObjectRow:
    """The object unless it is missing or deleted (404 either way)."""
    row = s.get(ObjectRow, object_id) if ID.match(object_id or "") else None
    if row is None or row.deleted_at is not None:
        raise NotFound(f"object not found: {object_id[:64]}")
    return row


def dataset(s: Session, dataset_id: str | None) -> DatasetRow | None:
    return s.get(DatasetRow, dataset_id) if dataset_id is not None else None


def dataset_row(s: Session, dataset_id: str) -> DatasetRow:
    row = s.get(DatasetRow, dataset_id) if ID.match(dataset_id or "") else None
    if row is None:
        raise NotFound(f"dataset not found: {dataset_id[:64]}")
    return row


def active_grant(s: Session, dataset_id: str, username: str) -> GrantRow | None:
    return s.scalars(
        select(GrantRow)
        .where(GrantRow.dataset_id == dataset_id, GrantRow.username == username, GrantRow.revoked_at.is_(None))
        .order_by(GrantRow.granted_at)
        .limit(1)
    ).first()


def active_grants(s: Session, dataset_id: str, username: str) -> Sequence[GrantRow]:
    return s.scalars(
        select(GrantRow).where(
            GrantRow.dataset_id == dataset_id, GrantRow.username == username, GrantRow.revoked_at.is_(None)
        )
    ).all()


def grants(s: Session, dataset_id: str, *, include_revoked: bool) -> Sequence[GrantRow]:
    stmt = select(GrantRow).where(GrantRow.dataset_id == dataset_id)
    if not include_revoked:
        stmt = stmt.where(GrantRow.revoked_at.is_(None))
    return s.scalars(stmt.order_by(GrantRow.granted_at, GrantRow.id)).all()


def visible_datasets(s: Session, user: str | None, *, limit: int = 1000) -> Sequence[tuple[DatasetRow, bool]]:
    """(dataset, user holds an active grant) for public datasets and those ``user`` created or holds a grant on."""
    granted = (
        select(GrantRow.dataset_id).where(GrantRow.username == user, GrantRow.revoked_at.is_(None))
        if user is not None
        else None
    )
    stmt = select(DatasetRow).where(
        or_(
            DatasetRow.public.is_(True),
            DatasetRow.created_by == user if user is not None else false(),
            DatasetRow.id.in_(granted) if granted is not None else false(),
        )
    )
    rows = s.scalars(stmt.order_by(DatasetRow.name, DatasetRow.id).limit(limit)).all()
    held = set(s.scalars(granted).all()) if granted is not None else set()
    return [(row, row.id in held) for row in rows]


def dataset_objects(s: Session, dataset_id: str, *, offset: int, limit: int) -> Sequence[ObjectRow]:
    """Live objects of a dataset, oldest first."""
    return s.scalars(
        select(ObjectRow)
        .where(ObjectRow.dataset_id == dataset_id, ObjectRow.deleted_at.is_(None))
        .order_by(ObjectRow.created_at, ObjectRow.id)
        .offset(offset)
        .limit(limit)
    ).all()


def members(s: Session, bundle_id: str) -> Sequence[tuple[str, str, str]]:
    """(name, member id, member kind) of a bundle's contents, in their recorded order."""
    rows = s.execute(
        select(BundleMemberRow.name, ObjectRow.id, ObjectRow.kind)
        .join(ObjectRow, ObjectRow.id == BundleMemberRow.member_id)
        .where(BundleMemberRow.bundle_id == bundle_id)
        .order_by(BundleMemberRow.position)
    ).all()
    return [(name, member_id, kind) for name, member_id, kind in rows]


def live_parents(s: Session, object_id: str) -> Sequence[str]:
    """Ids of the live bundles that hold ``object_id``."""
    return s.scalars(
        select(BundleMemberRow.bundle_id)
        .join(ObjectRow, ObjectRow.id == BundleMemberRow.bundle_id)
        .where(BundleMemberRow.member_id == object_id, ObjectRow.deleted_at.is_(None))
    ).all()


def by_checksum(s: Session, sha256: str, *, limit: int = 1000) -> Sequence[ObjectRow]:
    return s.scalars(
        select(ObjectRow)
        .where(ObjectRow.sha256 == sha256, ObjectRow.deleted_at.is_(None))
        .order_by(ObjectRow.created_at, ObjectRow.id)
        .limit(limit)
    ).all()


def live_count(s: Session, dataset_id: str) -> int:
    count = s.scalar(
        select(func.count())
        .select_from(ObjectRow)
        .where(ObjectRow.dataset_id == dataset_id, ObjectRow.deleted_at.is_(None))
    )
    return int(count or 0)


def stats(s: Session) -> tuple[int, int]:
    """(number of live objects, total bytes of live blobs)."""
    count = s.scalar(select(func.count()).select_from(ObjectRow).where(ObjectRow.deleted_at.is_(None)))
    total = s.scalar(
        select(func.coalesce(func.sum(ObjectRow.size), 0)).where(
            ObjectRow.deleted_at.is_(None), ObjectRow.kind == "blob"
        )
    )
    return int(count or 0), int(total or 0)
