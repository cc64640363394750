"""flex_attention for prefix-shared packed batches, SDPA for everything else (`TrainConfig.attention`).

A packed batch's branch-aware mask (rlhf_engine/packing.py) given to SDPA as a dense
[rows, 1, L, L] tensor rules out the flash kernel, makes transformers repeat K/V for grouped-query
attention, and is converted and kept for backward once per layer. flex_attention takes the same
rule as a BlockMask instead: built once per batch from [rows, L] ids, it skips fully masked blocks
(other segments, the causal upper triangle) and runs GQA natively.

The model gets one attention implementation that dispatches on the mask it is handed: a BlockMask
goes to transformers' flex_attention_forward, anything else (plain right-padded batches, the KV-cache
generation of rollouts) to its SDPA path, with SDPA's own mask preparation. flex needs CUDA for a
backward pass (PyTorch 2.13 runs it forward-only on CPU), so the choice is refused elsewhere.
"""

from __future__ import annotations

NAME = "sdpa+flex_packed"


def _sdpa_or_flex(module, query, key, value, attention_mask, **kwargs):
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.flex_attention import flex_attention_forward
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    forward = flex_attention_forward if isinstance(attention_mask, BlockMask) else sdpa_attention_forward
    return forward(module, query, key, value, attention_mask, **kwargs)


def enable_flex(model) -> None:
    """Switch `model` (a transformers model, before LoRA wrapping) to the dispatching implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if next(model.parameters()).device.type != "cuda":
        raise ValueError("attention 'flex' needs a CUDA device (flex_attention has no backward pass on CPU)")
    AttentionInterface.register(NAME, _sdpa_or_flex)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)


def uses_flex(model) -> bool:
    """Whether packed batches for `model` (peft-wrapped or not) should carry a BlockMask."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(getattr(lm, "config", None), "_attn_implementation", None) == NAME
