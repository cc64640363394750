"""The worker process: `celery -A worker.celery_app worker`.

Settings that keep one job per process and a lost job recoverable:
- prefetch 1, concurrency 1, acks late: a worker holds at most one job, acknowledged only when done;
- a fresh child process per job (max_tasks_per_child=1), so GPU memory is returned to the driver;
- the broker's visibility timeout exceeds the task time limit, so a long job is never redelivered
  while it still runs; a worker that dies is detected by its expired lease instead (worker/reaper.py);
- a warm shutdown (SIGTERM) asks the running job to checkpoint and hand itself back to the queue.
"""

from __future__ import annotations

import glob
import os
import signal

from celery import Celery, signals

from service.shared.settings import get_settings

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
    # A broker restart must not end the worker: reconnect for as long as it takes.
    broker_connection_retry=True,
    broker_connection_max_retries=None,
    # A running job keeps running while the broker is away; its message may be redelivered
    # later, and the job's lease (not the broker) keeps it from running twice.
    worker_cancel_long_running_tasks_on_connection_loss=False,
)
if settings.broker_url.startswith(("redis://", "rediss://")):
    # Redis redelivers unacknowledged messages after this; it must outlast the longest job.
    # (kombu's SQLAlchemy transport passes its options to create_engine and takes none of these.)
    app.conf.broker_transport_options = {"visibility_timeout": settings.task_time_limit + 3600}


@signals.setup_logging.connect
def _structured_logs(loglevel=None, **_):
    """Celery's, the worker's and the engine's log lines in RLHF_LOG_FORMAT (JSON by default, with
    the running job's id), like the API's (service/shared/logging.py). Connecting this signal
    replaces Celery's own logging set-up; `--loglevel` still sets the level."""
    from service.shared.logging import configure_logging

    configure_logging(loglevel or settings.log_level, settings.log_format, logger_name="")


@signals.worker_process_init.connect
def _fresh_connections(**_):
    """A forked child must not share the parent's database connections."""
    from service.shared.store.session import get_engine

    get_engine.cache_clear()


@signals.worker_init.connect
def _install_shutdown_relay(**_):
    """SIGUSR2 sets the shutdown flag the running job's reporter polls. Installed in the main process
    before the pool forks, so every child inherits it (billiard leaves SIGUSR2 alone)."""
    from worker.reporter import SHUTDOWN

    signal.signal(signal.SIGUSR2, lambda *_: SHUTDOWN.set())


@signals.worker_shutting_down.connect
def _stop_running_jobs(**_):
    """Warm shutdown (SIGTERM) waits for the running task; ask it to stop at its next step, save a
    checkpoint and hand the job back (worker/tasks.py), instead of running to the end."""
    from worker.reporter import SHUTDOWN

    SHUTDOWN.set()  # the solo pool runs the task in this process
    for pid in _child_pids():
        try:
            os.kill(pid, signal.SIGUSR2)
        except OSError:
            pass


def _child_pids() -> list[int]:
    me, found = os.getpid(), []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.append(int(stat.split("/")[2]))
    return found


@signals.worker_ready.connect
def _start_reaper(**_):
    from worker.reaper import start_reaper_thread

    start_reaper_thread(settings)
