"""Job leases: at most one worker runs a job at any time, whatever the broker redelivers.

A lease is (owner, expiry) on the job row, taken with one conditional UPDATE (atomic on Postgres
and SQLite) and renewed by a heartbeat thread while the job runs. A worker that dies stops
renewing; once the lease expires the reaper hands the job to another worker, which resumes it
from its last checkpoint. Every write the run makes afterwards is fenced on the lease owner
(worker/reporter.py), so a worker that was merely slow cannot write over its successor.

Timings scale with RLHF_LEASE_SECONDS: the heartbeat renews every lease/3 seconds (sooner,
every lease/10, after a failed renewal) and the reaper looks for dead leases every lease/4.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from sqlalchemy import func, or_, select, update

from service.shared import quotas
from service.shared.events import new_event
from service.shared.store.models import QUEUED, RUNNING, JobRow, now
from service.shared.store.session import session_scope

log = logging.getLogger(__name__)


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def owner_pid(owner: str | None) -> int | None:
    """The process id in an owner string (tests use it to find the process running a job)."""
    try:
        return int(owner.split(":")[1]) if owner else None
    except (IndexError, ValueError):
        return None


ACQUIRED, TAKEN, PROJECT_FULL = "acquired", "taken", "project_full"


def acquire(db_url: str, job_id: str, owner: str, ttl: float, *, max_running: int = 0) -> str:
    """Take the lease of a queued job: ACQUIRED, TAKEN (not queued, or leased by another worker)
    or PROJECT_FULL (its project already runs `max_running` jobs; 0 = no limit; service/shared/quotas.py).

    Only `queued`: a `running` job whose lease expired had its worker die, and only the reaper may
    hand it on, because the reaper counts lost workers (a redelivered message that arrives after
    the lease lapsed must not start an attempt the count never sees).
    """
    t = time.time()
    free = (JobRow.id == job_id) & (JobRow.status == QUEUED) & or_(JobRow.lease_owner.is_(None),
                                                                   JobRow.lease_expires_at < t)
    with session_scope(db_url) as s:
        if max_running > 0:
            project_id = s.scalar(select(JobRow.project_id).where(JobRow.id == job_id))
            if project_id is None:
                return TAKEN
            quotas.serialize_starts(s, project_id)
        result = s.execute(
            update(JobRow)
            .where(free, *([quotas.has_room(max_running)] if max_running > 0 else []))
            .values(lease_owner=owner, lease_expires_at=t + ttl, status=RUNNING, attempts=JobRow.attempts + 1)
        )
        if result.rowcount == 1:
            s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.started_at.is_(None)).values(started_at=now()))
            return ACQUIRED
        if max_running > 0 and s.scalar(select(func.count()).select_from(JobRow).where(free)):
            return PROJECT_FULL
        return TAKEN


def renew(db_url: str, job_id: str, owner: str, ttl: float) -> bool:
    with session_scope(db_url) as s:
        result = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == owner)
                           .values(lease_expires_at=time.time() + ttl))
        return result.rowcount == 1


def release(db_url: str, job_id: str, owner: str) -> None:
    with session_scope(db_url) as s:
        s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == owner)
                  .values(lease_owner=None, lease_expires_at=None))


def hand_back(db_url: str, job_id: str, owner: str, message: str) -> bool:
    """A run that stops without a verdict (worker shutting down): `running` -> `queued`, lease
    released and an event, in one transaction. False if the job is no longer ours or no longer
    running (cancelled, paused). The caller then sends a new message for it."""
    with session_scope(db_url) as s:
        result = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == RUNNING,
                                                JobRow.lease_owner == owner)
                           .values(status=QUEUED, lease_owner=None, lease_expires_at=None))
        if result.rowcount == 1:
            s.add(new_event(job_id, message, kind="requeued", level="warn"))
        return result.rowcount == 1


class Heartbeat(threading.Thread):
    """Renews the lease every ttl/3 seconds; `lost` is set if another worker took the job.

    A failed renewal (database blip) is retried every ttl/10 seconds until it succeeds or the
    lease is gone; it never ends the thread."""

    def __init__(self, db_url: str, job_id: str, owner: str, ttl: float):
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.db_url, self.job_id, self.owner, self.ttl = db_url, job_id, owner, ttl
        self.lost = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        interval = self.ttl / 3
        while not self._halt.wait(interval):
            try:
                if not renew(self.db_url, self.job_id, self.owner, self.ttl):
                    log.warning("job %s: lease taken over by another worker", self.job_id)
                    self.lost.set()
                    return
                interval = self.ttl / 3
            except Exception as err:  # a database blip: retry soon, the lease has slack
                log.warning("job %s: lease renewal failed (%s); retrying", self.job_id, type(err).__name__)
                interval = max(0.2, self.ttl / 10)

    def stop(self) -> None:
        self._halt.set()
