"""Per-project quotas the worker enforces: how many jobs of one project may run at once.

The API still accepts and enqueues every job; a worker that receives a job whose project is at
its limit leaves it `queued` and requeues the message with a delay (worker/tasks.py). Pure: one
COUNT on the session it is given, no side effects.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.store.models import RUNNING, JobRow


def running_jobs(session: Session, project_id: str, *, exclude_job_id: str | None = None) -> int:
    stmt = select(func.count()).select_from(JobRow).where(JobRow.project_id == project_id,
                                                          JobRow.status == RUNNING)
    if exclude_job_id is not None:
        stmt = stmt.where(JobRow.id != exclude_job_id)
    return session.scalar(stmt) or 0


def project_has_capacity(session: Session, project_id: str, limit: int, *,
                         exclude_job_id: str | None = None) -> bool:
    """True when the project runs fewer than `limit` jobs (`limit` <= 0: no limit).

    `exclude_job_id`: the job about to start, so a job resumed while still marked `running`
    (after a lost worker) does not count against itself.
    """
    if limit <= 0:
        return True
    return running_jobs(session, project_id, exclude_job_id=exclude_job_id) < limit
