"""A queued job whose broker message never arrived is sent again by the reaper and runs once."""

from __future__ import annotations

import httpx
import pytest

from tests import infra
from tests.integration.failure_helpers import make_stack  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def test_job_created_while_broker_was_down_runs_after_all(make_stack, tmp_path):
    stack = make_stack(resend_queued_seconds=3)
    # A second API replica whose broker is unreachable: the job is committed `queued`, never sent.
    cut_off = infra.ApiServer(tmp_path, **{**stack.settings, "broker_url": f"redis://127.0.0.1:{infra.free_port()}/0"})
    cut_off.start()
    try:
        with httpx.Client(base_url=cut_off.url, timeout=30) as client:
            body = {"model": "tiny-random-llama", "training_file": stack.file_id(), "seed": 1,
                    "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}}
            response = client.post("/v1/fine_tuning/jobs", json=body)
            assert response.status_code == 200 and response.json()["status"] == "queued"
            job_id = response.json()["id"]
    finally:
        cut_off.stop()
    assert stack.row(job_id)["sent_at"] is None

    stack.start_worker(resend_queued_seconds=3)
    job = stack.wait_final(job_id, timeout=300)
    assert job["status"] == "succeeded", stack.logs()
    assert stack.messages(job_id).count("Fine-tuning job started") == 1
    assert stack.row(job_id)["sent_at"] is not None
