"""One numeric precision per job, decided once and entered by every forward pass.

The methods here compare two forwards of the same weights: the policy against the reference (DPO),
the policy against log pi_t stored at collection (REBEL, REFUEL). Where those forwards run at
different precisions the comparison is off before training starts: on the tiny model bf16
autocast moves a sequence's log-prob by ~0.03 nats, as much as eta (R - R') in REBEL, so the
step-0 log-ratio and DPO margin are not 0. Training, the reference pass, log pi_t at collection
and evaluation therefore all run inside the same `Precision.autocast()`.

    auto  bf16 weights and bf16 autocast on a CUDA device that has bf16, fp32 elsewhere
    bf16  bf16 autocast on any device (on CPU the weights stay fp32: it has no fast bf16 storage)
    fp32  fp32 weights, no autocast

Trainable parameters (LoRA, a reward model's score head) are fp32 in every mode: an AdamW update
of ~1e-4 on a weight of ~0.02 is below bf16's resolution there and would round away. So a job that
trains every weight (`finetuning_type: "full"`) keeps all of them fp32 (`decide(..., full=True)`):
its forwards compute in bf16 through autocast, or, sharded, FSDP2's bf16 copies of the parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    device: str  # where the model lives: "cuda", "cuda:1", "cpu"
    weights: torch.dtype  # dtype the frozen base weights are loaded in
    compute: torch.dtype | None  # autocast dtype of every forward; None: the weights' own dtype

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    def autocast(self):
        """The context every forward of the job runs in (a no-op context without autocast)."""
        return torch.autocast(self.device_type, dtype=self.compute, enabled=self.compute is not None)

    @property
    def tag(self) -> str:
        """What determines the numbers a forward produces, e.g. "cuda/bfloat16/autocast-bfloat16": a
        cache of forward outputs (rlhf_engine/reference.py) must be keyed by it."""
        compute = f"autocast-{_name(self.compute)}" if self.compute is not None else "no-autocast"
        return f"{self.device_type}/{_name(self.weights)}/{compute}"

    @classmethod
    def native(cls, model) -> Precision:
        """No autocast: each forward runs in the dtype of the model's weights, on their device."""
        p = next(model.parameters())
        return cls(str(p.device), p.dtype, None)


def default_device() -> str:
    """Where a job runs: the first GPU when there is one, else the CPU. Under torchrun each rank
    has its own GPU, the one its LOCAL_RANK names (rlhf_engine/distributed.py)."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{os.environ['LOCAL_RANK']}" if int(os.environ.get("WORLD_SIZE", 1)) > 1 else "cuda"


def is_cuda(device: str) -> bool:
    """Whether `device` ("cuda", "cuda:1", a torch.device) is a GPU: the engine's one test of it."""
    return torch.device(device).type == "cuda"


def bf16_supported(device: str) -> bool:
    """Whether `device` computes in bfloat16 natively: a CUDA GPU from Ampere on. torch's
    default (including_emulation=True) also says yes on older GPUs, where bf16 is emulated:
    without the speed it is chosen for."""
    return is_cuda(device) and torch.cuda.is_bf16_supported(including_emulation=False)


def decide(setting: str, device: str, *, full: bool = False) -> Precision:
    """The job's precision for `setting` ("auto", "bf16", "fp32"; spec.TrainConfig.precision) on `device`;
    `full`: every weight trains, so every weight is fp32 (the compute is the setting's)."""
    cuda = is_cuda(device)
    if setting == "fp32" or (setting == "auto" and not bf16_supported(device)):
        return Precision(device, torch.float32, None)
    if setting not in ("auto", "bf16"):
        raise ValueError(f"unknown precision {setting!r}")
    if cuda and not bf16_supported(device):
        raise ValueError(f"precision 'bf16' asked for, but {torch.cuda.get_device_name(device)} has no bf16")
    return Precision(device, torch.bfloat16 if cuda and not full else torch.float32, torch.bfloat16)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
