"""One precision for every forward of a job (rlhf_engine/precision.py).

Driven through rlhf_engine.run on CPU with `precision="bf16"` (bf16 autocast, the GPU rule): the
training forward, the DPO reference, log pi_t at collection and evaluation all run in it, so
DPO's step-0 margin and REBEL's step-0 log-ratio are 0 (each one of them run outside autocast
puts them at ~1e-3 nats on the tiny model), and the reference cache tells precisions apart.
"""

from __future__ import annotations

import json

import pytest
import torch

from rlhf_engine import reference
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.models import loading
from rlhf_engine.precision import Precision, decide
from rlhf_engine.run import run
from rlhf_engine.spec import LoraSpec, TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder:
    def __init__(self):
        self.events, self.steps = [], []

    def event(self, message, *, level="info", data=None):
        self.events.append((level, message))

    def metrics(self, step, values, *, total_steps=None):
        self.steps.append(values)

    def checkpoint(self, step, path, metrics):
        pass

    def should_stop(self):
        return False


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_decide():
    assert decide("auto", "cpu") == Precision("cpu", torch.float32, None)
    assert decide("fp32", "cpu") == Precision("cpu", torch.float32, None)
    assert decide("bf16", "cpu") == Precision("cpu", torch.float32, torch.bfloat16)  # CPU keeps fp32 weights
    tags = {decide(s, "cpu").tag for s in ("auto", "bf16")} | {Precision("cuda", torch.bfloat16, torch.bfloat16).tag}
    assert len(tags) == 3
    with pytest.raises(ValueError):
        decide("fp16", "cpu")


def test_dpo_step0_margin_and_evaluation_under_bf16_autocast(tmp_path, model_cache):
    rows = [{"prompt": f"Count to {i}, please.", "chosen": " ".join(map(str, range(i + 2))),
             "rejected": f"I would rather not count to {i}."} for i in range(4)]
    data = write(tmp_path / "prefs.jsonl", rows)
    # One step at an lr too small to show in bf16: evaluation then sees the step-0 policy again.
    cfg = TrainConfig(model="tiny-random-llama", training_file=data, validation_file=data, precision="bf16",
                      output_dir=str(tmp_path / "dpo"), method={"type": "dpo", "dpo": {"hyperparameters": {
                          "n_epochs": 1, "batch_size": 4, "beta": 1.0, "learning_rate": 1e-9}}})
    rec = Recorder()
    run(cfg, rec, cache_dir=model_cache)
    train, evaluation = rec.steps
    assert train["logps/chosen"] != 0.0
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):  # log pi - log pi_ref, beta = 1
        assert abs(train[key]) < 1e-6, key
        assert abs(evaluation[f"eval/{key}"]) < 1e-6, key


def test_rebel_step0_log_ratio_under_bf16_autocast(tmp_path, model_cache):
    train = write(tmp_path / "prompts.jsonl", [{"prompt": f"question number {i}?"} for i in range(3)])
    cfg = TrainConfig(model="tiny-random-llama", training_file=train, precision="bf16", output_dir=str(tmp_path / "o"),
                      method={"type": "rebel", "rebel": {"hyperparameters": {
                          "iterations": 1, "rollouts_per_iteration": 3, "max_new_tokens": 6, "batch_size": 3,
                          "n_epochs": 1, "kl_coef": 0.1}}})
    rec = Recorder()
    run(cfg, rec, cache_dir=model_cache)
    assert rec.steps[0]["logratio_abs"] < 1e-5  # log pi_t from collection == the training forward


def test_online_methods_train_without_lora_dropout(tmp_path, model_cache):
    """log pi_t is an eval-mode forward; with dropout on in training the step-0 log-ratio would be
    dropout noise. Seen from iteration 2 on: in iteration 1 LoRA B is 0, so dropout changes nothing."""
    train = write(tmp_path / "prompts.jsonl", [{"prompt": f"question number {i}?"} for i in range(3)])
    cfg = TrainConfig(model="tiny-random-llama", training_file=train, output_dir=str(tmp_path / "o"),
                      method={"type": "rebel", "rebel": {"hyperparameters": {
                          "iterations": 2, "rollouts_per_iteration": 3, "max_new_tokens": 6, "batch_size": 3,
                          "n_epochs": 1, "learning_rate": 1e-2, "lora": {"dropout": 0.3}}}})
    rec = Recorder()
    run(cfg, rec, cache_dir=model_cache)
    first_of_2 = next(v for v in rec.steps if v.get("iteration") == 2.0 and "loss" in v)
    assert first_of_2["logratio_abs"] < 1e-5
    assert any(level == "warn" and "dropout" in message for level, message in rec.events)


def test_reference_cache_is_keyed_by_precision(tmp_path, tiny_model_dir):
    model = loading.add_lora(loading.load_causal_lm(tiny_model_dir), LoraSpec(), seed=0)
    pairs = [TokenizedPair([5, 6, 7], [8, 9], [10]), TokenizedPair([11, 12], [13], [14, 15, 16])]
    fp32, bf16 = decide("auto", "cpu"), decide("bf16", "cpu")
    gpu = Precision("cuda", torch.bfloat16, torch.bfloat16)
    keys = {p.tag: reference.cache_key(tiny_model_dir, pairs, p) for p in (fp32, bf16, gpu)}
    assert len(set(keys.values())) == 3
    assert reference.cache_key(tiny_model_dir, pairs, decide("fp32", "cpu")) == keys[fp32.tag]

    cache = tmp_path / "cache"
    first, hit = reference.load_or_compute(model, tiny_model_dir, pairs, 0, cache, fp32)
    assert not hit
    again, hit = reference.load_or_compute(model, tiny_model_dir, pairs, 0, cache, fp32)
    assert hit and torch.equal(first, again)
    other, hit = reference.load_or_compute(model, tiny_model_dir, pairs, 0, cache, bf16)
    assert not hit and not torch.equal(first, other)  # a bf16 job never reads the fp32 reference
