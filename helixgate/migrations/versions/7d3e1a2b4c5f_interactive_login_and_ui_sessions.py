"""interactive login: passwords, login failures, authorization codes, refresh tokens,
device codes, web UI sessions

Revision ID: 7d3e1a2b4c5f
Revises: 6c2a9d4e1f3b
Create Date: 2026-11-29 15:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import helixgate.audit  # noqa: F401  (custom column types)

revision = "7d3e1a2b4c5f"
down_revision = "6c2a9d4e1f3b"
branch_labels = None
depends_on = None

UTC = helixgate.audit.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "core_user_passwords",
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("scrypt_hash", sa.String(length=256), nullable=False),
        sa.Column("updated_at", UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["username"],
            ["core_users.username"],
            name=op.f("fk_core_user_passwords_username_core_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_core_user_passwords")),
    )
    op.create_table(
        "core_login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("client_addr", sa.String(length=64), nullable=False),
        sa.Column("at", UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_core_login_failures")),
    )
    op.create_index("ix_core_login_failures_username", "core_login_failures", ["username"])
    op.create_index("ix_core_login_failures_client_addr", "core_login_failures", ["client_addr"])
    op.create_table(
        "core_auth_codes",
        sa.Column("code_sha256", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.String(length=512), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("code_challenge", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=256), nullable=False),
        sa.Column("nonce", sa.String(length=256), nullable=False),
        sa.Column("expires_at", UTC(timezone=True), nullable=False),
        sa.Column("used_at", UTC(timezone=True), nullable=True),
        sa.Column("family_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("code_sha256", name=op.f("pk_core_auth_codes")),
    )
    op.create_table(
        "core_refresh_tokens",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.String(length=256), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("expires_at", UTC(timezone=True), nullable=False),
        sa.Column("rotated_at", UTC(timezone=True), nullable=True),
        sa.Column("revoked_at", UTC(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_sha256", name=op.f("pk_core_refresh_tokens")),
    )
    op.create_index("ix_core_refresh_tokens_family_id", "core_refresh_tokens", ["family_id"])
    op.create_table(
        "core_device_codes",
        sa.Column("device_code_sha256", sa.String(length=64), nullable=False),
        sa.Column("user_code", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=256), nullable=False),
        sa.Column("expires_at", UTC(timezone=True), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("last_poll_at", UTC(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("device_code_sha256", name=op.f("pk_core_device_codes")),
        sa.UniqueConstraint("user_code", name=op.f("uq_core_device_codes_user_code")),
    )
    op.create_table(
        "core_ui_sessions",
        sa.Column("id_sha256", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=True),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("expires_at", UTC(timezone=True), nullable=False),
        sa.Column("access_expires_at", UTC(timezone=True), nullable=True),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id_sha256", name=op.f("pk_core_ui_sessions")),
    )


def downgrade() -> None:
    op.drop_table("core_ui_sessions")
    op.drop_table("core_device_codes")
    op.drop_index("ix_core_refresh_tokens_family_id", table_name="core_refresh_tokens")
    op.drop_table("core_refresh_tokens")
    op.drop_table("core_auth_codes")
    op.drop_index("ix_core_login_failures_client_addr", table_name="core_login_failures")
    op.drop_index("ix_core_login_failures_username", table_name="core_login_failures")
    op.drop_table("core_login_failures")
    op.drop_table("core_user_passwords")
