"""REBEL and REFUEL end to end through rlhf_engine.run.run on the tiny model, and exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rlhf_engine.run import run
from rlhf_engine.spec import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder:
    def __init__(self):
        self.events, self.steps, self.checkpoints = [], [], []

    def event(self, message, *, level="info", data=None):
        self.events.append(message)

    def metrics(self, step, values, *, total_steps=None):
        self.steps.append((step, values))

    def checkpoint(self, step, path, metrics):
        self.checkpoints.append((step, path))

    def should_stop(self):
        return False


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def dialogues(n):
    return [{"user_turns": [f"hello number {i}", "tell me more", "thanks, and why?"], "info": {"i": i}}
            for i in range(n)]


def config(tmp_path, method, train, hp, validation=None, out="out"):
    body = {"iterations": 2, "rollouts_per_iteration": 3, "max_new_tokens": 6, "batch_size": 2,
            "reward": {"type": "function", "name": "length_penalty"}, **hp}
    return TrainConfig(model="tiny-random-llama", training_file=train, validation_file=validation,
                       output_dir=str(tmp_path / out), method={"type": method, method: {"hyperparameters": body}})


def adapter_weights(path):
    return load_file(path / "adapter_model.safetensors")


def test_refuel_with_dialogues_file_then_exact_resume(tmp_path, model_cache):
    train = write(tmp_path / "seeds.jsonl", dialogues(5))
    val = write(tmp_path / "val.jsonl", dialogues(2))
    cfg = config(tmp_path, "refuel", train, {"num_turns": 3, "user": {"type": "dataset"}}, validation=val)
    rec = Recorder()
    result = run(cfg, rec, cache_dir=model_cache)

    assert (result.adapter_dir / "adapter_model.safetensors").exists() and not result.stopped
    assert [s for s, v in rec.steps if "loss" in v] == [1, 2, 3, 4]  # steps keep counting across iterations
    assert any(e.startswith("Iteration 2/2: collected") for e in rec.events)
    first = rec.steps[0][1]
    assert first["logratio_abs"] < 1e-4  # pi_t's log-probs from collection match the training forward
    for key in ("rollout/reward_mean", "rollout/reward_gap", "regression_loss", "sign_agreement", "sign_ties"):
        assert key in first
    assert "rollout/kl_to_base" not in first  # kl_coef 0: the pi_ref pass is skipped
    after = [v for _, v in rec.steps if "eval/sign_agreement" in v]  # measured after each iteration's training
    assert len(after) == 2 and all(0 <= v["eval/sign_agreement"] <= 1 for v in after)
    evaluation = result.summary["evaluation"]
    assert [t["turn"] for t in evaluation["turns"]] == [1, 2, 3]
    assert all(t["n"] == 2 and 0 <= t["ci95"][0] <= t["win_rate"] <= t["ci95"][1] <= 1 for t in evaluation["turns"])
    assert len(result.summary["iterations"]) == 2

    # Resume from the checkpoint that closed iteration 1: iteration 2 is collected and trained again,
    # and the final adapter is the same tensor for tensor.
    done = adapter_weights(result.adapter_dir)
    ckpt = dict(rec.checkpoints)[2]
    assert json.loads((ckpt / "online.json").read_text())["iteration"] == 1
    again = run(cfg, Recorder(), cache_dir=model_cache, resume_from=ckpt)
    assert again.steps == 4 and [it["iteration"] for it in again.summary["iterations"]] == [1, 2]
    resumed = adapter_weights(again.adapter_dir)
    assert done.keys() == resumed.keys()
    assert all(torch.equal(done[k], resumed[k]) for k in done)


def test_refuel_with_prompts_file_and_simulated_user(tmp_path, model_cache):
    train = write(tmp_path / "prompts.jsonl", [{"prompt": f"question {i}?"} for i in range(3)])
    cfg = config(tmp_path, "refuel", train, {"iterations": 1, "num_turns": 2,
                                             "user": {"type": "model", "system_prompt": "You are a user."}})
    result = run(cfg, Recorder(), cache_dir=model_cache)
    assert (result.adapter_dir / "adapter_config.json").exists()
    assert [t["turn"] for t in result.summary["evaluation"]["turns"]] == [1, 2]
    roles = [m["role"] for m in result.summary["evaluation"]["samples"]["policy"]]
    assert roles == ["user", "assistant", "user", "assistant"]  # the simulator played turn 2


def test_rebel_with_prompts_file(tmp_path, model_cache):
    train = write(tmp_path / "prompts.jsonl",
                  [{"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q {i}"}],
                    "info": {"k": i}} for i in range(4)])
    rec = Recorder()
    result = run(config(tmp_path, "rebel", train, {"eta": 2.0, "kl_coef": 0.05}), rec, cache_dir=model_cache)
    assert (result.adapter_dir / "adapter_model.safetensors").exists()
    assert "rollout/kl_to_base" in rec.steps[0][1]
    assert [t["turn"] for t in result.summary["evaluation"]["turns"]] == [1]
    assert result.steps == 4 and result.trained_tokens > 0
