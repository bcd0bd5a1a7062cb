"""core_bootstrap: one row per one-time start-up step (the bootstrap admin is created once)

Revision ID: 5b1f0c2d9e7a
Revises: 5b1e0c7d2a4f
Create Date: 2026-11-29 09:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "5b1f0c2d9e7a"
down_revision = "5b1e0c7d2a4f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "core_bootstrap",
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("step", name=op.f("pk_core_bootstrap")),
    )


def downgrade() -> None:
    op.drop_table("core_bootstrap")
