"""Workers that die: SIGKILL of the child running a job, of a whole worker, a job that kills its
worker every time, a duplicate message while the job runs, and a graceful (SIGTERM) shutdown.
Real uvicorn, Celery workers, Postgres, Redis and the tiny model; leases of a few seconds."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.integration.failure_helpers import assert_ran_cleanly, make_stack  # noqa: F401

pytestmark = pytest.mark.integration


def resumed_from(stack, job_id) -> list[int]:
    return [e["data"]["step"] for e in stack.events(job_id) if e["kind"] == "resumed"]


def test_sigkill_of_the_job_process_resumes_from_the_last_checkpoint(make_stack):
    stack = make_stack(lease_seconds=6)
    stack.start_worker()
    job_id = stack.create_job(n_epochs=8, checkpoint_interval=4)  # 32 steps, checkpoints every 4
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 10, what="step 10")
    pid = stack.running_pid(job_id)
    os.kill(pid, signal.SIGKILL)  # the Celery child running the job; its main process lives on
    last = max(c["step_number"] for c in stack.checkpoints(job_id))  # nothing can add one now

    # Celery requeues the message (reject on worker lost), but the dead child's lease still holds:
    # the job is only handed out again by the reaper once the lease expires.
    job = stack.wait_final(job_id)
    assert_ran_cleanly(stack, job_id, 32)
    row = stack.row(job_id)
    assert row["attempts"] == 2 and row["lease_owner"] is None, row
    resumed = resumed_from(stack, job_id)
    assert resumed == [last] and last >= 8, (last, stack.messages(job_id))  # the latest, not any
    messages = stack.messages(job_id)
    assert messages.count("Fine-tuning job started") == 1
    assert stack.kinds(job_id).count("worker_lost") == 1
    assert job["trained_tokens"] > 0


def test_sigkill_of_a_whole_worker_is_resumed_by_another_worker(make_stack):
    stack = make_stack(lease_seconds=6)
    first = stack.start_worker()
    job_id = stack.create_job(n_epochs=8, checkpoint_interval=4)
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 10, what="step 10")
    first.kill_all()  # main process and child: nobody will ever acknowledge the message
    assert stack.row(job_id)["status"] == "running"

    stack.start_worker()  # its reaper finds the expired lease and re-sends the job
    stack.wait_final(job_id)
    assert_ran_cleanly(stack, job_id, 32)
    assert len(resumed_from(stack, job_id)) == 1
    assert stack.row(job_id)["attempts"] == 2


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(make_stack):
    stack = make_stack(lease_seconds=5, max_attempts=2)
    stack.start_worker()
    job_id = stack.create_job(n_epochs=50)
    for attempt in (1, 2):
        row = stack.wait_row(job_id, lambda r: r["status"] == "running" and r["attempts"] == attempt  # noqa: B023 (waited on here)
                             and r["lease_owner"], what=f"attempt {attempt} running")
        os.kill(stack.running_pid(job_id), signal.SIGKILL)

    job = stack.wait_final(job_id, timeout=90)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "worker_lost" and "2 time(s)" in job["error"]["message"], job["error"]
    # Bounded: no further attempt, however long we wait (two more lease periods).
    time.sleep(12)
    row = stack.row(job_id)
    assert row["status"] == "failed" and row["attempts"] == 2 and row["lease_owner"] is None, row
    messages = stack.messages(job_id)
    assert stack.kinds(job_id).count("worker_lost") == 2, messages
    # The worker survived its children's deaths and takes the next job.
    next_id = stack.create_job(n_epochs=1)
    assert stack.wait_final(next_id)["status"] == "succeeded"


def test_a_redelivered_message_never_starts_a_second_run(make_stack):
    stack = make_stack(lease_seconds=10)  # generous: a loaded machine must not look like a dead worker
    stack.start_worker()
    stack.start_worker()
    job_id = stack.create_job(n_epochs=8)
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 2, what="step 2")
    for _ in range(3):  # the idle worker takes each copy and must leave the job alone
        stack.send_again(job_id)
    stack.wait_final(job_id)
    assert_ran_cleanly(stack, job_id, 32)
    assert stack.row(job_id)["attempts"] == 1
    messages = stack.messages(job_id)
    assert messages.count("Fine-tuning job started") == 1 and not resumed_from(stack, job_id)
    assert stack.logs().count("not starting it twice") >= 1, stack.logs()


def test_sigterm_stops_at_a_checkpoint_and_another_worker_resumes(make_stack):
    stack = make_stack(lease_seconds=10)
    first = stack.start_worker()
    job_id = stack.create_job(n_epochs=10, checkpoint_interval=100)  # 40 steps; no periodic checkpoint
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 4, what="step 4")
    t0 = time.monotonic()
    first.terminate()  # warm shutdown
    first.proc.wait(60)
    shutdown_s = time.monotonic() - t0
    row = stack.row(job_id)
    assert row["status"] == "queued" and row["lease_owner"] is None, (row, first.log())
    assert shutdown_s < 30, shutdown_s  # it did not run the remaining steps first
    stopped_at = row["steps_completed"]
    assert 4 <= stopped_at < 40
    assert any(m.startswith(f"Worker shutting down; job requeued at step {stopped_at}") for m in stack.messages(job_id))

    stack.start_worker()  # the hand-back sent a new message; this worker takes it
    stack.wait_final(job_id)
    assert_ran_cleanly(stack, job_id, 40)
    assert resumed_from(stack, job_id) == [stopped_at]
    assert "worker_lost" not in stack.kinds(job_id)
