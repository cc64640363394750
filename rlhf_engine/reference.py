"""Reference-policy log-probs: computed once per (base model, tokenised dataset), cached on disk.

The reference is the model the job starts from: the policy with its LoRA adapter disabled, so no
second copy of the weights is ever loaded; a full fine-tune (no adapter) computes them from its
weights before its first step, so they too are the frozen start. For a chained job
(TrainConfig.init_adapters) that is the base with the earlier adapters merged in: the model it
continues, not the original base.
The values depend on the base weights, the exact token ids and
the precision the forward ran in (rlhf_engine/precision.py: a CPU fp32 reference differs from a
GPU bf16 one by as much as a DPO margin), so they are keyed by a hash of all three and reused
across epochs, resumes and jobs. The pass runs in the job's precision, as training does, so that
DPO's margin is 0 at step 0.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from rlhf_engine import distributed
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.logprobs import completion_logps
from rlhf_engine.pair_batches import make_batch
from rlhf_engine.precision import Precision


def cache_key(weights: Path | Sequence[Path], pairs: list[TokenizedPair], precision: Precision) -> str:
    """`weights`: the base model's directory, or it and the adapters merged into it (a chained job)."""
    h = hashlib.sha256(precision.tag.encode())
    for directory in [weights] if isinstance(weights, (str, Path)) else weights:
        for f in sorted(Path(directory).glob("*.safetensors")):
            st = f.stat()
            h.update(f"{f.parent.name}/{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for p in pairs:
        h.update(repr((p.prompt, p.chosen, p.rejected)).encode())
        if p.chosen_mask is not None or p.rejected_mask is not None:  # the same tokens, other targets
            h.update(repr((p.chosen_mask, p.rejected_mask)).encode())
    return h.hexdigest()[:32]


@torch.no_grad()
def compute(model, pairs: list[TokenizedPair], pad_id: int, batch_size: int = 8,
            packing: bool = True, precision: Precision | None = None) -> torch.Tensor:
    """[n, 2] tensor of (chosen, rejected) summed log-probs under the adapter-free base model, in
    `precision` (the job's; default the weights' own dtype).

    Prefix-shared packing (rlhf_engine/packing.py) unless `packing=False`; the values are the same.
    On N ranks each computes every N-th batch and one all-reduce sums the rows: every batch is
    the one N=1 runs, so the values are N=1's (rlhf_engine/distributed.py).
    """
    precision = precision or Precision.native(model)
    out = torch.zeros(len(pairs), 2, dtype=torch.float64)
    # Sorting by length keeps padding low; the order does not matter for a no-grad pass.
    order = sorted(range(len(pairs)), key=lambda i: (pairs[i].num_tokens, i))
    was_training = model.training
    model.eval()
    disable = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    w = distributed.world()
    with disable, precision.autocast():
        for idx in batches[w.rank::w.size]:
            sums, _ = completion_logps(model, make_batch([pairs[i] for i in idx], pad_id, packing, model)[0])
            n, sums = len(idx), sums.double().cpu()
            out[idx, 0], out[idx, 1] = sums[:n], sums[n:]
    model.train(was_training)
    return distributed.sum_tensor(out)


def load_or_compute(model, weights: Path | Sequence[Path], pairs: list[TokenizedPair], pad_id: int,
                    cache_dir: Path | None, precision: Precision, *, packing: bool = True) -> tuple[torch.Tensor, bool]:
    """Returns (logps, hit) where hit says whether the cache answered. The layout (`packing`) is
    not part of the key: both give the same values."""
    from safetensors.torch import load_file, save_file

    key = cache_key(weights, pairs, precision)
    path = Path(cache_dir) / "reference" / f"{key}.safetensors" if cache_dir else None
    if path and distributed.agree(path.exists()):  # rank 0 decides: one answer for every rank
        return load_file(path)["logps"], True
    logps = compute(model, pairs, pad_id, packing=packing, precision=precision)
    if path and distributed.world().is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"logps": logps}, tmp)
        tmp.replace(path)
    return logps, False

