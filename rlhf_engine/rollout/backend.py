"""`make_backend`: the generation backend a job samples with, vLLM when it can run, else HF.

Apart from both backends, so that neither imports the other. A job on N ranks samples with HF on
every rank: vLLM sets up a torch.distributed group of its own, and one engine per rank inside the
job's group has never run.
"""

from __future__ import annotations

import importlib.util

from rlhf_engine.rollout.generation import Backend


def make_backend(model, tokenizer, *, use_adapter: bool = True, batch_size: int = 32) -> Backend:
    """vLLM when importable, CUDA is present and the job runs as one process; else the HF loop."""
    import torch

    from rlhf_engine.distributed import world
    from rlhf_engine.rollout.hf_backend import HFBackend

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() and world().size == 1:
        from rlhf_engine.rollout.vllm_backend import VLLMBackend

        return VLLMBackend.for_model(model, tokenizer, use_adapter=use_adapter)
    return HFBackend(model, tokenizer.pad_token_id, use_adapter=use_adapter, batch_size=batch_size)
