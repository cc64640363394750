"""Per-project quota: how many jobs of one project may run at once (RLHF_MAX_CONCURRENT_JOBS_PER_PROJECT).

The API accepts and enqueues every job. The limit is enforced where a job starts: the worker's
lease UPDATE (worker/lease.py) only turns a job `running` while `has_room(limit)` holds, and a job
refused for that stays `queued` and is retried later. Two workers starting two jobs of one project
at the same moment must not both pass the check, so on Postgres the starting transaction first
takes a per-project advisory lock (`serialize_starts`): the second transaction waits for the first
to commit and its UPDATE then counts the first job as running. SQLite needs no lock: it runs one
writing statement at a time, and the check is part of that statement.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.orm import Session, aliased

from service.shared.store.models import RUNNING, JobRow


def has_room(limit: int) -> ColumnElement[bool]:
    """A WHERE clause for an UPDATE of one JobRow: fewer than `limit` *other* jobs of the same
    project are running."""
    other = aliased(JobRow)
    others_running = (select(func.count()).select_from(other)
                      .where(other.project_id == JobRow.project_id, other.status == RUNNING, other.id != JobRow.id)
                      .correlate(JobRow).scalar_subquery())
    return others_running < limit


def serialize_starts(session: Session, project_id: str) -> None:
    """Make concurrent job starts of one project take turns, until this transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"rlhf-project:{project_id}"})
