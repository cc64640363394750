"""jobs.queue: the Celery queue a job's messages go to (its model's queue in the registry).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: jobs created before this column go to the sender's RLHF_QUEUE, as they always did.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("queue", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("queue")
