"""Job leases: at most one worker runs a job at any time, whatever the broker redelivers.

A lease is (owner, expiry) on the job row, taken with one conditional UPDATE (atomic on Postgres
and SQLite) and renewed by a heartbeat thread while the job runs. A worker that dies stops
renewing; once the lease expires the reaper hands the job to another worker, which resumes it
from its last checkpoint.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from sqlalchemy import or_, update

from service.store.models import QUEUED, RUNNING, JobRow, now
from service.store.session import session_scope


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def acquire(db_url: str, job_id: str, owner: str, ttl: float) -> bool:
    """Take the lease of a queued job, or of a running one whose lease has expired."""
    t = time.time()
    with session_scope(db_url) as s:
        result = s.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status.in_([QUEUED, RUNNING]),
                   or_(JobRow.lease_owner.is_(None), JobRow.lease_expires_at < t))
            .values(lease_owner=owner, lease_expires_at=t + ttl, status=RUNNING, attempts=JobRow.attempts + 1)
        )
        if result.rowcount == 1:
            s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.started_at.is_(None)).values(started_at=now()))
        return result.rowcount == 1


def renew(db_url: str, job_id: str, owner: str, ttl: float) -> bool:
    with session_scope(db_url) as s:
        result = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == owner)
                           .values(lease_expires_at=time.time() + ttl))
        return result.rowcount == 1


def release(db_url: str, job_id: str, owner: str) -> None:
    with session_scope(db_url) as s:
        s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == owner)
                  .values(lease_owner=None, lease_expires_at=None))


class Heartbeat(threading.Thread):
    """Renews the lease every ttl/3 seconds; `lost` is set if another worker took the job."""

    def __init__(self, db_url: str, job_id: str, owner: str, ttl: float):
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.db_url, self.job_id, self.owner, self.ttl = db_url, job_id, owner, ttl
        self.lost = threading.Event()
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not renew(self.db_url, self.job_id, self.owner, self.ttl):
                    self.lost.set()
                    return
            except Exception:  # a database blip: try again next beat, the lease has slack
                continue

    def stop(self) -> None:
        self._stop.set()
