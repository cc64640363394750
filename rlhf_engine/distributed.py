"""One job on N processes, with PyTorch's own runtime: torch.distributed.run starts the ranks,
torch.distributed carries the collectives, DistributedDataParallel averages the gradients.

Nothing here runs unless the launcher set WORLD_SIZE > 1: a job started as one process (the
default) trains exactly as it always has (`Local` is the loop's single-process step).

How N ranks make one job whose results do not depend on N:

  data      every rank computes the same epoch order (train.epoch_order is a pure function of
            seed and epoch) and the same micro-batches of each global step; each rank runs its
            contiguous share of every micro-batch (`share`). The global batch size, the number
            of steps and therefore the LR schedule are N=1's.
  gradients DDP averages over ranks, so rank r scales its share's mean loss by
            N * len(share) / len(step): the average is then the step's mean loss, as with N=1.
            An algorithm whose loss is a mean over something else than its micro-batch's
            examples says so with `size(indices)` (SFT: completion tokens); a share then weighs
            len(micro-batch) / len(step) * size(share) / size(micro-batch).
            A rank whose share of a micro-batch is empty (fewer examples than ranks) runs one
            example with weight 0, so every rank enters every gradient all-reduce.
  stats     each rank weights its share's statistics by len(share) / len(step); one all-reduce
            per step sums them into the step's statistics (the same one host sync as N=1).
  reference the sorted batches of the reference pass (reference.py) are dealt round-robin, each
            rank computes its own, and one all-reduce sums the rows (each row is non-zero on one
            rank only, so the sum is exact and equal to N=1's); rank 0 writes the cache.
  online    REBEL and REFUEL: each rank collects and scores its share of an iteration's seeds,
            and `gather` hands every rank the whole collection (algorithms/online_pairs.py); the
            regression then trains on it as any other method does.
  reporting only rank 0 reports (metrics, events, checkpoints, the final adapter); rank 0 polls
            `should_stop` and broadcasts its answer, so cancel and pause reach every rank at the
            same step.
  sharding  a job that trains every weight (`finetuning_type: "full"`) shards them, their
            gradients and the optimizer state with FSDP2 (rlhf_engine/sharding.py), through the
            same step protocol; its evaluation, samples and checkpoints then run on every rank.

With DDP, trainable weights and optimizer state are identical on every rank (DDP broadcasts rank 0's
parameters when it wraps the model; every rank steps the same averaged gradients), so rank 0's
checkpoint resumes every rank. Not yet with LoRA dropout > 0 (the default is 0): each rank then
draws masks for its own share from the same seed, so N ranks do not retrace N=1, and the
checkpoint restores rank 0's RNG on all of them.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the job's ranks, as the launcher (torchrun) set it."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def world() -> World:
    return World.from_env()


def init(device: str) -> bool:
    """Join the launcher's process group (NCCL on a GPU, gloo on the CPU) when there is more
    than one rank; True when this call created it (the caller then destroys it at the end)."""
    w = world()
    if w.size == 1 or dist.is_initialized():
        return False
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        dist.init_process_group("gloo")
    return True


def finish(created: bool, *, completed: bool = True) -> None:
    """Leave the process group this process created. After a run that completed, every rank
    first waits for the others at a barrier: a rank still writing the final output or reading
    the last collective's bytes must not see its peers close their connections, which gloo
    answers by aborting the process (pytorch/gloo#155). Not after an error: the peers may be in
    another collective, or gone, and the barrier would wait for them until the timeout."""
    if created and dist.is_initialized():
        try:
            if completed:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def active() -> bool:
    """Whether this process is one of several joined ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def agree(value):
    """Rank 0's `value` on every rank: one decision where ranks might see different answers
    (a cache file another job is writing, a cancel that lands between two ranks' polls)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank: [obj] with one process."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of `t`, where it lives (NCCL needs it on the rank's GPU)."""
    if not active():
        return t
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    out = t.to(device)
    dist.all_reduce(out)
    return out.to(t.device)


def rank_slice(items: list, w: World | None = None) -> list:
    """This rank's contiguous share of `items` (empty when there are fewer items than ranks)."""
    w = w or world()
    k = math.ceil(len(items) / w.size)
    return items[w.rank * k:(w.rank + 1) * k]


class MainOnly:
    """The reporter every rank holds: rank 0's forwards to the real one, the others report
    nothing; `should_stop` is rank 0's answer on all of them (a collective, called by every rank
    at the same point of the loop)."""

    def __init__(self, inner, w: World):
        self.inner, self.world = inner, w

    def event(self, message, *, level="info", data=None):
        if self.world.is_main:
            self.inner.event(message, level=level, data=data)

    def metrics(self, step, values, *, total_steps=None):
        if self.world.is_main:
            self.inner.metrics(step, values, total_steps=total_steps)

    def checkpoint(self, step, path, metrics):
        if self.world.is_main:
            self.inner.checkpoint(step, path, metrics)

    def samples(self, step, items):
        if self.world.is_main and hasattr(self.inner, "samples"):
            self.inner.samples(step, items)

    def should_stop(self) -> bool:
        return bool(agree(self.inner.should_stop() if self.world.is_main else False))


def reporter_for(reporter, w: World | None = None):
    """`reporter` itself in a one-process job; MainOnly around it with several ranks."""
    w = w or world()
    return reporter if w.size == 1 else MainOnly(reporter, w)


class Local:
    """One rank's part of an optimizer step, for a one-process job: the whole micro-batch, its
    loss weighted by its size, nothing to synchronise. `train.fit` runs every job through this
    small protocol (`share`, `synced`, `loss`, `reduce`, `clip`; `run` for evaluation and samples);
    `DataParallel` is its N-rank form, `sharding.Sharded` its sharded one (full fine-tuning)."""

    # Whether every rank must run evaluation, samples and checkpoints (sharded weights: each
    # forward and each state dict is collective); otherwise rank 0 alone does.
    everywhere = False

    def __init__(self, model, algo):
        self.model, self.algo = model, algo

    def share(self, chunk: list[int], step_size: int) -> tuple[list[int], float, float]:
        """(examples this rank runs, scale of their mean loss, weight of their statistics)."""
        weight = len(chunk) / step_size
        return chunk, weight, weight

    def synced(self, last: bool):
        """The context of one micro-batch's forward and backward."""
        return contextlib.nullcontext()

    def loss(self, examples: list[int]):
        return self.algo.loss(self.model, examples)

    def run(self, fn, *args):
        """fn(model, *args): a forward outside the step (evaluation, samples)."""
        return fn(self.model, *args)

    def reduce(self, sums: dict, tokens: int) -> tuple[dict, int]:
        """The step's statistics and token count over all ranks."""
        return sums, tokens

    def clip(self, max_norm: float) -> torch.Tensor:
        """Clip the trainable parameters' gradients to a total norm of `max_norm`; the norm before."""
        return torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], max_norm)


