"""jobs.sent_at: when the job's message was last handed to the broker.

A `queued` job whose message never reached a worker (broker down at creation, a Redis restart
without persistence) is found by the reaper through this column and sent again.

Revision ID: 0003
Revises: 0002
Create Date: 2025-02-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sent_at", sa.Double, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("sent_at")
