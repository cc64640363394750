"""finetuning_type "full": every weight trains, no LoRA; the output is a transformers directory.

One process: the reference is the starting model (DPO's first loss is log 2), the run resumes
exactly from a checkpoint holding every weight. Two gloo ranks under torchrun (FSDP2 shards the
weights, gradients and AdamW state): the same global batch gives N=1's losses and final weights,
and a run resumed from the sharded checkpoint, on two ranks or on one, ends with them too, as
does N=1's checkpoint resumed on two ranks.
"""

import json
import math

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from rlhf_engine.callbacks import NullReporter
from rlhf_engine.layout import MERGED, SHARDED, STATE
from rlhf_engine.run import run
from rlhf_engine.spec import Method, TrainConfig
from tests.unit.test_distributed import Losses, failure, torchrun, write_dataset
from tests.unit.test_resume import StopAfter


def job(tmp_path, data, out, method_type="dpo", **extra) -> dict:
    # 10 pairs, 4 a step in micro-batches of 2 (on two ranks one pair each; the epoch's last step
    # has micro-batches of 1, so rank 1 also runs the weight-0 path); an evaluation and samples.
    hp = {"n_epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 1e-3,
          "lr_scheduler_type": "cosine", "warmup_ratio": 0.2, "finetuning_type": "full", "eval_interval": 2,
          "eval_samples": 2, **extra}
    return {"model": "tiny-random-llama", "training_file": str(data), "validation_file": str(data), "seed": 3,
            "output_dir": str(tmp_path / out), "method": {"type": method_type, method_type: {"hyperparameters": hp}}}


def weights(out_dir):
    return load_file(out_dir / MERGED / "model.safetensors")


def max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_full_is_offered_by_dpo_and_supervised_only():
    for method_type in ("dpo", "supervised"):
        body = {"type": method_type, method_type: {"hyperparameters": {"finetuning_type": "full"}}}
        assert Method.model_validate(body).hyperparameters.full
    assert not Method(type="dpo").hyperparameters.full  # LoRA stays the default
    for method_type in ("rebel", "refuel", "dpo_last_turn", "dpo_multi_turn", "reward_model"):
        with pytest.raises(ValidationError, match="offered by the dpo and supervised methods only") as err:
            Method.model_validate({"type": method_type, method_type: {"hyperparameters": {"finetuning_type": "full"}}})
        assert err.value.errors()[0]["loc"][-1] == "finetuning_type"


def test_the_api_answers_400_naming_the_field():
    from tests.unit.test_errors import BASE, make_client, post

    body = {**BASE, "method": {"type": "rebel", "rebel": {"hyperparameters": {"finetuning_type": "full"}}}}
    error = post(make_client(), body)
    assert error["param"] == "method.rebel.hyperparameters.finetuning_type", error
    assert "dpo and supervised methods only" in error["message"]


def test_full_weights_stay_fp32_under_bf16(monkeypatch):
    from rlhf_engine import precision

    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert precision.decide("auto", "cuda") == precision.Precision("cuda", torch.bfloat16, torch.bfloat16)
    assert precision.decide("auto", "cuda", full=True) == precision.Precision("cuda", torch.float32, torch.bfloat16)


def test_fsdp_gathers_bf16_copies_only_on_a_gpu():
    from rlhf_engine.precision import Precision
    from rlhf_engine.sharding import policy

    gpu = policy(Precision("cuda", torch.float32, torch.bfloat16))
    assert (gpu.param_dtype, gpu.reduce_dtype) == (torch.bfloat16, torch.float32)
    for cpu in (Precision("cpu", torch.float32, None), Precision("cpu", torch.float32, torch.bfloat16)):
        assert policy(cpu).param_dtype is None  # CPU autocast, if any, does the casting, as with one process


