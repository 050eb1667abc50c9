"""Promotions: every promote and rollback any replica took, so the other replicas serve the same weights.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(200), nullable=False, index=True),
        sa.Column("action", sa.String(16), nullable=False),  # promote | rollback
        sa.Column("run_dir", sa.Text(), nullable=False),
        sa.Column("version", sa.String(64)),
        sa.Column("previous_version", sa.String(64)),
        sa.Column("replica", sa.String(200)),  # the replica that took the admin call (host:port)
    )


def downgrade() -> None:
    op.drop_table("promotions")
