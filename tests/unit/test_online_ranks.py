"""REFUEL and REBEL jobs on two ranks (torch.distributed.run, gloo on the CPU) collect and train as on one.

Each rank rolls out and scores its share of every iteration's dialogues (their streams and plans
are the whole list's), every rank trains on the gathered collection: the pairs (prompts,
continuations, returns, with REBEL's KL term from log pi_t and log pi_ref) are N=1's exactly in
the first iteration, and so are the per-step losses and the final adapter within float noise when
N=1's micro-batches are the ranks' shares of N=2's (every forward then sees the same batch); later
iterations collect with a policy trained on two ranks, whose log-probs differ from N=1's in the
last bits. With N=1's own micro-batches (twice the size) a forward's float noise differs (~1e-6
in a sum of log-probs); Adam, which moves each weight by about the learning rate whatever its
gradient's size, turns that into ~1e-4 in the few weights whose gradient is ~0. A two-rank run
resumed from its first iteration's checkpoint ends with the uninterrupted run's adapter. The
multi-turn DPO baselines collect their base-model dialogues the same way, once, then train DPO.
"""

import json

import pytest
from safetensors.torch import load_file

from rlhf_engine.run import run
from rlhf_engine.spec import TrainConfig
from tests.unit.test_distributed import Losses, failure, torchrun
from tests.unit.test_online_run import dialogues, write


def job(tmp_path, data, out, method, accumulation) -> dict:
    # 6 seeds an iteration (3 a rank), 4 pairs a step; with accumulation 2 on two ranks each runs one
    # pair of each micro-batch, and in an epoch's last step (2 pairs or fewer) rank 1 may run the
    # weight-0 path.
    hp = {"iterations": 2, "rollouts_per_iteration": 6, "max_new_tokens": 6, "batch_size": 4,
          "gradient_accumulation_steps": accumulation, "learning_rate": 5e-3, "eval_samples": 1,
          "reward": {"type": "function", "name": "length_penalty"}, "lora": {"r": 4, "alpha": 8},
          **({"num_turns": 3, "user": {"type": "dataset"}} if method == "refuel" else {"kl_coef": 0.05})}
    train, val = data
    return {"model": "tiny-random-llama", "training_file": train, "validation_file": val, "seed": 5,
            "output_dir": str(tmp_path / out), "method": {"type": method, method: {"hyperparameters": hp}}}


def datasets(tmp_path, method) -> tuple[str, str]:
    if method == "refuel":
        return write(tmp_path / "seeds.jsonl", dialogues(8)), write(tmp_path / "val.jsonl", dialogues(2))
    prompts = [{"prompt": f"question {i}?"} for i in range(10)]
    return write(tmp_path / "prompts.jsonl", prompts[:8]), write(tmp_path / "val.jsonl", prompts[8:])


def collection(out_dir, t):
    return json.loads((out_dir / "online" / f"iteration-{t:03d}.json").read_text())


def compare_collections(one, two, t) -> tuple[float, float]:
    """Asserts iteration t's pairs hold the same tokens; the largest differences of log pi_t and
    of the returns."""
    a, b = collection(one, t), collection(two, t)
    assert len(a["pairs"]) == len(b["pairs"]) > 2
    assert [(p["prompt"], p["a"], p["b"]) for p in a["pairs"]] == [(p["prompt"], p["a"], p["b"]) for p in b["pairs"]]
    diff = lambda *keys: max(abs(p[k] - q[k]) for p, q in zip(a["pairs"], b["pairs"]) for k in keys)  # noqa: E731
    return diff("logp_a", "logp_b"), diff("reward_a", "reward_b")


def stats(out_dir, t) -> dict:
    return {k: v for k, v in collection(out_dir, t)["stats"].items() if not k.endswith("_seconds")}


def adapter(out_dir):
    return load_file(out_dir / "adapter" / "adapter_model.safetensors")


def differences(one: Losses, two: dict, out_one, out_two) -> tuple[dict, float]:
    """(largest |N=1 - N=2| of each step statistic, relative to its largest |N=1|; of the adapter)."""
    keys = ("loss", "logratio_abs", "grad_norm", "learning_rate")
    diffs = {k: max(abs(one.steps[s][k] - two[s][k]) for s in two) / max(abs(one.steps[s][k]) for s in two)
             for k in keys}
    a, b = adapter(out_one), adapter(out_two)
    assert a.keys() == b.keys()
    return diffs, max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("method", ["refuel", "rebel"])
