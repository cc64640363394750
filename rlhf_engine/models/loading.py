"""Turn a registry entry into a (model, tokenizer) pair, and wrap it with LoRA.

The reference policy for DPO is the same base model with the adapter disabled, so one copy of
the weights serves both policy and reference.
"""

from __future__ import annotations

import os
from pathlib import Path

from rlhf_engine.model_registry import ModelEntry
from rlhf_engine.spec import LoraSpec


def default_cache_dir() -> Path:
    return Path(os.environ.get("RLHF_MODEL_CACHE_DIR", Path.home() / ".cache" / "rlhf_engine" / "models"))


def materialise(entry: ModelEntry, cache_dir: Path | None = None) -> Path:
    """The local directory holding the entry's weights, building built-ins on first use."""
    from rlhf_engine.models import builtin

    cache_dir = Path(cache_dir or default_cache_dir())
    if entry.source == "builtin-tiny":
        return builtin.tiny_random_llama(cache_dir / entry.name)
    if entry.source == "smollm2-gguf":
        return builtin.smollm2_from_package(cache_dir / entry.name)
    if not entry.path:
        raise ValueError(f"model {entry.name!r} has no path in the registry")
    return Path(entry.path)


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tokenizer.pad_token is None:  # padding positions are always masked, any id will do
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: Path, *, dtype=None, device: str = "cpu"):
    """The model in `dtype` (default: the "auto" precision's weights, rlhf_engine/precision.py;
    "auto": as saved) on `device`.

    On a GPU the weights are loaded straight onto it (device_map), never whole in host RAM first.
    Not on the CPU: a device_map there would mark the model as offloaded for accelerate and peft."""
    from transformers import AutoModelForCausalLM

    from rlhf_engine.precision import decide, is_cuda

    dtype = dtype or decide("auto", device).weights
    placement = {"device_map": device} if is_cuda(device) else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False,
                                                 attn_implementation="sdpa", **placement)
    return model if placement else model.to(device)


def merge_adapters(model, adapter_dirs):
    """`model` with each saved LoRA adapter folded into its weights, in order: the weights a
    chained job starts from (and measures its reference against)."""
    if not adapter_dirs:
        return model
    from peft import PeftModel

    for adapter_dir in adapter_dirs:
        model = PeftModel.from_pretrained(model, Path(adapter_dir)).merge_and_unload()
    return model


def lora_target_modules(model, spec: LoraSpec, *, head=None) -> list[str]:
    """`all-linear`: every nn.Linear inside the transformer blocks, never the head that reads
    them out (`head`, default the LM's output embeddings), which is trained in full or not at all."""
    if spec.target_modules != "all-linear":
        return list(spec.target_modules)
    import torch.nn as nn

    head = model.get_output_embeddings() if head is None else head
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module is not head}
    return sorted(names)


def add_lora(model, spec: LoraSpec, *, seed: int, task_type: str = "CAUSAL_LM", head=None,
             modules_to_save: list[str] | None = None):
    """Wrap `model` with a fresh LoRA adapter. B starts at zero, so the policy equals the base.

    A's init is a function of `seed` alone (drawn under a forked RNG, so the caller's stream is
    untouched). A reward model passes task_type "SEQ_CLS" and its score head, trained in full
    (`modules_to_save`) and kept out of the LoRA targets."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=lora_target_modules(model, spec, head=head), bias="none",
                        task_type=task_type, modules_to_save=modules_to_save)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)
