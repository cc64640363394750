"""job_events.kind: what an event is, as data (status, metrics, checkpoint, worker_lost, ...), so
that the reaper and the dashboard stop reading the message text. Older rows are classified from
the text they were written with (the only record of their kind); the rest are "message".
job_checkpoints.is_final goes: nothing ever set or read it (the final model is the job's adapter).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# What each kind's events have always begun with (worker/reaper.py, worker/reporter.py, worker/tasks.py,
# service routes), so a job that crossed the upgrade keeps its lost-worker count and its checkpoints.
BACKFILL = (
    ("metrics", "type = 'metrics'"),
    ("worker_lost", "message LIKE 'Worker lost%'"),
    ("checkpoint", "message LIKE 'Checkpoint saved at step %'"),
    ("resumed", "message LIKE 'Resuming from checkpoint%'"),
    ("waiting", "message LIKE 'Waiting: the project already runs%'"),
    ("status", "message LIKE 'Validating %' OR message LIKE 'Files validated%' OR message LIKE 'Job %'"
               " OR message LIKE 'Fine-tuning job %'"),
)


def upgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(sa.Column("kind", sa.String(32), nullable=False, server_default="message"))
    for kind, where in BACKFILL:
        op.execute(f"UPDATE job_events SET kind = '{kind}' WHERE kind = 'message' AND ({where})")
    with op.batch_alter_table("job_checkpoints") as batch:
        batch.drop_column("is_final")


def downgrade() -> None:
    with op.batch_alter_table("job_checkpoints") as batch:
        batch.add_column(sa.Column("is_final", sa.Boolean, nullable=False, server_default=sa.false()))
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("kind")
