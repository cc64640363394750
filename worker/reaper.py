"""Find jobs whose worker died (lease expired while `running`) and hand them out again.

Runs as a thread in every worker's main process. Claiming a dead job is one conditional UPDATE,
so when several workers reap at once exactly one re-sends it. A job that has already used up
its attempts ends `failed` instead of looping.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select, update

from service.settings import Settings
from service.store.models import FAILED, QUEUED, RUNNING, JobRow, now
from service.store.session import session_scope
from worker.reporter import add_event

log = logging.getLogger(__name__)


def reap_once(settings: Settings, enqueue) -> list[str]:
    t = time.time()
    requeued = []
    with session_scope(settings.database_url) as s:
        dead = s.execute(select(JobRow.id, JobRow.attempts, JobRow.lease_owner)
                         .where(JobRow.status == RUNNING, JobRow.lease_expires_at < t)).all()
    for job_id, attempts, owner in dead:
        exhausted = attempts >= settings.max_attempts
        with session_scope(settings.database_url) as s:
            claimed = s.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status == RUNNING, JobRow.lease_owner == owner,
                                     JobRow.lease_expires_at < t)
                .values(lease_owner=None, lease_expires_at=None,
                        **({"status": FAILED, "finished_at": now(),
                            "error": {"code": "worker_lost", "param": None,
                                      "message": f"the job's worker died {attempts} time(s); giving up"}}
                           if exhausted else {"status": QUEUED}))
            ).rowcount
        if not claimed:
            continue
        if exhausted:
            add_event(settings.database_url, job_id, f"Worker lost {attempts} time(s); job failed", level="error")
            continue
        add_event(settings.database_url, job_id, "Worker lost; job requeued to resume from its last checkpoint",
                  level="warning")
        enqueue(job_id)
        requeued.append(job_id)
    return requeued


def start_reaper_thread(settings: Settings) -> threading.Thread:
    from service.queue import enqueue_job

    def loop():
        while True:
            try:
                for job_id in reap_once(settings, enqueue_job):
                    log.warning("requeued job %s after its worker was lost", job_id)
            except Exception:
                log.exception("reaper pass failed")
            time.sleep(max(1.0, settings.lease_seconds / 4))

    thread = threading.Thread(target=loop, name="rlhf-reaper", daemon=True)
    thread.start()
    return thread
