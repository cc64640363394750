"""job_samples: the replies a job's model gives to a few held-out prompts at each evaluation, and
the base model's at step 0 (rlhf_engine/samples.py), served at GET .../jobs/{id}/samples.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_samples",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("prompt_index", sa.Integer, nullable=False),
        sa.Column("prompt", sa.JSON, nullable=False),
        sa.Column("completion", sa.Text, nullable=False),
        sa.Column("dialogue", sa.JSON, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("job_id", "step", "prompt_index", name="uq_job_samples_step"),
    )
    op.create_index("ix_job_samples_job_id", "job_samples", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_job_samples_job_id", table_name="job_samples")
    op.drop_table("job_samples")
