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
    """Base weights with the LoRA update folded in: a plain transformers directory."""
    merged = model.merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)
