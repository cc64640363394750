"""Where a job's outputs sit in its output directory: the one statement of the layout.

    <output_dir>/checkpoints/step-000010/adapter/   adapter_config.json, adapter_model.safetensors
    <output_dir>/checkpoints/step-000010/sharded/   a full fine-tune on N ranks: every rank's shards of
                                                    the weights and optimizer state (torch.distributed.checkpoint)
    <output_dir>/checkpoints/step-000010/state.pt   optimizer, scheduler, RNG, position in the data; a full
                                                    fine-tune on one process: also every weight
    <output_dir>/adapter/                           the final adapter (PEFT layout)
    <output_dir>/merged/                            a plain transformers directory: a full fine-tune's
                                                    weights, or the base with the adapter folded in

The engine writes it (train.py, checkpoint.py, export.py) and the service names the same paths as
storage keys (service/shared/artifacts.py) and finds resumable checkpoints by them, so both read
it from here. Pure Python, no torch: the API process imports it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"  # the adapter's directory, inside a checkpoint and at the end of a job
STATE = "state.pt"  # a checkpoint's trainer state, beside its adapter
SHARDED = "sharded"  # a sharded checkpoint's weights and optimizer state, beside its state.pt
MERGED = "merged"  # a job's whole model: config, safetensors and tokenizer
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's file names inside an adapter directory
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def checkpoint_path(step: int) -> PurePosixPath:
    """checkpoints/step-000010: a checkpoint's place below the output directory (or a job's
    storage key); zero-padded so that names sort by step."""
    return PurePosixPath(CHECKPOINTS, f"step-{int(step):06d}")


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / checkpoint_path(step)
