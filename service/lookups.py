"""Fetch-or-404 for the objects routes address by id, with the envelope's wording.

Every lookup is scoped to the caller's project: another project's id is indistinguishable from
an id that does not exist (404, never 403), so ids reveal nothing across tenants.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import not_found
from service.store.models import FileRow, JobRow


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
