"""core_service_credentials: hashed client secrets of service identities (WES workers)

Revision ID: 6c2a9d4e1f3b
Revises: 5b1f0c2d9e7a
Create Date: 2026-11-29 12:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import helixgate.audit  # noqa: F401  (custom column types)

revision = "6c2a9d4e1f3b"
down_revision = "5b1f0c2d9e7a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "core_service_credentials",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("created_at", helixgate.audit.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", helixgate.audit.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", helixgate.audit.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_core_service_credentials")),
    )
    with op.batch_alter_table("core_service_credentials", schema=None) as batch_op:
        batch_op.create_index("ix_core_service_credentials_username", ["username"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("core_service_credentials", schema=None) as batch_op:
        batch_op.drop_index("ix_core_service_credentials_username")
    op.drop_table("core_service_credentials")
