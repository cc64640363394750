"""REFUEL through the HTTP API on the real worker: dialogue seeds in, an adapter and a per-turn
win-rate table out (tiny model, one iteration)."""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import pytest

from tests.integration.helpers import jsonl, upload
from tests.integration.test_e2e_training import all_events, wait_for

pytestmark = pytest.mark.integration


def seeds(n: int) -> bytes:
    names = ["Maya", "Omar", "Lena", "Kofi"]
    return jsonl([{"user_turns": [f"Hi, I'm {names[i % 4]}. Please call me by my name.", "Keep it short from now on.",
                                  "How can I sleep better?"],
                   "info": {"task": "remember_rules", "name": names[i % 4], "max_words": 20,
                            "rules": {"name": 1, "short": 2}}} for i in range(n)])


def test_refuel_job_through_the_api(api_server, worker, tmp_path):
    with httpx.Client(base_url=api_server, timeout=30) as client:
        train = upload(client, seeds(4), filename="dialogues.jsonl").json()
        assert train["format"] == "dialogues"
        valid = upload(client, seeds(2), filename="dialogues-eval.jsonl").json()["id"]
        body = {"model": "tiny-random-llama", "training_file": train["id"], "validation_file": valid, "seed": 1,
                "method": {"type": "refuel", "refuel": {"hyperparameters": {
                    "iterations": 1, "rollouts_per_iteration": 4, "num_turns": 2, "max_new_tokens": 6,
                    "n_epochs": 1, "batch_size": 2, "eta": 1.0,
                    "user": {"type": "dataset"}, "reward": {"type": "function", "name": "remember_rules"}}}}}
        response = client.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 200, response.text
        job = wait_for(client, response.json()["id"], {"succeeded", "failed", "cancelled"}, worker, timeout=400)
        assert job["status"] == "succeeded", (job, all_events(client, job["id"])[:5])

        messages = [e["message"] for e in all_events(client, job["id"])]
        assert any(m.startswith("Iteration 1/1: collected") for m in messages), messages
        metrics = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
        train_rows = [m for m in metrics if m["kind"] == "train"]
        assert train_rows and "regression_loss" in train_rows[0]["values"]

        evaluation = job["result"]["evaluation"]
        assert [row["turn"] for row in evaluation["turns"]] == [1, 2]
        for row in evaluation["turns"]:
            assert 0.0 <= row["win_rate"] <= 1.0

        # Samples are whole dialogues of the validation seeds: the base's at step 0, then the iteration's end.
        samples = client.get(f"/v1/fine_tuning/jobs/{job['id']}/samples").json()["data"]
        assert [(s["step"], s["index"]) for s in samples] == [(0, 0), (0, 1), (job["steps_completed"], 0),
                                                              (job["steps_completed"], 1)]
        for s in samples:
            assert [m["role"] for m in s["dialogue"]] == ["assistant", "user", "assistant"]
            assert s["dialogue"][1]["content"] == "Keep it short from now on."

        archive = client.get(f"/v1/fine_tuning/jobs/{job['id']}/adapter")
        assert archive.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(names)
        config = json.loads(zipfile.ZipFile(io.BytesIO(archive.content)).read("adapter_config.json"))
        assert config["peft_type"] == "LORA"


def test_a_file_the_method_cannot_use_is_refused(api_server):
    """A reward_model job on a chat file (it needs preference pairs) is refused with a 400."""
    with httpx.Client(base_url=api_server, timeout=30) as client:
        chat = upload(client, jsonl([{"messages": [{"role": "user", "content": "hi"},
                                                   {"role": "assistant", "content": "hello"}]}])).json()
        response = client.post("/v1/fine_tuning/jobs", json={
            "model": "tiny-random-llama", "training_file": chat["id"],
            "method": {"type": "reward_model"}})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "training_file"
