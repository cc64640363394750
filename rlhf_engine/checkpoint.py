"""Resumable checkpoints, laid out as rlhf_engine/layout.py says: the trained weights and the
optimizer state, with the scheduler, RNG and position in state.pt beside them.

    LoRA                 adapter/ (PEFT layout); the optimizer's state_dict in state.pt
    full, one process    every weight and the optimizer state, by parameter name, in state.pt
    full, sharded        sharded/: torch.distributed.checkpoint of the same two, each rank writing
                         its own shards; rank 0 writes state.pt

A full fine-tune's state goes through torch.distributed.checkpoint.state_dict (names, not
parameter ids), so either kind resumes on any number of ranks: DCP reshards on load, and a
one-process state dict is distributed as a full one. state.pt holds only tensors and plain
containers and is read back with weights_only=True, so loading a checkpoint never executes
pickled code. Written to a temp dir, then renamed: a crash mid-save never leaves a half checkpoint.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf_engine import distributed
from rlhf_engine.layout import ADAPTER, ADAPTER_WEIGHTS, SHARDED, STATE


@dataclass
class TrainerState:
    step: int  # optimizer steps completed
    trained_tokens: int


def _is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def save(path: Path, model, optimizer, scheduler, state: TrainerState, *, sharded: bool = False) -> Path:
    """The checkpoint at `path`. `sharded`: every rank calls it (the weights are FSDP2 shards)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    main = distributed.world().is_main
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    blob = {
        "step": state.step,
        "trained_tokens": state.trained_tokens,
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python_rng": list(_flatten_random_state(random.getstate())),
    }
    if _is_lora(model):
        model.save_pretrained(tmp / ADAPTER, safe_serialization=True)
        blob["optimizer"] = optimizer.state_dict()
    elif sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        distributed.barrier()  # tmp exists
        weights, optim = get_state_dict(model, optimizer)
        dcp.save({"model": weights, "optimizer": optim}, checkpoint_id=tmp / SHARDED)  # returns once all wrote
    else:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        blob["model"], blob["optimizer"] = get_state_dict(model, optimizer)
    if main:
        torch.save(blob, tmp / STATE)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    if sharded:
        distributed.barrier()  # no rank goes on (and saves again) before the checkpoint is in place
    return path


def load(path: Path, model, optimizer, scheduler, *, sharded: bool = False) -> TrainerState:
    """Restore `path` into model, optimizer and scheduler (`sharded`: on every rank) and the RNG."""
    path = Path(path)
    blob = torch.load(path / STATE, map_location="cpu", weights_only=True)
    if _is_lora(model):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(path / ADAPTER / ADAPTER_WEIGHTS))
        optimizer.load_state_dict(blob["optimizer"])
    else:
        _load_full(path, blob, model, optimizer, sharded)
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    if blob["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    random.setstate(_unflatten_random_state(blob["python_rng"]))
    return TrainerState(step=int(blob["step"]), trained_tokens=int(blob["trained_tokens"]))


def _load_full(path: Path, blob: dict, model, optimizer, sharded: bool) -> None:
    """Every weight and the optimizer state, from DCP shards (any number of ranks wrote them) or a
    one-process state dict (given whole to each rank, which keeps its shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    if (path / SHARDED).is_dir():
        import torch.distributed.checkpoint as dcp

        weights, optim = get_state_dict(model, optimizer)  # the shapes to load into (optimizer state made)
        state = {"model": weights, "optimizer": optim}
        dcp.load(state, checkpoint_id=path / SHARDED)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    else:
        set_state_dict(model, optimizer, model_state_dict=blob["model"], optim_state_dict=blob["optimizer"],
                       options=StateDictOptions(full_state_dict=sharded))


# random.getstate() is (version, tuple_of_625_ints, gauss_next); store it as a flat list of ints.
def _flatten_random_state(st):
    version, internal, gauss = st
    return [version, *internal, -1 if gauss is None else 1, 0.0 if gauss is None else gauss]


def _unflatten_random_state(flat):
    version, internal, has_gauss, gauss = flat[0], tuple(int(x) for x in flat[1:-2]), flat[-2], flat[-1]
    return (int(version), internal, None if has_gauss == -1 else float(gauss))
