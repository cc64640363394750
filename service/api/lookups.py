"""Fetch-or-404 for the objects routes address by id, with the envelope's wording.

Every lookup is scoped to the caller's project: another project's id is indistinguishable from
an id that does not exist (404, never 403), so ids reveal nothing across tenants.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.errors import not_found
from service.shared import model_names
from service.shared.model_names import job_model_name
from service.shared.store.models import SUCCEEDED, CheckpointRow, FileRow, JobRow


def get_file(db: Session, project_id: str, file_id: str) -> FileRow:
    row = db.scalar(select(FileRow).where(FileRow.id == file_id, FileRow.project_id == project_id))
    if row is None:
        raise not_found("file", file_id, param="file_id")
    return row


def get_job(db: Session, project_id: str, job_id: str, *, for_update: bool = False) -> JobRow:
    """`for_update` locks the row (Postgres) so a state change cannot race the worker's."""
    stmt = select(JobRow).where(JobRow.id == job_id, JobRow.project_id == project_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = db.scalar(stmt)
    if row is None:
        raise not_found("fine-tuning job", job_id, param="fine_tuning_job_id")
    return row


def get_fine_tuned_model(db: Session, project_id: str, name: str, *, for_update: bool = False) -> JobRow:
    """The succeeded job whose final model is `name` and has not been deleted (checkpoint names
    are not models here: they are listed per job, under .../checkpoints)."""
    parsed = model_names.parse(name)
    row = None
    if parsed is not None and parsed.step is None:
        stmt = select(JobRow).where(JobRow.id == parsed.job_id, JobRow.project_id == project_id,
                                    JobRow.status == SUCCEEDED, JobRow.model_deleted_at.is_(None))
        row = db.scalar(stmt.with_for_update() if for_update else stmt)
    if row is None or row.fine_tuned_model != name:
        raise not_found("model", name, param="model")
    return row


def get_checkpoint_model(db: Session, project_id: str, name: str) -> tuple[JobRow, CheckpointRow]:
    """The job and checkpoint a `...:ckpt-step-N` name points at, in any state of the job (its
    checkpoints are listed while it runs); the name must be exactly the job's."""
    parsed = model_names.parse(name)
    if parsed is not None and parsed.step is not None:
        job = db.scalar(select(JobRow).where(JobRow.id == parsed.job_id, JobRow.project_id == project_id))
        if job is not None and job_model_name(job) == parsed.model:
            ckpt = db.scalar(select(CheckpointRow).where(CheckpointRow.job_id == job.id,
                                                         CheckpointRow.step_number == parsed.step))
            if ckpt is not None:
                return job, ckpt
    raise not_found("model", name, param="model")
