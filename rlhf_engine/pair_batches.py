"""Preference pairs -> the batch of one forward, in the packed or the plain layout.

DPO (algorithms/dpo.py), the reference pass (reference.py) and the regression methods
(algorithms/regression.py) all run pairs through this one function, so the reference, log pi_t
and the training forward see the same layout. `TrainConfig.packing` chooses it for a job:

    packed  prefix-shared and padding-free (rlhf_engine/packing.py): the prompt runs once for
            both completions
    plain   two right-padded rows per pair (rlhf_engine/data/batching.py)

Both give the same log-probs (tests/unit/test_logprobs_packing.py). Packing only changes the
layout inside a micro-batch, never which examples share a step.
"""

from __future__ import annotations

from rlhf_engine.attention import uses_flex
from rlhf_engine.data.batching import collate_pairs, padding_fraction
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.packing import pack_pairs


def make_batch(pairs: list[TokenizedPair], pad_id: int, packing: bool, model=None) -> tuple[dict, float, int]:
    """(batch, padding fraction, tokens the forward processes) in the packed or the plain layout;
    a packed batch's attention mask is built for `model`: on its device, as a flex BlockMask when
    it runs flex_attention (rlhf_engine/attention.py)."""
    if packing:
        device = next(model.parameters()).device if model is not None else None
        batch = pack_pairs(pairs, pad_id, device=device, block_mask=model is not None and uses_flex(model))
        return batch, batch["padding_fraction"], batch["tokens"]
    batch = collate_pairs(pairs, pad_id)
    return batch, padding_fraction(batch), int(batch["attention_mask"].sum())