@pytest.mark.parametrize("method_type", ["dpo", "supervised"])
def test_one_process_trains_every_weight_and_resumes_exactly(tmp_path, model_cache, tiny_model_dir, method_type,
                                                             one_torch_thread):
    from transformers import AutoModelForCausalLM

    data = write_dataset(tmp_path / "train.jsonl")
    losses = Losses()
    whole = run(TrainConfig.model_validate(job(tmp_path, data, "whole", method_type)), losses, cache_dir=model_cache)
    assert whole.steps == 6 and whole.adapter_dir is None and whole.merged_dir == tmp_path / "whole" / MERGED
    assert not (tmp_path / "whole" / "adapter").exists()
    if method_type == "dpo":  # the reference is the model the job starts from
        assert losses.steps[1]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    checkpoint = tmp_path / "whole" / "checkpoints" / "step-000003"
    assert "model" in torch.load(checkpoint / STATE, weights_only=True)  # every weight, plainly

    # Every weight moved (embeddings, norms, head included), and the directory loads as it is.
    base, tuned = load_file(tiny_model_dir / "model.safetensors"), weights(tmp_path / "whole")
    assert base.keys() == tuned.keys()
    assert all((tuned[k] - base[k]).abs().max() > 0 for k in base)
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "whole" / MERGED).eval()(ids).logits
        start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(ids).logits
    assert (loaded - start).abs().max() > 1e-4

    stopper = StopAfter(5)  # mid-epoch; the stop writes the checkpoint
    stopped = run(TrainConfig.model_validate(job(tmp_path, data, "parts", method_type)), stopper,
                  cache_dir=model_cache)
    assert stopped.stopped and stopper.checkpoints[-1][0] == 5
    resumed = run(TrainConfig.model_validate(job(tmp_path, data, "parts", method_type)), NullReporter(),
                  cache_dir=model_cache, resume_from=stopper.checkpoints[-1][1])
    assert resumed.steps == 6 and resumed.trained_tokens == whole.trained_tokens
    diff = max_diff(tuned, weights(tmp_path / "parts"))
    print(f"{method_type} full, resumed at step 5 vs uninterrupted: {diff:.2e}")
    assert diff < 1e-6


def test_two_ranks_shard_and_match_one(tmp_path, model_cache, one_torch_thread):
    data = write_dataset(tmp_path / "train.jsonl")
    one = Losses()
    result = run(TrainConfig.model_validate(job(tmp_path, data, "one")), one, cache_dir=model_cache)
    assert result.steps == 6

    config = tmp_path / "two.json"
    config.write_text(json.dumps(job(tmp_path, data, "two")))
    proc = torchrun(config, model_cache)
    assert proc.returncode == 0, failure(proc)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    two = {r["step"]: r for r in records if r["type"] == "metrics" and "loss" in r}
    assert sorted(two) == sorted(one.steps) == [1, 2, 3, 4, 5, 6]
    assert sum(r["type"] == "result" for r in records) == 1  # rank 0 alone reports
    assert sum(r["type"] == "checkpoint" for r in records) == 2
    assert sum(r["type"] == "samples" for r in records) == 4  # step 0, 2, 4 and the end, once each
    evals = [r for r in records if r["type"] == "metrics" and "eval/loss" in r]
    assert len(evals) == 3  # every rank evaluated (the forwards are collective); rank 0 reported
    checkpoint = tmp_path / "two" / "checkpoints" / "step-000003"
    assert sorted(p.name for p in (checkpoint / SHARDED).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    keys = ("loss", "rewards/margins", "rewards/accuracies", "grad_norm", "learning_rate")
    diffs = {k: max(abs(one.steps[s][k] - two[s][k]) for s in two) for k in keys}
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    weight_diff = max_diff(a, b)
    base = load_file(model_cache / "tiny-random-llama" / "model.safetensors")
    moved = max_diff(a, base)
    print(f"full DPO, N=2 (FSDP2) vs N=1: max |diff| {diffs}; weights {weight_diff:.2e} (largest change {moved:.2e})")
    assert all(d < 1e-5 for d in diffs.values()), diffs
    assert weight_diff < 1e-5 and moved > 1e-3

    # From the sharded checkpoint of the first epoch: on two ranks (with gradient checkpointing,
    # which recomputes each sharded layer in backward), and on one (DCP reshards on load).
    config.write_text(json.dumps(job(tmp_path, data, "resumed-2", gradient_checkpointing=True)))
    proc = torchrun(config, model_cache, "--resume-from", str(checkpoint))
    assert proc.returncode == 0, failure(proc)
    resumed = run(TrainConfig.model_validate(job(tmp_path, data, "resumed-1")), NullReporter(), cache_dir=model_cache,
                  resume_from=checkpoint)
    assert resumed.steps == 6
    on_two, on_one = max_diff(a, weights(tmp_path / "resumed-2")), max_diff(a, weights(tmp_path / "resumed-1"))
    print(f"resumed from the sharded checkpoint vs N=1 uninterrupted: on 2 ranks {on_two:.2e}, on 1 {on_one:.2e}")
    assert on_two < 1e-5 and on_one < 1e-5

    # And N=1's plain checkpoint on two ranks: each keeps its shard of the whole state dict.
    config.write_text(json.dumps(job(tmp_path, data, "from-one")))
    proc = torchrun(config, model_cache, "--resume-from", str(tmp_path / "one" / "checkpoints" / "step-000003"))
    assert proc.returncode == 0, failure(proc)
    from_one = max_diff(a, weights(tmp_path / "from-one"))
    print(f"N=1's checkpoint resumed on 2 ranks vs N=1 uninterrupted: {from_one:.2e}")
    assert from_one < 1e-5
