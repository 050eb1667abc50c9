"""The loop's lease and state: one row per loop name, held by one `tuneloop loop` process at a time.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loops",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(200)),  # host:pid:nonce of the process holding the lease; None when released
        sa.Column("host", sa.String(200)),
        sa.Column("pid", sa.Integer()),
        sa.Column("heartbeat", sa.Float()),  # epoch seconds of the holder's last heartbeat
        sa.Column("state", sa.JSON()),  # the loop's state document (tuneloop.feedback.loop)
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("loops")
