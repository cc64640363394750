"""Section 6 of the GPU check: the DPO step of the 1B-class random Llama (bench/gpu_model.py) on N
ranks, LoRA under DDP and every weight under FSDP2, each against one process.

    torchrun --standalone --nproc-per-node N -m bench.gpu_ranks RUNNER MODEL_DIR OUT.json [--dry]

RUNNER is how the step runs (rlhf_engine/distributed.py, rlhf_engine/sharding.py):

    local-lora  one process, LoRA r=16 on bf16 weights (train.step_runner's Local)
    ddp         N ranks, the same LoRA, DistributedDataParallel
    local-full  one process, every weight trains: fp32 weights and AdamW state, bf16 autocast
    fsdp        N ranks, every weight sharded by FSDP2: bf16 gathered copies, fp32 shards and reduction

ddp and fsdp join a process group even on one rank (one GPU), so their own path is what runs.
Weak scaling: every rank runs the one process's batch (8 pairs in micro-batches of 4, each pair's
prompt + chosen + rejected one packed row of 2048 tokens; SIZES), so N ranks step N times the pairs,
and pairs/s per GPU over the one process's pairs/s is the data-parallel efficiency. A step is
train.accumulate, the clip and AdamW, as train.fit runs it; the first step warms up, the median of
the others is the step time. Rank 0 writes {ranks, step_seconds, pairs_per_second, tokens, loss,
peak_gib: one per rank} to OUT.json. `section` is what bench/gpu_check.py runs: both pairs of
launches on every GPU of the machine (2 gloo ranks of a toy model with --dry).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# (pairs a rank steps, pairs a micro-batch of a rank, tokens a row, steps): on the GPU, and dry.
SIZES = {False: (8, 4, 2048, 4), True: (2, 1, 128, 2)}
RUNNERS = ("local-lora", "ddp", "local-full", "fsdp")


def measure(runner_name: str, model_dir: Path, dry: bool) -> dict | None:
    """This rank's part of the measurement; rank 0 returns it, the others None."""
    import torch
    import torch.distributed as dist

    from bench.gpu_check import _random_pairs
    from rlhf_engine import distributed, sharding, train
    from rlhf_engine import precision as precisions
    from rlhf_engine.algorithms.dpo import DPO
    from rlhf_engine.models import loading
    from rlhf_engine.spec import DpoHyperparameters, LoraSpec

    pairs_per_rank, micro, row, steps = SIZES[dry]
    w = distributed.world()
    device = "cpu" if dry else f"cuda:{w.local_rank}"  # an index, also on one rank: set_device needs it
    full = runner_name in ("local-full", "fsdp")
    precision = precisions.decide("auto", device, full=full)
    if runner_name in ("ddp", "fsdp"):
        if precision.device_type == "cuda":
            torch.cuda.set_device(torch.device(device))
            dist.init_process_group("nccl", device_id=torch.device(device))
        else:
            dist.init_process_group("gloo")
    model = loading.load_causal_lm(model_dir, dtype=precision.weights, device=precision.device)
    if not full:
        model = loading.add_lora(model, LoraSpec(r=16, alpha=32), seed=0)
    model.train()
    # Each pair one packed row (a 3:1 prompt share, as in chat data); rank r's are pairs r*P .. r*P + P - 1.
    pairs = _random_pairs([(row * 3 // 4, row // 8, row // 8)] * (pairs_per_rank * w.size),
                          vocab=model.config.vocab_size)
    algo = DPO(DpoHyperparameters(beta=0.1), pairs, torch.zeros(len(pairs), 2), 0, packing=True)
    if runner_name == "ddp":
        runner = distributed.DataParallel(model, algo, w)
    elif runner_name == "fsdp":
        runner = sharding.Sharded(model, algo, w, precision)
    else:
        runner = distributed.Local(model, algo)
    hp = DpoHyperparameters(beta=0.1, learning_rate=1e-5)
    optimizer, _ = train.make_optimizer(model, hp, steps)  # after the runner: FSDP2 replaces the parameters
    cuda = precision.device_type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        sums, tokens = train.accumulate(runner, list(range(len(pairs))), pairs_per_rank // micro, precision)
        runner.clip(1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = float(sums["loss"])  # the step's host sync
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peaks = distributed.gather(torch.cuda.max_memory_allocated() / 2**30 if cuda else None)
    step = sorted(times[1:])[len(times[1:]) // 2]
    if dist.is_initialized():
        dist.destroy_process_group()
    if not w.is_main:
        return None
    return {"runner": runner_name, "ranks": w.size, "step_seconds": step, "pairs_per_second": len(pairs) / step,
            "tokens": tokens, "loss": loss, "peak_gib": peaks}


def launch(runner_name: str, ranks: int, model_dir: Path, dry: bool, timeout: int = 900) -> dict:
    """One measurement under torchrun on `ranks` local processes: rank 0's record."""
    out = Path(tempfile.mkdtemp(prefix="gpu-ranks-")) / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
           "-m", "bench.gpu_ranks", runner_name, str(model_dir), str(out), *(["--dry"] if dry else [])]
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if dry else {})}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{runner_name} on {ranks} ranks: exit {done.returncode}: "
                           + done.stderr[-600:].replace("\n", " "))
    return json.loads(out.read_text())


def _memory(record: dict) -> str:
    peaks = record["peak_gib"]
    return "n/a (CPU)" if peaks[0] is None else "/".join(f"{p:.1f}" for p in peaks) + " GiB"


def section(table, device: str, cache: Path, dry: bool) -> None:
    """Two rows: DDP (LoRA) and FSDP2 (full) on every GPU (one rank on a one-GPU machine) against
    one process, pairs/s per GPU and peak memory per rank."""
    import torch

    from bench.gpu_model import for_check

    ranks = torch.cuda.device_count() if device == "cuda" else 2
    model_dir = for_check(cache, dry)
    for one_name, many_name, what in (("local-lora", "ddp", "DDP, LoRA r=16, bf16 weights"),
                                      ("local-full", "fsdp", "FSDP2, full, fp32 shards, bf16 compute")):
        one, many = launch(one_name, 1, model_dir, dry), launch(many_name, ranks, model_dir, dry)
        per_gpu = many["pairs_per_second"] / ranks
        table.add("6 ranks", f"{many_name} on {ranks} rank(s) vs one process ({what})",
                  "ok" if math.isfinite(many["loss"]) and math.isfinite(one["loss"]) else "FAILED",
                  f"{per_gpu:.2f} pairs/s per GPU vs {one['pairs_per_second']:.2f} in one process "
                  f"({per_gpu / one['pairs_per_second']:.0%}); step {many['step_seconds'] * 1000:.0f} ms vs "
                  f"{one['step_seconds'] * 1000:.0f} ms; peak per rank {_memory(many)} vs {_memory(one)}",
                  one=one, ranks=many)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runner", choices=RUNNERS)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--dry", action="store_true", help="toy sizes on the CPU")
    args = ap.parse_args(argv)
    record = measure(args.runner, args.model_dir, args.dry)
    if record is not None:
        args.out.write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
