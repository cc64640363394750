"""Celery settings that the failure behaviour rests on, read from the real app configuration in a
fresh interpreter (the settings are read at import, from RLHF_* variables)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import infra
from tests.integration.failure_helpers import make_stack  # noqa: F401

PROBE = """
import json
from worker.celery_app import app
c = app.conf
print(json.dumps({k: c[k] for k in ("task_acks_late", "task_reject_on_worker_lost", "worker_prefetch_multiplier",
    "worker_concurrency", "worker_max_tasks_per_child", "task_time_limit", "broker_connection_max_retries",
    "worker_cancel_long_running_tasks_on_connection_loss")} | {"transport": c.broker_transport_options or {}}))
"""


def conf(**settings) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], env=infra.service_env(**settings), cwd=infra.REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_celery_settings_keep_one_job_per_fresh_process_and_never_redeliver_a_running_job():
    c = conf(broker_url="redis://127.0.0.1:1/0", task_time_limit=86400)
    assert c["task_acks_late"] is True  # a message is acknowledged only once its job is done
    assert c["task_reject_on_worker_lost"] is True  # a killed child's message goes back to the queue
    assert c["worker_prefetch_multiplier"] == 1 and c["worker_concurrency"] == 1
    assert c["worker_max_tasks_per_child"] == 1  # a fresh process per job: GPU memory is released
    assert c["task_time_limit"] == 86400
    # Redis redelivers an unacknowledged message after the visibility timeout: it must outlast
    # the longest job, or a long job would be started again while it runs.
    assert c["transport"]["visibility_timeout"] > c["task_time_limit"]
    assert c["broker_connection_max_retries"] is None  # a broker restart never ends the worker
    assert c["worker_cancel_long_running_tasks_on_connection_loss"] is False


def test_the_visibility_timeout_follows_the_time_limit():
    c = conf(broker_url="rediss://example:6380/0", task_time_limit=30 * 24 * 3600)
    assert c["transport"]["visibility_timeout"] > 30 * 24 * 3600
    defaults = conf(broker_url="redis://127.0.0.1:1/0")  # what an install that sets nothing gets
    assert defaults["task_time_limit"] >= 24 * 3600  # long jobs are not cut off
    assert defaults["transport"]["visibility_timeout"] > defaults["task_time_limit"]


@pytest.mark.integration
def test_each_job_runs_in_a_fresh_process(make_stack):
    """worker_max_tasks_per_child=1 with a real worker: two jobs in a row run in two different
    child processes (so a GPU job's memory goes back to the driver), and the worker lives on."""
    stack = make_stack()
    worker = stack.start_worker()
    pids = []
    for _ in range(2):
        job_id = stack.create_job(n_epochs=3)
        stack.wait_row(job_id, lambda r: r["lease_owner"] is not None, what="a lease")
        pids.append(stack.running_pid(job_id))
        assert stack.wait_final(job_id)["status"] == "succeeded", stack.logs()
    assert pids[0] != pids[1] and worker.pid not in pids, pids
    assert worker.alive()


def test_lease_timings_scale_with_the_lease():
    from service.shared.settings import Settings
    from worker.reaper import reaper_period

    for lease in (4, 6, 120):
        period = reaper_period(Settings(lease_seconds=lease))
        assert period <= lease / 2  # a dead job is found within 1.5 leases
