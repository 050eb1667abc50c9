"""The first schema: requests (one per answered or refused request) and feedback (ratings and preferences).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("variant", sa.String(200)),
        sa.Column("run_dir", sa.Text()),
        sa.Column("base_model", sa.Text()),
        sa.Column("adapter", sa.Text()),
        sa.Column("adapter_version", sa.String(64)),
        sa.Column("user_hash", sa.String(64)),
        sa.Column("messages", sa.JSON()),
        sa.Column("prompt", sa.Text()),
        sa.Column("params", sa.JSON()),
        sa.Column("reply", sa.Text()),
        sa.Column("finish_reason", sa.String(16)),
        sa.Column("prompt_tokens", sa.Integer()),
        sa.Column("completion_tokens", sa.Integer()),
        sa.Column("latency_s", sa.Float()),
        sa.Column("ttft_s", sa.Float()),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("redacted", sa.Boolean(), nullable=False),
        sa.Column("pii", sa.JSON()),
    )
    op.create_index("ix_requests_created_at", "requests", ["created_at"])
    op.create_index("ix_requests_model", "requests", ["model"])
    op.create_index("ix_requests_variant", "requests", ["variant"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64), sa.ForeignKey("requests.id"), nullable=False),
        sa.Column("other_request_id", sa.String(64), sa.ForeignKey("requests.id")),
        sa.Column("preferred_request_id", sa.String(64)),
        sa.Column("rating", sa.String(8)),
        sa.Column("score", sa.Float()),
        sa.Column("correction", sa.Text()),
        sa.Column("comment", sa.Text()),
        sa.Column("user_hash", sa.String(64)),
    )
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("requests")
