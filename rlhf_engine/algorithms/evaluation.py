"""The evaluation loop the offline methods share: their validation set in batches, averaged.

An algorithm's `evaluate(model)` (called by train.fit in eval mode, in the job's precision) is
`evaluate_in_batches(items, measure)`: `measure(batch)` returns the batch's statistics (tensors on
the model's device, or floats) and they are averaged over batches, each weighted by `weigh(batch)`
(by default its size, so the result is the mean over examples whatever the batch size). Sums run
in float64 on the device, read back once by the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


@torch.no_grad()
def evaluate_in_batches(items: Sequence, measure: Callable[[Sequence], dict], *, batch_size: int = 8,
                        weigh: Callable[[Sequence], float] = len) -> dict[str, torch.Tensor] | None:
    """{"eval/<key>": weighted mean of measure(batch)[key]}; None without items (nothing to report)."""
    if not items:
        return None
    batches = [items[s:s + batch_size] for s in range(0, len(items), batch_size)]
    weights = [weigh(b) for b in batches]
    total = sum(weights)
    sums: dict[str, torch.Tensor | float] = {}
    for batch, weight in zip(batches, weights):
        for key, value in measure(batch).items():
            value = value.double() if isinstance(value, torch.Tensor) else float(value)
            sums[key] = sums.get(key, 0.0) + value * weight / total
    return {f"eval/{k}": v for k, v in sums.items()}
