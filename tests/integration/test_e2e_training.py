"""The whole path with every real part: uvicorn API, Celery worker process, Postgres, Redis,
the tiny model, and the adapter loaded back with peft."""

from __future__ import annotations

import io
import time
import zipfile

import httpx
import pytest

from tests.integration.helpers import jsonl, preference_line, upload

pytestmark = pytest.mark.integration

DATASET = jsonl([preference_line(f"What is {i} plus {i}?", f"{2 * i}.", f"Maybe {2 * i + 1}, I am not sure.")
                 for i in range(8)])


def create_job(client: httpx.Client, file_id: str, **hyperparameters) -> dict:
    body = {"model": "tiny-random-llama", "training_file": file_id, "seed": 7,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {
                "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10, **hyperparameters}}}}
    response = client.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(client: httpx.Client, job_id: str, statuses: set[str], worker, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert worker.poll() is None, worker.log_path.read_text()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']}; worker log:\n{worker.log_path.read_text()[-3000:]}")


def all_events(client: httpx.Client, job_id: str) -> list[dict]:
    return client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]


def test_dpo_job_end_to_end(api_server, worker, model_cache_dir, tmp_path):
    with httpx.Client(base_url=api_server, timeout=30) as client:
        file_id = upload(client, DATASET).json()["id"]
        job = create_job(client, file_id)
        assert job["status"] == "queued"

        job = wait_for(client, job["id"], {"succeeded", "failed", "cancelled"}, worker)
        assert job["status"] == "succeeded", job
        assert job["fine_tuned_model"] and job["finished_at"] >= job["created_at"]
        assert job["trained_tokens"] > 0 and job["steps_completed"] == job["total_steps"] == 4

        events = all_events(client, job["id"])
        metric_events = [e for e in events if e["type"] == "metrics"]
        assert len(metric_events) == 4
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                    "grad_norm", "learning_rate", "tokens_per_second"):
            assert key in metric_events[0]["data"], key
        assert any("successfully completed" in e["message"] for e in events)

        checkpoints = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
        assert sorted(c["step_number"] for c in checkpoints) == [2, 4]
        assert all("loss" in c["metrics"] for c in checkpoints)

        # Samples (eval_samples 4 by default): the base's greedy replies at step 0, then the final
        # evaluation's; without a validation file, to the first training prompts.
        samples = client.get(f"/v1/fine_tuning/jobs/{job['id']}/samples").json()
        assert samples["object"] == "list"
        assert [(s["step"], s["index"]) for s in samples["data"]] == [(step, i) for step in (0, 4) for i in range(4)]
        assert samples["data"][1]["prompt"] == [{"role": "user", "content": "What is 1 plus 1?"}]
        assert all(isinstance(s["completion"], str) and s["dialogue"] is None for s in samples["data"])

        response = client.get(f"/v1/fine_tuning/jobs/{job['id']}/adapter")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        adapter_dir = tmp_path / "adapter"
        zipfile.ZipFile(io.BytesIO(response.content)).extractall(adapter_dir)
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter_dir.iterdir()}
        assert not list(adapter_dir.glob("*.bin")) and not list(adapter_dir.glob("*.pt"))

    # The adapter loads with plain peft onto the base model and changes its outputs.
    import torch
    from peft import PeftModel

    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import load_causal_lm, materialise

    base_dir = materialise(ModelRegistry.load().get("tiny-random-llama"), model_cache_dir)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    base = load_causal_lm(base_dir).eval()
    with torch.no_grad():
        before = base(ids).logits
    tuned = PeftModel.from_pretrained(load_causal_lm(base_dir), adapter_dir).eval()
    with torch.no_grad():
        after = tuned(ids).logits
    assert (after - before).abs().max().item() > 1e-4


def test_cancel_running_job_frees_worker(api_server, worker):
    with httpx.Client(base_url=api_server, timeout=30) as client:
        file_id = upload(client, DATASET).json()["id"]
        long_job = create_job(client, file_id, n_epochs=100, batch_size=1)
        deadline = time.monotonic() + 120
        while client.get(f"/v1/fine_tuning/jobs/{long_job['id']}").json()["steps_completed"] < 2:
            assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
            time.sleep(0.3)

        response = client.post(f"/v1/fine_tuning/jobs/{long_job['id']}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"

        # The worker notices at its next step, records where it stopped, and takes the next job.
        deadline = time.monotonic() + 60
        while not any("cancelled at step" in e["message"] for e in all_events(client, long_job["id"])):
            assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
            time.sleep(0.3)
        job = client.get(f"/v1/fine_tuning/jobs/{long_job['id']}").json()
        assert job["status"] == "cancelled" and job["steps_completed"] < 800

        next_job = create_job(client, file_id, n_epochs=1)
        assert wait_for(client, next_job["id"], {"succeeded", "failed"}, worker)["status"] == "succeeded"
