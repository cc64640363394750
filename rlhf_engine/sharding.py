"""Full fine-tuning on N ranks: every weight, its gradient and its AdamW state sharded with FSDP2
(`torch.distributed.fsdp.fully_shard`), through the step protocol of rlhf_engine/distributed.py.

    units      each decoder layer is one FSDP unit; the root unit holds the rest (embeddings, final
               norm, LM head; tied embeddings stay one parameter in one unit). Each rank keeps 1/N
               of every parameter (a DTensor sharded on dim 0) and steps AdamW on its 1/N.
    forward    a unit all-gathers its parameters before its forward and frees them after (the root
               keeps its own until backward), and reduce-scatters its gradients in backward. The
               algorithms call the decoder and the head directly (logprobs.py), never the model's
               forward, so the root is `_Call`: a module whose forward runs the algorithm's callable
               on the model. Its pre-forward gathers the root's parameters and arms the backward's
               reduce-scatter; each layer's own hooks fire as the decoder calls it.
    step       `Ranks`' share and loss scale (N * len(share) / len(step)): the reduce-scatter averages
               over ranks as DDP's all-reduce does, so the step is N=1's. Gradient accumulation keeps
               the micro-batches' unsharded gradients until the step's last, which reduce-scatters
               (set_requires_gradient_sync); the gradient norm is the DTensors' total over all ranks.
    precision  on a GPU with bf16, MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): the
               shards stay fp32 (the optimizer's master weights, rlhf_engine/precision.py), every
               gathered copy is bf16; on the CPU no policy (the job's precision), as with one process.
    everywhere every forward and every state dict is a collective: evaluation, samples and
               checkpoints run on all ranks (rank 0 alone reports). Samples are greedy on the same
               weights and prompts, so every rank runs the same number of forwards.

Gradient checkpointing (transformers', per layer, non-reentrant) recomputes a layer's forward,
hooks included, in backward: FSDP2 gathers the layer again there.
"""

from __future__ import annotations

import contextlib

import torch

from rlhf_engine.distributed import Ranks, World
from rlhf_engine.outcome import JobInputError
from rlhf_engine.precision import Precision


class _Call(torch.nn.Module):
    """The FSDP root: forward(fn, *args) is fn(model, *args), so whatever an algorithm calls inside
    the model runs between the root's pre-forward and post-backward hooks."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, fn, *args):
        return fn(self.model, *args)


def _layers(model) -> torch.nn.ModuleList:
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(lm.get_decoder(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise JobInputError(f"{type(lm).__name__}: no decoder layers to shard (model.get_decoder().layers)")
    return layers


def policy(precision: Precision | None):
    """bf16 gathered parameters and fp32 gradient reduction on a GPU that computes in bf16."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision is not None and precision.device_type == "cuda" and precision.compute is not None:
        return MixedPrecisionPolicy(param_dtype=precision.compute, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


class Sharded(Ranks):
    """The step over N ranks with the model's weights sharded (ZeRO-3 as FSDP2 does it)."""

    everywhere = True

    def __init__(self, model, algo, w: World, precision: Precision | None = None):
        from torch.distributed.fsdp import fully_shard

        super().__init__(model, algo, w)
        mp = policy(precision)
        for layer in _layers(model):
            fully_shard(layer, mp_policy=mp)
        self.root = fully_shard(_Call(model), mp_policy=mp)

    def synced(self, last: bool):
        self.root.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def loss(self, examples):
        return self.root(self.algo.loss, examples)

    def run(self, fn, *args):
        return self.root(fn, *args)

    def clip(self, max_norm: float) -> torch.Tensor:
        return super().clip(max_norm).full_tensor()
