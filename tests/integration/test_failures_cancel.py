"""Cancel and pause with real processes: a queued, a running and a paused job all end `cancelled`
and the worker is free for the next job; a paused job checkpoints, releases its lease without a
verdict, and resumes from that checkpoint."""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.failure_helpers import make_stack  # noqa: F401

pytestmark = pytest.mark.integration


def post(stack, job_id: str, action: str, timeout: float = 60) -> dict:
    """POST .../{action}; retried while the API answers 409 job_still_pausing."""
    deadline = time.monotonic() + timeout
    while True:
        response = stack.client.post(f"/v1/fine_tuning/jobs/{job_id}/{action}")
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 409 and response.json()["error"]["code"] == "job_still_pausing", response.text
        assert time.monotonic() < deadline, response.text
        time.sleep(0.5)


def test_cancel_queued_and_running_jobs_frees_the_worker(make_stack):
    stack = make_stack(lease_seconds=10)
    stack.start_worker()
    running = stack.create_job(n_epochs=100)  # 400 steps: it runs until cancelled
    queued = stack.create_job(n_epochs=1)  # behind it: one worker, one job at a time
    stack.wait_row(running, lambda r: r["steps_completed"] >= 2, what="step 2")
    assert stack.row(queued)["status"] == "queued"

    assert post(stack, queued, "cancel")["status"] == "cancelled"
    assert post(stack, running, "cancel")["status"] == "cancelled"
    stack.wait_row(running, lambda r: r["lease_owner"] is None, timeout=60, what="lease released")
    assert any(re.match(r"Job cancelled at step \d+; worker released", m) for m in stack.messages(running))

    # The cancelled queued job's message reaches the worker and is dropped; the next job runs.
    following = stack.create_job(n_epochs=1)
    assert stack.wait_final(following)["status"] == "succeeded"
    for job_id in (running, queued):
        job, row = stack.job(job_id), stack.row(job_id)
        assert job["status"] == "cancelled" and row["lease_owner"] is None, (job, row)
        assert not any("successfully completed" in m or m.startswith("Job failed") for m in stack.messages(job_id))
    assert stack.row(queued)["attempts"] == 0  # never started
    assert stack.job(running)["steps_completed"] < 400


def test_pause_checkpoints_resume_continues_and_a_paused_job_can_be_cancelled(make_stack):
    stack = make_stack(lease_seconds=10)
    stack.start_worker()
    job_id = stack.create_job(n_epochs=100, checkpoint_interval=1000)  # no periodic checkpoints
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 3, what="step 3")

    assert post(stack, job_id, "pause")["status"] == "paused"
    row = stack.wait_row(job_id, lambda r: r["lease_owner"] is None, timeout=60, what="lease released")
    assert row["status"] == "paused" and row["error"] is None, row  # no verdict written
    paused_at = row["steps_completed"]
    assert any(m == f"Job paused at step {paused_at}; checkpoint kept, worker released" for m in stack.messages(job_id))
    assert [c["step_number"] for c in stack.checkpoints(job_id)] == [paused_at]  # saved on the way out

    assert post(stack, job_id, "resume")["status"] == "queued"
    stack.wait_row(job_id, lambda r: r["status"] == "running" and r["steps_completed"] >= paused_at + 2,
                   what="resumed past the pause")
    assert f"Resuming from checkpoint at step {paused_at} (attempt 2)" in stack.messages(job_id)

    # Pause again, then cancel the paused job: `cancelled`, and the worker takes the next job.
    post(stack, job_id, "pause")
    stack.wait_row(job_id, lambda r: r["lease_owner"] is None, timeout=60, what="second pause")
    assert post(stack, job_id, "cancel")["status"] == "cancelled"
    steps = stack.metric_steps(job_id)
    assert steps == list(range(1, len(steps) + 1))  # every step once across pause and resume
    following = stack.create_job(n_epochs=1)
    assert stack.wait_final(following)["status"] == "succeeded"
    assert stack.job(job_id)["status"] == "cancelled"
