"""Adapter export in the standard PEFT layout, and whole models as transformers directories
(safetensors; nothing pickled)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rlhf_engine.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS


def save_adapter(model, out_dir: Path, base_model_name: str, stacked_on: Sequence[str | Path] = ()) -> Path:
    """adapter_config.json + adapter_model.safetensors, loadable by peft.PeftModel.from_pretrained.

    `stacked_on`: the adapters the job started from (merged into the base before training); the
    saved adapter then holds them and `model`'s update together, so it loads on the base alone."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    if stacked_on:
        combine_adapters([*map(Path, stacked_on), out_dir], out_dir)
    config_path = out_dir / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    # The registry name, not a cache path from the training machine.
    config["base_model_name_or_path"] = base_model_name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return out_dir


def combine_adapters(adapter_dirs: Sequence[Path], out_dir: Path) -> Path:
    """One LoRA adapter whose update is exactly the sum of the given adapters' updates.

    LoRA adds s * B @ A to a weight (s = alpha / r). Stacking the A's by rows and the scaled B's
    by columns gives a rank r1 + r2 + ... adapter with s = 1 and the same sum:
    [s1 B1, s2 B2] @ [A1; A2] = s1 B1 A1 + s2 B2 A2. A module one adapter does not target gets
    zero blocks there, so every module has the same rank. Written over `out_dir` (which may be
    one of the inputs: everything is read first)."""
    import torch
    from safetensors.torch import load_file, save_file

    configs = [json.loads((Path(d) / ADAPTER_CONFIG).read_text()) for d in adapter_dirs]
    for d, c in zip(adapter_dirs, configs):
        if c.get("peft_type") != "LORA" or c.get("use_dora") or c.get("rank_pattern") or c.get("alpha_pattern"):
            raise ValueError(f"{d}: only plain LoRA adapters (uniform rank, no DoRA) can be combined")
    weights = [load_file(Path(d) / ADAPTER_WEIGHTS) for d in adapter_dirs]
    ranks = [c["r"] for c in configs]
    scales = [c["lora_alpha"] / (c["r"] ** 0.5 if c.get("use_rslora") else c["r"]) for c in configs]
    modules = sorted({k.removesuffix(".lora_A.weight") for w in weights for k in w if k.endswith(".lora_A.weight")})
    combined = {}
    for module in modules:
        a_key, b_key = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
        some = next(w for w in weights if a_key in w)
        (_, fan_in), (fan_out, _) = some[a_key].shape, some[b_key].shape
        like = {"dtype": some[a_key].dtype}
        a_blocks = [w[a_key] if a_key in w else torch.zeros(r, fan_in, **like) for w, r in zip(weights, ranks)]
        b_blocks = [w[b_key] * s if b_key in w else torch.zeros(fan_out, r, **like)
                    for w, r, s in zip(weights, ranks, scales)]
        combined[a_key], combined[b_key] = torch.cat(a_blocks, 0).contiguous(), torch.cat(b_blocks, 1).contiguous()
    rank = sum(ranks)
    targets = set()
    for c in configs:
        targets.update([c["target_modules"]] if isinstance(c["target_modules"], str) else c["target_modules"])
    config = {**configs[-1], "r": rank, "lora_alpha": rank, "use_rslora": False, "target_modules": sorted(targets)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(combined, out_dir / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return out_dir


def save_merged(model, tokenizer, out_dir: Path) -> Path:
    """Base weights with the LoRA update folded in: a plain transformers directory.

    Folds the update into `model`'s own weights (W <- W + (alpha/r) B A): use it last.
    """
    merged = model.merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def save_full(model, tokenizer, out_dir: Path) -> Path | None:
    """A full fine-tune's weights as a plain transformers directory (config, safetensors, tokenizer).

    Every rank calls it: get_model_state_dict(full_state_dict, cpu_offload) gathers the FSDP2 shards
    into whole tensors on rank 0's CPU (with one process, the weights as they are); rank 0 writes
    them to a temp dir and renames it, and gets the path (the other ranks None)."""
    import shutil

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from rlhf_engine.distributed import world

    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not world().is_main:
        return None
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def merge_adapter_dir(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """A saved adapter applied to the base model on disk and merged, written to `out_dir`.

    In the base's own dtype (a bf16 base merges to bf16, not to float32 at twice the size).
    Written to a sibling temporary directory first and renamed, so `out_dir` is never half there.
    """
    import shutil

    from peft import PeftModel

    from rlhf_engine.models import loading

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = PeftModel.from_pretrained(loading.load_causal_lm(Path(base_dir), dtype="auto"), Path(adapter_dir))
    save_merged(model, loading.load_tokenizer(Path(base_dir)), tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
