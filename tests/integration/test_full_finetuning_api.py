"""A full fine-tune through the API (finetuning_type "full"): the job succeeds, its whole model is
served by .../merged_model as a plain transformers directory, and .../adapter answers 404 in the
error envelope; on a worker with two ranks (FSDP2 over gloo) too, resuming from its sharded
checkpoint after one rank is killed. Real uvicorn, Celery, Postgres, Redis and the tiny model."""

from __future__ import annotations

import io
import os
import signal
import zipfile

import httpx
import pytest

from tests.integration.failure_helpers import make_stack  # noqa: F401
from tests.integration.helpers import assert_envelope, upload
from tests.integration.test_distributed_worker import gone, wait_ranks
from tests.integration.test_e2e_training import DATASET, wait_for

pytestmark = pytest.mark.integration


def check_outputs(client: httpx.Client, job_id: str, model_cache_dir, out_dir) -> None:
    """merged_model downloads and loads, differs from the base; the adapter routes answer 404."""
    merged = client.get(f"/v1/fine_tuning/jobs/{job_id}/merged_model")
    assert merged.status_code == 200 and merged.headers["content-type"] == "application/zip", merged.text
    zipfile.ZipFile(io.BytesIO(merged.content)).extractall(out_dir)
    error = assert_envelope(client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter"), 404, param="fine_tuning_job_id",
                            code="adapter_not_available")
    assert "finetuning_type 'full'" in error["message"] and "merged_model" in error["message"]
    checkpoint = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"][0]
    assert_envelope(client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint['id']}/adapter"), 404,
                    code="adapter_not_available")

    names = {p.name for p in out_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)  # nothing pickled

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import load_causal_lm, materialise

    base_dir = materialise(ModelRegistry.load().get("tiny-random-llama"), model_cache_dir)
    AutoTokenizer.from_pretrained(out_dir)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        model = AutoModelForCausalLM.from_pretrained(out_dir).eval()
        assert not any("lora" in name for name, _ in model.named_parameters())
        tuned, base = model(ids).logits, load_causal_lm(base_dir).eval()(ids).logits
    assert (tuned - base).abs().max().item() > 1e-4


def full_body(file_id: str, **hyperparameters) -> dict:
    return {"model": "tiny-random-llama", "training_file": file_id, "seed": 3,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {
                "n_epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "finetuning_type": "full", **hyperparameters}}}}


def test_a_full_fine_tune_is_served_as_a_model(api_server, worker, model_cache_dir, tmp_path):
    with httpx.Client(base_url=api_server, timeout=60) as client:
        file_id = upload(client, DATASET).json()["id"]
        job = client.post("/v1/fine_tuning/jobs", json=full_body(file_id)).json()
        assert job["method"]["dpo"]["hyperparameters"]["finetuning_type"] == "full", job
        assert_envelope(client.get(f"/v1/fine_tuning/jobs/{job['id']}/merged_model"), 409,
                        code="merged_model_not_ready")
        job = wait_for(client, job["id"], {"succeeded", "failed", "cancelled"}, worker)
        assert job["status"] == "succeeded", job
        check_outputs(client, job["id"], model_cache_dir, tmp_path / "merged")

        bad = client.post("/v1/fine_tuning/jobs", json={"model": "tiny-random-llama", "training_file": file_id,
                                                         "method": {"type": "rebel", "rebel": {"hyperparameters": {
                                                             "finetuning_type": "full"}}}})
        assert_envelope(bad, 400, param="method.rebel.hyperparameters.finetuning_type")


def test_a_full_fine_tune_on_two_ranks_resumes_from_its_shards(make_stack, model_cache_dir, tmp_path):
    stack = make_stack(lease_seconds=6, train_processes=2)
    stack.start_worker()
    job_id = stack.create_job(n_epochs=4, checkpoint_interval=4, finetuning_type="full")  # 16 steps
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 6, what="step 6")
    ranks = wait_ranks(stack, job_id)
    os.kill(ranks[1], signal.SIGKILL)
    assert gone(ranks.values()), "a rank outlived the attempt"

    job = stack.wait_final(job_id)
    assert job["status"] == "succeeded", (job, stack.messages(job_id))
    assert job["steps_completed"] == job["total_steps"] == 16 and stack.row(job_id)["attempts"] == 2, job
    assert stack.metric_steps(job_id) == list(range(1, 17))  # every step once, replayed ones overwritten
    resumed = [e["data"]["step"] for e in stack.events(job_id) if e["kind"] == "resumed"]
    assert len(resumed) == 1 and resumed[0] >= 4, stack.messages(job_id)
    check_outputs(stack.client, job_id, model_cache_dir, tmp_path / "merged")