def test_two_ranks_collect_and_train_as_one(tmp_path, model_cache, one_torch_thread, method):
    data = datasets(tmp_path, method)
    config = tmp_path / "two.json"
    config.write_text(json.dumps(job(tmp_path, data, "two", method, accumulation=2)))
    proc = torchrun(config, model_cache)
    assert proc.returncode == 0, failure(proc)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    two = {r["step"]: r for r in records if r["type"] == "metrics" and "loss" in r}
    (outcome,) = [r for r in records if r["type"] == "result"]  # rank 0 alone reports
    assert two[1]["logratio_abs"] == 0.0  # each rank's log pi_t is its own training forward's, bit for bit

    # N=1 in micro-batches of one pair, each rank's share of N=2's micro-batches of two.
    one = Losses()
    result = run(TrainConfig.model_validate(job(tmp_path, data, "one", method, accumulation=4)), one,
                 cache_dir=model_cache)
    assert outcome["steps"] == result.steps and sorted(two) == sorted(one.steps) == list(range(1, result.steps + 1))
    assert [t["win_rate"] for t in outcome["summary"]["evaluation"]["turns"]] == \
        [t["win_rate"] for t in result.summary["evaluation"]["turns"]]
    assert compare_collections(tmp_path / "one", tmp_path / "two", 1) == (0.0, 0.0)  # pi_1: the same forwards
    assert stats(tmp_path / "one", 1) == stats(tmp_path / "two", 1)
    logp_diff, return_diff = compare_collections(tmp_path / "one", tmp_path / "two", 2)  # pi_2: trained on 2 ranks
    diffs, weight_diff = differences(one, two, tmp_path / "one", tmp_path / "two")
    moved = max(v.abs().max().item() for k, v in adapter(tmp_path / "one").items() if "lora_B" in k)
    print(f"{method} N=2 vs N=1 (same forward batches): pairs identical in iteration 1, in iteration 2 the same "
          f"tokens, log pi_t within {logp_diff:.2e}, returns {return_diff:.2e}; relative max |diff| {diffs}; "
          f"adapter {weight_diff:.2e} (largest lora_B {moved:.2e})")
    assert logp_diff < 1e-5 and return_diff < 1e-6 and all(d < 1e-4 for d in diffs.values()), diffs
    assert weight_diff < 1e-4 and moved > 1e-3
    if method == "rebel":
        return

    # Resumed on two ranks from the checkpoint that closed iteration 1: iteration 2 is collected
    # and trained again, and the adapter is the uninterrupted two-rank run's.
    checkpoints = {r["step"]: r["path"] for r in records if r["type"] == "checkpoint"}
    config.write_text(json.dumps(job(tmp_path, data, "resumed", method, accumulation=2)))
    proc = torchrun(config, model_cache, "--resume-from", checkpoints[min(checkpoints)])
    assert proc.returncode == 0, failure(proc)
    a, b = adapter(tmp_path / "two"), adapter(tmp_path / "resumed")
    resumed_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{method} on two ranks resumed after iteration 1 vs uninterrupted: {resumed_diff:.2e}")
    assert resumed_diff == 0.0

    # N=1 with N=2's own configuration: micro-batches of two pairs, so other forwards' float noise.
    same = Losses()
    run(TrainConfig.model_validate(job(tmp_path, data, "same", method, accumulation=2)), same, cache_dir=model_cache)
    logp_diff, return_diff = compare_collections(tmp_path / "same", tmp_path / "two", 1)  # pi_1 is the same model
    diffs, weight_diff = differences(same, two, tmp_path / "same", tmp_path / "two")
    print(f"{method} N=2 vs N=1 (N=1's micro-batches twice the size): iteration 1's tokens identical, log pi_t "
          f"within {logp_diff:.2e}, returns {return_diff:.2e}; relative max |diff| {diffs}; adapter {weight_diff:.2e}")
    assert logp_diff < 1e-5 and return_diff == 0.0 and diffs["loss"] < 1e-3 and weight_diff < 1e-3


@pytest.mark.parametrize("method", ["dpo_last_turn", "dpo_multi_turn"])
def test_dialogue_dpo_on_two_ranks_collects_and_trains_as_on_one(tmp_path, model_cache, one_torch_thread, method):
    # The base's dialogues, collected once (each rank its 4 of the 8 seeds), then DPO; N=1 again in
    # micro-batches of one pair, each rank's share of N=2's.
    data = datasets(tmp_path, "refuel")

    def body(out, accumulation):
        hp = {"rollouts": 8, "num_turns": 3, "user": {"type": "dataset"}, "max_new_tokens": 6, "batch_size": 4,
              "gradient_accumulation_steps": accumulation, "learning_rate": 5e-3, "eval_samples": 1,
              "reward": {"type": "function", "name": "length_penalty"}, "lora": {"r": 4, "alpha": 8}}
        return {"model": "tiny-random-llama", "training_file": data[0], "validation_file": data[1], "seed": 5,
                "output_dir": str(tmp_path / out), "method": {"type": method, method: {"hyperparameters": hp}}}

    one = Losses()
    result = run(TrainConfig.model_validate(body("one", 4)), one, cache_dir=model_cache)
    config = tmp_path / "two.json"
    config.write_text(json.dumps(body("two", 2)))
    proc = torchrun(config, model_cache)
    assert proc.returncode == 0, failure(proc)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    two = {r["step"]: r for r in records if r["type"] == "metrics" and "loss" in r}
    (outcome,) = [r for r in records if r["type"] == "result"]
    assert outcome["steps"] == result.steps and sorted(two) == sorted(one.steps)

    saved = [json.loads((tmp_path / out / "dialogue_dpo" / "pairs.json").read_text()) for out in ("one", "two")]
    assert saved[0]["pairs"] == saved[1]["pairs"] and len(saved[0]["pairs"]) > 2  # the same pairs, token for token
    assert {k: v for k, v in saved[0]["stats"].items() if not k.endswith("_seconds")} == \
        {k: v for k, v in saved[1]["stats"].items() if not k.endswith("_seconds")}
    assert [t["win_rate"] for t in outcome["summary"]["evaluation"]["turns"]] == \
        [t["win_rate"] for t in result.summary["evaluation"]["turns"]]
    diffs = {k: max(abs(one.steps[s][k] - two[s][k]) for s in two) for k in ("loss", "rewards/margins", "grad_norm")}
    a, b = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    weight_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{method} N=2 vs N=1: pairs identical; max |diff| {diffs}; adapter {weight_diff:.2e}")
    assert all(d < 1e-5 for d in diffs.values()) and weight_diff < 1e-5, diffs
