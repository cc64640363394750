"""Adapter export in the standard PEFT layout (safetensors; nothing pickled)."""

from __future__ import annotations

import json
from pathlib import Path


def save_adapter(model, out_dir: Path, base_model_name: str) -> Path:
    """adapter_config.json + adapter_model.safetensors, loadable by peft.PeftModel.from_pretrained."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    config_path = out_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    # The registry name, not a cache path from the training machine.
    config["base_model_name_or_path"] = base_model_name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return out_dir


def save_merged(model, tokenizer, out_dir: Path) -> Path:
    """Base weights with the LoRA update folded in: a plain transformers directory.

    Folds the update into `model`'s own weights (W <- W + (alpha/r) B A): use it last.
    """
    merged = model.merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


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
