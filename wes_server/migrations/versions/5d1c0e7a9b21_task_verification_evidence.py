"""task verification evidence (signer, pinned image, refusal with expected vs actual)

Revision ID: 5d1c0e7a9b21
Revises: 032edb9a690e
Create Date: 2026-11-29 15:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "5d1c0e7a9b21"
down_revision = "032edb9a690e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("wes_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verification", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wes_tasks", schema=None) as batch_op:
        batch_op.drop_column("verification")
