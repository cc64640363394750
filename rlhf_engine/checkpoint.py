"""Resumable checkpoints: the adapter (PEFT layout) plus the trainer state beside it, laid out as
rlhf_engine/layout.py says.

state.pt holds only tensors and plain containers and is read back with weights_only=True, so
loading a checkpoint never executes pickled code.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf_engine.layout import ADAPTER, ADAPTER_WEIGHTS, STATE


@dataclass
class TrainerState:
    step: int  # optimizer steps completed
    trained_tokens: int


def save(path: Path, model, optimizer, scheduler, state: TrainerState) -> Path:
    """Write to a temp dir, then rename: a crash mid-save never leaves a half checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / ADAPTER, safe_serialization=True)
    torch.save({
        "step": state.step,
        "trained_tokens": state.trained_tokens,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python_rng": list(_flatten_random_state(random.getstate())),
    }, tmp / STATE)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def load(path: Path, model, optimizer, scheduler) -> TrainerState:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    weights = load_file(path / ADAPTER / ADAPTER_WEIGHTS)
    set_peft_model_state_dict(model, weights)
    blob = torch.load(path / STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    if blob["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    random.setstate(_unflatten_random_state(blob["python_rng"]))
    return TrainerState(step=int(blob["step"]), trained_tokens=int(blob["trained_tokens"]))


# random.getstate() is (version, tuple_of_625_ints, gauss_next); store it as a flat list of ints.
def _flatten_random_state(st):
    version, internal, gauss = st
    return [version, *internal, -1 if gauss is None else 1, 0.0 if gauss is None else gauss]


def _unflatten_random_state(flat):
    version, internal, has_gauss, gauss = flat[0], tuple(int(x) for x in flat[1:-2]), flat[-2], flat[-1]
    return (int(version), internal, None if has_gauss == -1 else float(gauss))
