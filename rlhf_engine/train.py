"""The one training loop every gradient-based method uses.

An algorithm supplies `num_examples`, `loss(model, indices) -> (loss, stats, tokens)` and
`evaluate(model)`; a job may add `samples(model, step)` (rlhf_engine/samples.py), which reports
the model's replies at each evaluation. Stats may be tensors on the model's device, which the
loop averages there and reads back once per step (a `.item()` per micro-batch would stall the GPU
each time). The loop owns the data order, gradient accumulation, clipping, the LR schedule,
evaluation, checkpoints, exact resume and reporting. Data order is a pure function of
(seed, epoch), and the RNG state travels in checkpoints, so a resumed run retraces an
uninterrupted one step for step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf_engine import checkpoint, distributed, layout, sharding
from rlhf_engine.callbacks import Reporter
from rlhf_engine.precision import Precision
from rlhf_engine.spec import TrainingHyperparameters


@dataclass
class FitResult:
    steps: int
    trained_tokens: int
    stopped: bool  # the reporter asked to stop before the end
    final_metrics: dict[str, float]


def lr_lambda(kind: str, warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))  # cosine

    return factor


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def micro_batches(indices: list[int], accumulation_steps: int) -> list[list[int]]:
    """One step's examples split into the micro-batches whose gradients it accumulates."""
    micro = max(1, math.ceil(len(indices) / accumulation_steps))
    return [indices[s:s + micro] for s in range(0, len(indices), micro)]


def epoch_micro_batches(n: int, hp: TrainingHyperparameters, seed: int, epoch: int) -> list[list[int]]:
    """Every micro-batch `fit` runs in `epoch`, in its order and composition. A forward that must
    match the training forward to the last bit (log pi_t for the regression methods) runs on
    these batches: a batch of other neighbours is packed and reduced differently (~1e-7)."""
    bs = min(hp.examples_per_step, n)
    order = epoch_order(n, seed, epoch)
    return [chunk for s in range(0, n, bs) for chunk in micro_batches(order[s:s + bs], hp.gradient_accumulation_steps)]


def make_optimizer(model, hp: TrainingHyperparameters, total_steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    warmup = math.ceil(hp.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp.lr_scheduler_type, warmup, total_steps))
    return optimizer, scheduler


def step_runner(model, algo, hp: TrainingHyperparameters, precision: Precision | None = None) -> distributed.Local:
    """How this process runs a step (rlhf_engine/distributed.py): Local with one rank; with N,
    DataParallel (DDP), or Sharded (FSDP2, rlhf_engine/sharding.py) when every weight trains."""
    w = distributed.world()
    if w.size == 1 or not distributed.active():
        return distributed.Local(model, algo)
    return sharding.Sharded(model, algo, w, precision) if hp.full else distributed.DataParallel(model, algo, w)


