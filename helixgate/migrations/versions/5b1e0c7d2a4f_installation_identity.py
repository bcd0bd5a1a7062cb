"""installation identity: one random id per deployment (database)

Revision ID: 5b1e0c7d2a4f
Revises: c7e0a461bb62
Create Date: 2026-11-29 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "5b1e0c7d2a4f"
down_revision = "c7e0a461bb62"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "core_installation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("installation_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_core_installation")),
        sa.UniqueConstraint("installation_id", name=op.f("uq_core_installation_installation_id")),
    )


def downgrade() -> None:
    op.drop_table("core_installation")
