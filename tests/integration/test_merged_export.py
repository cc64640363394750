"""`export_merged`: a job that also produces the base weights with its LoRA update folded in,
served as a plain transformers directory (real API, Celery worker, Postgres, Redis, tiny model)."""

from __future__ import annotations

import io
import zipfile

import httpx
import pytest

from tests.integration.helpers import assert_envelope, upload
from tests.integration.test_e2e_training import DATASET, wait_for

pytestmark = pytest.mark.integration


def test_merged_weights_equal_base_plus_adapter(api_server, worker, model_cache_dir, tmp_path):
    with httpx.Client(base_url=api_server, timeout=60) as client:
        file_id = upload(client, DATASET).json()["id"]
        body = {"model": "tiny-random-llama", "training_file": file_id, "seed": 3, "export_merged": True,
                "method": {"type": "dpo", "dpo": {"hyperparameters": {
                    "n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10}}}}
        job = client.post("/v1/fine_tuning/jobs", json=body).json()
        assert job["export_merged"] is True
        assert_envelope(client.get(f"/v1/fine_tuning/jobs/{job['id']}/merged_model"), 409,
                        code="merged_model_not_ready")

        job = wait_for(client, job["id"], {"succeeded", "failed", "cancelled"}, worker)
        assert job["status"] == "succeeded", job
        events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
        assert any("Merging the adapter" in e["message"] for e in events)

        merged = client.get(f"/v1/fine_tuning/jobs/{job['id']}/merged_model")
        assert merged.status_code == 200 and merged.headers["content-type"] == "application/zip"
        zipfile.ZipFile(io.BytesIO(merged.content)).extractall(tmp_path / "merged")
        adapter = client.get(f"/v1/fine_tuning/jobs/{job['id']}/adapter")
        zipfile.ZipFile(io.BytesIO(adapter.content)).extractall(tmp_path / "adapter")

    names = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)  # nothing pickled

    # The merged model alone computes what base + adapter computes, and differs from the base.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import load_causal_lm, materialise

    base_dir = materialise(ModelRegistry.load().get("tiny-random-llama"), model_cache_dir)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        base = load_causal_lm(base_dir).eval()(ids).logits
        tuned = PeftModel.from_pretrained(load_causal_lm(base_dir), tmp_path / "adapter").eval()(ids).logits
        merged_model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
        assert not any("lora" in name for name, _ in merged_model.named_parameters())
        merged_logits = merged_model(ids).logits
    assert (tuned - base).abs().max().item() > 1e-4
    assert torch.allclose(merged_logits, tuned, atol=1e-4), (merged_logits - tuned).abs().max()


def test_merged_model_of_a_job_that_did_not_ask(client, file_id):
    body = {"model": "tiny-random-llama", "training_file": file_id, "method": {"type": "dpo"}}
    job = client.post("/v1/fine_tuning/jobs", json=body).json()
    assert job["export_merged"] is False
    assert_envelope(client.get(f"/v1/fine_tuning/jobs/{job['id']}/merged_model"), 404,
                    param="fine_tuning_job_id", code="merged_model_not_requested")
    bad = client.post("/v1/fine_tuning/jobs", json={**body, "export_merged": "sometimes"})
    assert_envelope(bad, 400, param="export_merged")
