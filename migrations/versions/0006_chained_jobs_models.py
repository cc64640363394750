"""jobs: what a job starts from (base_model, init_adapters, parent_job_id), its integrations,
result files, and when its fine-tuned model was deleted (model_deleted_at); event level
"warning" becomes OpenAI's "warn" (the downgrade leaves it: both read back fine before 0006).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MODEL_NAME_LENGTH = 400


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("base_model", sa.String(200), nullable=True))
        batch.add_column(sa.Column("init_adapters", sa.JSON, nullable=True))
        batch.add_column(sa.Column("parent_job_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("integrations", sa.JSON, nullable=True))
        batch.add_column(sa.Column("result_files", sa.JSON, nullable=True))
        batch.add_column(sa.Column("model_deleted_at", sa.BigInteger, nullable=True))
        batch.create_index("ix_jobs_parent_job_id", ["parent_job_id"])
    # Every job before this one started from a registry model: its `model`.
    op.execute("UPDATE jobs SET base_model = model")
    # Workers used to write level "warning"; OpenAI's (and the API's, now) is "warn".
    op.execute("UPDATE job_events SET level = 'warn' WHERE level = 'warning'")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("base_model", existing_type=sa.String(200), nullable=False)
        # A `ft:` name holds the base, the project, the suffix and the job id: longer than a base name.
        batch.alter_column("model", existing_type=sa.String(200), type_=sa.String(MODEL_NAME_LENGTH))
        batch.alter_column("fine_tuned_model", existing_type=sa.String(256), type_=sa.String(MODEL_NAME_LENGTH),
                           existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("fine_tuned_model", existing_type=sa.String(MODEL_NAME_LENGTH), type_=sa.String(256),
                           existing_nullable=True)
        batch.alter_column("model", existing_type=sa.String(MODEL_NAME_LENGTH), type_=sa.String(200))
        batch.drop_index("ix_jobs_parent_job_id")
        for column in ("model_deleted_at", "result_files", "integrations", "parent_job_id", "init_adapters",
                       "base_model"):
            batch.drop_column(column)