class Ranks(Local):
    """The step over N ranks: each runs its contiguous share of every micro-batch, with its mean
    loss scaled by N * len(share) / len(step) (the gradient averaging over ranks then gives the
    step's mean), and one all-reduce sums the step's statistics. How gradients are averaged is the
    subclass's: DDP's all-reduce (`DataParallel`) or FSDP2's reduce-scatter (`sharding.Sharded`)."""

    def __init__(self, model, algo, w: World):
        super().__init__(model, algo)
        self.world = w

    def share(self, chunk, step_size):
        mine = rank_slice(chunk, self.world)
        if not mine:  # every rank must run the collectives: one example, weight 0
            return chunk[:1], 0.0, 0.0
        size = getattr(self.algo, "size", None)  # what the loss is a mean of; default: the examples
        weight = len(mine) / step_size if size is None else len(chunk) / step_size * size(mine) / size(chunk)
        return mine, weight * self.world.size, weight

    def reduce(self, sums, tokens):
        keys = list(sums)
        device = next(self.model.parameters()).device
        packed = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=device).reshape(())
                              for k in keys] + [torch.tensor(float(tokens), dtype=torch.float64, device=device)])
        packed = sum_tensor(packed)
        return dict(zip(keys, packed[:-1].unbind())), int(packed[-1].item())


class _Loss(torch.nn.Module):
    """The algorithm's loss as a module, so DDP runs it: an algorithm calls the model's decoder
    directly (logprobs.py), never the wrapper's forward that DDP's reducer needs to see."""

    def __init__(self, model, algo):
        super().__init__()
        self.model, self.algo = model, algo

    def forward(self, examples: list[int]):
        return self.algo.loss(self.model, examples)


class DataParallel(Ranks):
    """Under DDP, which averages the trainable parameters' gradients on the last micro-batch of
    the step (`no_sync` before). Weights are whole on every rank: rank 0 alone evaluates."""

    def __init__(self, model, algo, w: World):
        from torch.nn.parallel import DistributedDataParallel

        super().__init__(model, algo, w)
        device = next(p for p in model.parameters() if p.requires_grad).device
        # Buffers (rotary frequencies) are the same on every rank: synced once, at wrapping.
        self.ddp = DistributedDataParallel(_Loss(model, algo), device_ids=[device] if device.type == "cuda" else None,
                                           forward_sync_buffers=False)

    def synced(self, last: bool):
        return contextlib.nullcontext() if last else self.ddp.no_sync()

    def loss(self, examples):
        return self.ddp(examples)


def barrier() -> None:
    if active():
        dist.barrier()
