"""One job on two ranks (torch.distributed.run, gloo on the CPU) trains as it does on one.

The same DPO job, the same global batch: N=2 must give N=1's per-step losses and final adapter
(each rank runs its share of every micro-batch; DDP averages the gradients), its reference
log-probs (each rank computes its share, rank 0 writes the cache), only rank 0 reports, and a run
resumed on two ranks from its checkpoint ends with the same adapter.
"""

import json
import os
import re
import subprocess
import sys
import time

from safetensors.torch import load_file

from rlhf_engine.callbacks import NullReporter
from rlhf_engine.distributed import World, rank_slice
from rlhf_engine.run import run
from rlhf_engine.spec import TrainConfig


class Losses(NullReporter):
    def __init__(self):
        self.steps = {}

    def metrics(self, step, values, *, total_steps=None):
        if "loss" in values:
            self.steps[step] = values


def write_dataset(path, n=10):
    rows = [{"prompt": f"Say the number {i}.", "chosen": f"{i}", "rejected": f"The number is {i + 1}, I think."}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def job(tmp_path, data, out) -> dict:
    # 10 pairs, 4 a step in micro-batches of 2: each rank runs one pair of each micro-batch; the
    # epoch's last step has 2 pairs, micro-batches of 1, so rank 1 also runs the weight-0 path.
    hp = {"n_epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 5e-3,
          "lr_scheduler_type": "cosine", "warmup_ratio": 0.2, "lora": {"r": 4, "alpha": 8}}
    return {"model": "tiny-random-llama", "training_file": str(data), "seed": 3, "output_dir": str(tmp_path / out),
            "method": {"type": "dpo", "dpo": {"hyperparameters": hp}}}


def torchrun(config, cache, *extra):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "rlhf_engine", "train", str(config), "--cache-dir", str(cache), *extra],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


_WHY = re.compile(r"Error|error:|Exception|terminate called|what\(\)|Abort|Signal|exitcode|Traceback")


def failure(proc) -> str:
    """What a failed torchrun printed that says why: each rank's error lines (a traceback's last
    line, a C++ abort's `what()`), wherever they are in stderr, then the launcher's summary."""
    lines = [line for line in proc.stderr.splitlines() if _WHY.search(line) and "Warning" not in line]
    return "\n".join(lines[:80]) + "\n--- the end of stderr ---\n" + proc.stderr[-1500:]


def reference_file(cache):
    (path,) = (cache / "reference").glob("*.safetensors")
    return load_file(path)["logps"]


def test_rank_slice_covers_each_example_once():
    for n in range(7):
        items = list(range(n))
        parts = [rank_slice(items, World(r, 3, r)) for r in range(3)]
        assert sum(parts, []) == items


def test_two_ranks_match_one(tmp_path, one_torch_thread):
    data = write_dataset(tmp_path / "train.jsonl")
    one_cache, two_cache = tmp_path / "cache-1", tmp_path / "cache-2"

    started = time.perf_counter()
    one = Losses()
    result = run(TrainConfig.model_validate(job(tmp_path, data, "one")), one, cache_dir=one_cache)
    one_s = time.perf_counter() - started
    assert result.steps == 6 and sorted(one.steps) == [1, 2, 3, 4, 5, 6]

    config = tmp_path / "two.json"
    config.write_text(json.dumps(job(tmp_path, data, "two")))
    started = time.perf_counter()
    proc = torchrun(config, two_cache)
    two_s = time.perf_counter() - started
    assert proc.returncode == 0, failure(proc)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    two = {r["step"]: r for r in records if r["type"] == "metrics" and "loss" in r}
    results = [r for r in records if r["type"] == "result"]
    assert len(results) == 1 and results[0]["steps"] == 6  # rank 0 alone reports
    assert sorted(two) == sorted(one.steps)
    assert sum(r["type"] == "checkpoint" for r in records) == 2  # one per epoch, written once

    # The reference: each rank computed its share; the gathered rows are N=1's, bit for bit.
    assert (reference_file(one_cache) - reference_file(two_cache)).abs().max().item() == 0.0

    keys = ("loss", "rewards/margins", "rewards/accuracies", "grad_norm", "learning_rate")
    diffs = {k: max(abs(one.steps[s][k] - two[s][k]) for s in two) for k in keys}
    a, b = load_file(result.adapter_dir / "adapter_model.safetensors"), \
        load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    weight_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    moved = max(t.abs().max().item() for k, t in a.items() if "lora_B" in k)
    print(f"N=1 {one_s:.1f}s, N=2 {two_s:.1f}s (with launch); max |diff| {diffs}; adapter {weight_diff:.2e} "
          f"(largest lora_B {moved:.2e})")
    assert all(d < 1e-5 for d in diffs.values()), diffs
    assert weight_diff < 1e-5 and moved > 1e-4
    assert sum(one.steps[s]["loss"] for s in one.steps) != 0

    # Resumed on two ranks from the first epoch's checkpoint: the same adapter again.
    config.write_text(json.dumps(job(tmp_path, data, "resumed")))
    proc = torchrun(config, two_cache, "--resume-from", str(tmp_path / "two" / "checkpoints" / "step-000003"))
    assert proc.returncode == 0, failure(proc)
    c = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    resumed_diff = max((a[k] - c[k]).abs().max().item() for k in a)
    print(f"resumed on 2 ranks vs N=1: {resumed_diff:.2e}")
    assert resumed_diff < 1e-5
