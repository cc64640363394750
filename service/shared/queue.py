"""Hand jobs to the workers: a Celery *client* only.

The API never imports the worker package (it would drag torch in); it sends the task by name.
No result backend: job state lives in the database, not in Celery.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from service.shared.settings import get_settings

log = logging.getLogger(__name__)

TASK_NAME = "worker.run_job"  # registered by worker/tasks; the name is the contract

# Give up quickly when the broker is down: the request must not hang, and the job row is already
# committed as `queued`, so the worker's reaper re-sends it once the broker is back.
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


@lru_cache
def celery_client(broker_url: str, queue: str) -> Celery:
    app = Celery("rlhf-service", broker=broker_url, backend=None, set_as_current=False)
    app.conf.update(task_default_queue=queue, broker_connection_timeout=3,
                    broker_connection_retry_on_startup=False, task_ignore_result=True)
    return app


def enqueue_job(job_id: str, queue: str | None = None) -> None:
    """Send `worker.run_job(job_id)` to `queue` (the job's own, JobRow.queue), else RLHF_QUEUE.
    Raises if the broker refuses."""
    settings = get_settings()
    queue = queue or settings.queue
    client = celery_client(settings.broker_url, settings.queue)
    client.send_task(TASK_NAME, args=[job_id], queue=queue, retry=True, retry_policy=_RETRY_POLICY)
    log.info("enqueued %s on %s", job_id, queue)


def mark_sent(session, job_id: str) -> None:
    """Record a successful send; the reaper re-sends queued jobs whose last send is old or missing."""
    import time

    from sqlalchemy import update

    from service.shared.store.models import JobRow

    session.execute(update(JobRow).where(JobRow.id == job_id).values(sent_at=time.time()))
