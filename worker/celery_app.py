"""The worker process: `celery -A worker.celery_app worker`.

Settings that keep one job per process and a lost job recoverable:
- prefetch 1, concurrency 1, acks late: a worker holds at most one job, acknowledged only when done;
- a fresh child process per job (max_tasks_per_child=1), so GPU memory is returned to the driver;
- the broker's visibility timeout exceeds the task time limit, so a long job is never redelivered
  while it still runs; a worker that dies is detected by its expired lease instead (worker/reaper.py).
"""

from __future__ import annotations

from celery import Celery, signals

from service.settings import get_settings

settings = get_settings()

app = Celery("rlhf-worker", broker=settings.broker_url, backend=None, include=["worker.tasks"])
app.conf.update(
    task_default_queue=settings.queue,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    task_time_limit=settings.task_time_limit,
    worker_prefetch_multiplier=1,
    worker_concurrency=1,
    worker_max_tasks_per_child=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if settings.broker_url.startswith(("redis://", "rediss://")):
    # Redis redelivers unacknowledged messages after this; it must outlast the longest job.
    # (kombu's SQLAlchemy transport passes its options to create_engine and takes none of these.)
    app.conf.broker_transport_options = {"visibility_timeout": settings.task_time_limit + 3600}


@signals.worker_process_init.connect
def _fresh_connections(**_):
    """A forked child must not share the parent's database connections."""
    from service.store.session import get_engine

    get_engine.cache_clear()


@signals.worker_ready.connect
def _start_reaper(**_):
    from worker.reaper import start_reaper_thread

    start_reaper_thread(settings)
