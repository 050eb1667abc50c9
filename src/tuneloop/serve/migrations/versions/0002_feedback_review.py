"""Feedback review: the UI's inbox marks each piece of feedback accepted or discarded (an edit keeps the original).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("review", sa.String(16)))  # None (not reviewed) | accepted | discarded
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("original_correction", sa.Text()))  # the user's words when a reviewer edited them


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("original_correction")
        batch.drop_column("reviewed_at")
        batch.drop_column("review")
