"""The broker and the database restarted under a running job, each on a dedicated server so the
rest of the suite is unaffected. The job finishes, exactly once, with every step recorded once."""

from __future__ import annotations

import pytest

from tests.integration.failure_helpers import (assert_ran_cleanly, make_stack, own_postgres,  # noqa: F401
                                               own_redis)

pytestmark = pytest.mark.integration


def test_redis_restart_mid_job(make_stack, own_redis):
    stack = make_stack(redis=own_redis, lease_seconds=10)
    worker = stack.start_worker()
    job_id = stack.create_job(n_epochs=8)
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 4, what="step 4")
    own_redis.restart(down_seconds=2)  # no persistence: the job's unacknowledged message is gone

    stack.wait_final(job_id)
    assert_ran_cleanly(stack, job_id, 32)
    assert stack.row(job_id)["attempts"] == 1  # never started twice
    assert stack.messages(job_id).count("Fine-tuning job started") == 1
    # The worker reconnected to the new broker and takes new jobs.
    assert worker.alive()
    following = stack.create_job(n_epochs=1)
    assert stack.wait_final(following)["status"] == "succeeded", stack.logs()


def test_postgres_restart_mid_job(make_stack, own_postgres):
    stack = make_stack(postgres=own_postgres, lease_seconds=15)
    worker = stack.start_worker()
    job_id = stack.create_job(n_epochs=8)
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 4, what="step 4")
    own_postgres.restart(down_seconds=3)  # fast shutdown: every open connection is cut

    stack.wait_final(job_id)
    # Writes during the outage were retried (worker/dbretry.py), so the run went on: same
    # attempt, every step's metrics exactly once, every checkpoint row backed by its files.
    assert_ran_cleanly(stack, job_id, 32)
    assert stack.row(job_id)["attempts"] == 1
    from pathlib import Path

    root = Path(stack.settings["artifacts_dir"])
    for checkpoint in stack.checkpoints(job_id):
        assert list(root.glob(f"jobs/{job_id}/checkpoints/step-{checkpoint['step_number']:06d}/state.pt"))
    assert worker.alive()
    following = stack.create_job(n_epochs=1)
    assert stack.wait_final(following)["status"] == "succeeded", stack.logs()
