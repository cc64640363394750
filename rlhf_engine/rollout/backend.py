"""`make_backend`: the generation backend a job samples with, vLLM when it can run, else HF.

Apart from both backends, so that neither imports the other.
"""

from __future__ import annotations

import importlib.util

from rlhf_engine.rollout.generation import Backend


def make_backend(model, tokenizer, *, use_adapter: bool = True, batch_size: int = 32) -> Backend:
    """vLLM when importable and CUDA is present, else the HF loop."""
    import torch

    from rlhf_engine.rollout.hf_backend import HFBackend

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        from rlhf_engine.rollout.vllm_backend import VLLMBackend

        return VLLMBackend.for_model(model, tokenizer, use_adapter=use_adapter)
    return HFBackend(model, tokenizer.pad_token_id, use_adapter=use_adapter, batch_size=batch_size)
