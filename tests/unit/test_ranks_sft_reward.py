"""SFT and reward-model jobs on two ranks (torch.distributed.run, gloo on the CPU) train as on one.

SFT's loss is a token mean per micro-batch: a rank's share of a micro-batch weighs its tokens'
part (SFT.size), so the step's loss and token accuracy are N=1's with completions of unequal
lengths; with LoRA under DDP and with every weight under FSDP2. The reward model's Bradley-Terry
loss is a mean over pairs, like DPO's, and its score head trains in full inside the adapter.
"""

import json

import pytest
from safetensors.torch import load_file

from rlhf_engine.layout import ADAPTER, MERGED
from rlhf_engine.run import run
from rlhf_engine.spec import TrainConfig
from tests.unit.test_distributed import Losses, failure, torchrun


def write_dataset(path, n=10):
    # Completions of 1 to 4 numbers: the two ranks' shares of a micro-batch hold unequal token counts.
    rows = [{"prompt": f"Say the number {i}.", "chosen": " ".join([str(i)] * (1 + i % 4)),
             "rejected": f"The number is {i + 1}, I think."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def job(tmp_path, data, out, method, **extra) -> dict:
    # 10 examples, 4 a step in micro-batches of 2 (one a rank; the epoch's last step has micro-batches
    # of one, so rank 1 also runs the weight-0 path), and an evaluation every 2 steps.
    hp = {"n_epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 5e-3,
          "lr_scheduler_type": "cosine", "warmup_ratio": 0.2, "eval_interval": 2, "lora": {"r": 4, "alpha": 8},
          **extra}
    if method == "supervised":
        hp["eval_samples"] = 1
    return {"model": "tiny-random-llama", "training_file": str(data), "validation_file": str(data), "seed": 3,
            "output_dir": str(tmp_path / out), "method": {"type": method, method: {"hyperparameters": hp}}}


def weights(out_dir, full: bool):
    return load_file(out_dir / MERGED / "model.safetensors") if full else \
        load_file(out_dir / ADAPTER / "adapter_model.safetensors")


@pytest.mark.parametrize("method,full", [("supervised", False), ("supervised", True), ("reward_model", False)])
def test_two_ranks_match_one(tmp_path, model_cache, one_torch_thread, method, full):
    data = write_dataset(tmp_path / "train.jsonl")
    extra = {"finetuning_type": "full", "learning_rate": 1e-3} if full else {}
    one = Losses()
    result = run(TrainConfig.model_validate(job(tmp_path, data, "one", method, **extra)), one, cache_dir=model_cache)
    assert result.steps == 6

    config = tmp_path / "two.json"
    config.write_text(json.dumps(job(tmp_path, data, "two", method, **extra)))
    proc = torchrun(config, model_cache)
    assert proc.returncode == 0, failure(proc)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    two = {r["step"]: r for r in records if r["type"] == "metrics" and "loss" in r}
    assert sum(r["type"] == "result" for r in records) == 1  # rank 0 alone reports
    assert sorted(two) == sorted(one.steps) == [1, 2, 3, 4, 5, 6]
    evals = {r["step"]: r for r in records if r["type"] == "metrics" and "eval/loss" in r}
    assert sorted(evals) == [2, 4, 6]

    keys = ("loss", "token_accuracy" if method == "supervised" else "accuracy", "grad_norm", "learning_rate")
    diffs = {k: max(abs(one.steps[s][k] - two[s][k]) for s in two) for k in keys}
    a, b = weights(tmp_path / "one", full), weights(tmp_path / "two", full)
    assert a.keys() == b.keys()
    weight_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{method}{' full (FSDP2)' if full else ' LoRA (DDP)'} N=2 vs N=1: max |diff| {diffs}; "
          f"weights {weight_diff:.2e}")
    assert all(d < 1e-5 for d in diffs.values()), diffs
    assert weight_diff < 1e-5
    assert len({one.steps[s]["loss"] for s in one.steps}) > 1  # it trained
