"""Find jobs whose worker died and hand them out again.

Runs as a thread in every worker's main process, every lease/4 seconds. A job is dead when it is
`running` and its lease has expired, or it has no lease at all (its run ended without a verdict).
Claiming a dead job is one conditional UPDATE, together with its event in one transaction, so when
several workers reap at once exactly one re-sends it. A job whose worker was lost
RLHF_MAX_ATTEMPTS times ends `failed` (code `worker_lost`) instead of looping.

Re-sending can fail while the broker is down; such jobs stay `queued` and are re-sent on the
next passes of this reaper until the broker takes the message.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import func, or_, select, update

from service.shared.events import new_event
from service.shared.settings import Settings
from service.shared.store.models import FAILED, QUEUED, RUNNING, EventRow, JobRow, now
from service.shared.store.session import session_scope

log = logging.getLogger(__name__)

def reaper_period(settings: Settings) -> float:
    return max(0.5, settings.lease_seconds / 4)


def losses_so_far(s, job_id: str) -> int:
    return s.scalar(select(func.count()).select_from(EventRow)
                    .where(EventRow.job_id == job_id, EventRow.kind == "worker_lost")) or 0


def reap_once(settings: Settings, enqueue, unsent: dict[str, str | None] | None = None) -> list[str]:
    """One pass; returns the ids it re-sent with `enqueue(job_id, queue)`. `unsent` carries the
    jobs (id -> queue) whose re-send failed last time."""
    unsent = {} if unsent is None else unsent
    t = time.time()
    with session_scope(settings.database_url) as s:
        dead = s.execute(select(JobRow.id, JobRow.lease_owner, JobRow.lease_expires_at, JobRow.queue)
                         .where(JobRow.status == RUNNING,
                                or_(JobRow.lease_expires_at < t, JobRow.lease_owner.is_(None)))).all()
    for job_id, owner, _expires, queue in dead:
        with session_scope(settings.database_url) as s:
            lost = losses_so_far(s, job_id) + 1
            exhausted = lost >= settings.max_attempts
            same_lease = (JobRow.lease_owner.is_(None) if owner is None
                          else (JobRow.lease_owner == owner) & (JobRow.lease_expires_at < t))
            claimed = s.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status == RUNNING, same_lease)
                .values(lease_owner=None, lease_expires_at=None,
                        **({"status": FAILED, "finished_at": now(),
                            "error": {"code": "worker_lost", "param": None,
                                      "message": f"The job's worker was lost {lost} time(s) (the process died or "
                                                 f"stopped renewing its lease); giving up after "
                                                 f"{settings.max_attempts} attempt(s)."}}
                           if exhausted else {"status": QUEUED}))
            ).rowcount
            if claimed:
                if exhausted:
                    s.add(new_event(job_id, kind="worker_lost", level="error",
                                   message=f"Worker lost {lost} time(s); job failed",
                                   data={"code": "worker_lost", "lost": lost}))
                else:
                    s.add(new_event(job_id, kind="worker_lost", level="warn",
                                   message=f"Worker lost ({lost} of {settings.max_attempts}); job requeued to "
                                           "resume from its last checkpoint",
                                   data={"code": "worker_lost", "lost": lost}))
        if claimed and not exhausted:
            unsent[job_id] = queue
    sent = []
    for job_id, queue in sorted(unsent.items()):
        try:
            enqueue(job_id, queue)
        except Exception as err:  # the broker is down: the job stays queued, try again next pass
            log.warning("could not re-send job %s: %s", job_id, err)
            continue
        del unsent[job_id]
        sent.append(job_id)
    return sent


def resend_lost_queued(settings: Settings, enqueue) -> list[str]:
    """Send again the `queued` jobs whose message may be lost: never sent (the broker was down when
    the API tried) or sent longer than RLHF_RESEND_QUEUED_SECONDS ago. A duplicate message is
    harmless (a finished job is skipped, a running one is leased), a lost one strands the job.
    """
    t = time.time()
    grace = min(30, settings.resend_queued_seconds)  # the API sends right after its commit; let it
    with session_scope(settings.database_url) as s:
        stale = s.execute(select(JobRow.id, JobRow.sent_at, JobRow.queue).where(
            JobRow.status == QUEUED, JobRow.lease_owner.is_(None),
            or_((JobRow.sent_at.is_(None)) & (JobRow.created_at < t - grace),
                JobRow.sent_at < t - settings.resend_queued_seconds))).all()
    sent = []
    for job_id, was, queue in stale:
        same = JobRow.sent_at.is_(None) if was is None else JobRow.sent_at == was
        with session_scope(settings.database_url) as s:  # claim: only one reaper re-sends it
            if not s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == QUEUED, same)
                             .values(sent_at=t)).rowcount:
                continue
        try:
            enqueue(job_id, queue)
            sent.append(job_id)
        except Exception as err:  # still down: forget the claim so the next pass tries again
            log.warning("could not re-send queued job %s: %s", job_id, err)
            with session_scope(settings.database_url) as s:
                s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.sent_at == t).values(sent_at=None))
    return sent


def start_reaper_thread(settings: Settings) -> threading.Thread:
    from service.shared.queue import enqueue_job

    unsent: dict[str, str | None] = {}

    def loop():
        while True:
            try:
                for job_id in reap_once(settings, enqueue_job, unsent):
                    log.warning("requeued job %s after its worker was lost", job_id)
                for job_id in resend_lost_queued(settings, enqueue_job):
                    log.warning("re-sent queued job %s whose message may have been lost", job_id)
            except Exception as err:
                from service.shared.dbretry import is_transient

                if is_transient(err):  # the database is away; the next pass will do
                    log.warning("reaper pass skipped: %s", type(err).__name__)
                else:
                    log.exception("reaper pass failed")
            time.sleep(reaper_period(settings))

    thread = threading.Thread(target=loop, name="rlhf-reaper", daemon=True)
    thread.start()
    return thread
