"""The broker and the database restarted under a running job, each on a dedicated server so the
rest of the suite is unaffected. The job finishes, exactly once, with every step recorded once:
in the same attempt after a short outage, resumed from its last checkpoint after a long one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.failure_helpers import assert_ran_cleanly, make_stack, own_postgres, own_redis  # noqa: F401
from tests.integration.helpers import assert_envelope

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
    # Writes during the outage were retried (service/shared/dbretry.py), so the run went on: same
    # attempt, every step's metrics exactly once, every checkpoint row backed by its files.
    assert_ran_cleanly(stack, job_id, 32)
    assert stack.row(job_id)["attempts"] == 1
    root = Path(stack.settings["artifacts_dir"])
    for checkpoint in stack.checkpoints(job_id):
        assert list(root.glob(f"jobs/{job_id}/checkpoints/step-{checkpoint['step_number']:06d}/state.pt"))
    assert worker.alive()
    following = stack.create_job(n_epochs=1)
    assert stack.wait_final(following)["status"] == "succeeded", stack.logs()


def test_postgres_down_longer_than_the_retry_budget(make_stack, own_postgres):
    """Past RLHF_DB_RETRY_SECONDS the run stops without a verdict (it could not write one). Once the
    database is back, the reaper finds the lapsed lease and requeues the job, which resumes from
    its last checkpoint: every step recorded once, one final adapter, no row without its files."""
    # A lease of 8 s: with 4 s a loaded machine let a healthy heartbeat lapse once more (attempts 3).
    lease = 8
    stack = make_stack(postgres=own_postgres, lease_seconds=lease, db_retry_seconds=1)
    worker = stack.start_worker()
    job_id = stack.create_job(n_epochs=8)  # 32 steps, a checkpoint every 4
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 6, what="step 6")
    assert stack.checkpoints(job_id), "a checkpoint to resume from"

    own_postgres.halt()
    halted = time.monotonic()
    # Meanwhile the API process stays up and says why it is not ready.
    # On a new connection: in the full suite (never alone) the pooled one was reset by the server
    # right after the halt (ECONNRESET); a dead API would still fail here, to connect.
    assert_envelope(httpx.get(f"{stack.api.url}/readyz", timeout=30), 503, param="database",
                    code="dependency_unavailable")
    assert httpx.get(f"{stack.api.url}/healthz", timeout=30).status_code == 200
    time.sleep(max(0.0, lease + 4 - (time.monotonic() - halted)))  # past the 1 s retry budget and the lease
    own_postgres.start()
    assert stack.client.get("/readyz").status_code == 200

    stack.wait_final(job_id)
    assert_ran_cleanly(stack, job_id, 32)
    row = stack.row(job_id)
    assert row["attempts"] == 2 and row["error"] is None, row
    # The worker logs JSON lines (like the API), each line of a run carrying its job id.
    records = [json.loads(line) for line in worker.log(tail=10**6).splitlines() if line.startswith("{")]
    stopped = [r for r in records if "database unavailable; leaving it to be resumed" in r["msg"]]
    assert len(stopped) == 1 and stopped[0]["job_id"] == job_id and stopped[0]["level"] == "error", stopped
    messages = stack.messages(job_id)
    assert sum(m.startswith("Worker lost (1 of 3)") for m in messages) == 1, messages
    resumed = [m for m in messages if m.startswith("Resuming from checkpoint at step")]
    assert len(resumed) == 1 and resumed[0].endswith("(attempt 2)"), messages
    root = Path(stack.settings["artifacts_dir"])
    for checkpoint in stack.checkpoints(job_id):
        assert (root / f"jobs/{job_id}/checkpoints/step-{checkpoint['step_number']:06d}/state.pt").exists()
    assert worker.alive()