def fit(model, algo, hp: TrainingHyperparameters, *, seed: int, reporter: Reporter, out_dir: Path,
        resume_from: Path | None = None, step_offset: int = 0, precision: Precision | None = None,
        samples: Callable[[object, int], None] | None = None) -> FitResult:
    """Train `model` (a peft model, or with hp.full a whole model) on `algo` for hp.epochs;
    checkpoints go to out_dir/checkpoints.

    step_offset shifts the reported step numbers (online methods call fit once per iteration).
    Every forward, training and evaluation, runs in `precision` (default: the weights' own dtype).
    Launched on N ranks (rlhf_engine/distributed.py), each runs its share of every micro-batch
    and only rank 0 reports; only rank 0 evaluates and writes checkpoints unless the weights are
    sharded (hp.full: rlhf_engine/sharding.py), when every rank does. The steps are N=1's.
    """
    precision = precision or Precision.native(model)
    n = algo.num_examples
    bs = min(hp.examples_per_step, n)
    steps_per_epoch = math.ceil(n / bs)
    total = hp.epochs * steps_per_epoch
    ckpt_every = hp.checkpoint_interval or steps_per_epoch
    torch.manual_seed(seed)
    runner = step_runner(model, algo, hp, precision)  # before the optimizer: FSDP2 replaces the parameters
    optimizer, scheduler = make_optimizer(model, hp, total)
    state = checkpoint.TrainerState(step=0, trained_tokens=0)
    if resume_from is not None:
        state = checkpoint.load(resume_from, model, optimizer, scheduler, sharded=runner.everywhere)
        reporter.event(f"Resumed from step {state.step + step_offset}", data={"checkpoint": str(resume_from)})
    model.train()
    leads = distributed.world().is_main or runner.everywhere  # this rank evaluates and checkpoints
    last: dict[str, float] = {}

    last_saved = state.step
    while state.step < total:
        if reporter.should_stop():
            # Save where we are, so a paused job resumes without repeating a step.
            if state.step > last_saved and leads:
                _save(runner, optimizer, scheduler, state, out_dir, state.step + step_offset, last, reporter)
            return FitResult(state.step, state.trained_tokens, True, last)
        epoch, within = divmod(state.step, steps_per_epoch)
        order = epoch_order(n, seed, epoch)
        indices = order[within * bs:(within + 1) * bs]
        started = time.perf_counter()

        sums, tokens = accumulate(runner, indices, hp.gradient_accumulation_steps, precision)
        sums["grad_norm"] = runner.clip(hp.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stats = to_floats(sums)  # the step's one host sync, once its work is queued
        state.step += 1
        state.trained_tokens += tokens
        elapsed = time.perf_counter() - started

        last = {**stats, "learning_rate": lr, "tokens_per_second": tokens / elapsed, "step_time": elapsed,
                "epoch": epoch + (within + 1) / steps_per_epoch}
        step = state.step + step_offset
        reporter.metrics(step, last, total_steps=total + step_offset)

        if hp.eval_interval and state.step % hp.eval_interval == 0 and state.step < total and leads:
            _evaluate(runner, reporter, step, precision, samples)
        if (state.step % ckpt_every == 0 or state.step == total) and leads:
            _save(runner, optimizer, scheduler, state, out_dir, step, last, reporter)
            last_saved = state.step

    final_eval = _evaluate(runner, reporter, state.step + step_offset, precision, samples) if leads else None
    return FitResult(state.step, state.trained_tokens, False, {**last, **(final_eval or {})})


def accumulate(runner: distributed.Local, indices: list[int], accumulation_steps: int,
               precision: Precision) -> tuple[dict, int]:
    """One optimizer step's forwards and backwards: the step's examples in micro-batches, each
    rank its share of each (`runner.share`), losses weighted by size; the gradients are then the
    step's, on every rank. Returns the step's statistics (tensors, summed in float64) and token
    count, over all ranks."""
    sums: dict[str, torch.Tensor | float] = {}
    tokens = 0
    chunks = micro_batches(indices, accumulation_steps)
    for i, chunk in enumerate(chunks):
        examples, scale, weight = runner.share(chunk, len(indices))
        with runner.synced(last=i == len(chunks) - 1):
            with precision.autocast():
                loss, chunk_stats, chunk_tokens = runner.loss(examples)
            (loss * scale).backward()
        tokens += chunk_tokens if weight else 0
        for k, v in {"loss": loss.detach(), **chunk_stats}.items():
            sums[k] = sums.get(k, 0.0) + _as_float64(v) * weight
    return runner.reduce(sums, tokens)


def _save(runner, optimizer, scheduler, state, out_dir: Path, step: int, metrics: dict, reporter: Reporter) -> None:
    path = checkpoint.save(layout.checkpoint_dir(out_dir, step), runner.model, optimizer, scheduler, state,
                           sharded=runner.everywhere)
    reporter.checkpoint(step, path, metrics)


def _evaluate(runner, reporter: Reporter, step: int, precision: Precision, samples=None) -> dict[str, float] | None:
    model = runner.model
    model.eval()
    try:
        with precision.autocast():
            values = runner.run(runner.algo.evaluate)
            if samples is not None:  # also without a validation set: samples have prompts of their own
                runner.run(samples, step)
    finally:
        model.train()
    if values:
        values = to_floats(values)
        reporter.metrics(step, values)
    return values


def _as_float64(value):
    """Metrics are summed in float64, as Python floats would be, wherever they live."""
    return value.detach().double() if isinstance(value, torch.Tensor) else float(value)


def to_floats(values: dict) -> dict[str, float]:
    """Plain floats for the reporter, with one device-to-host copy for all tensor values."""
    keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in values.items() if k not in keys}
    if keys:
        out.update(zip(keys, torch.stack([values[k].detach().double().reshape(()) for k in keys]).tolist()))
    return {k: out[k] for k in values}
