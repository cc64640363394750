"""vLLM generation backend (GPU only; vllm is imported lazily, never on CPU machines).

The policy is a LoRA adapter over a base model on disk. vLLM serves the base weights once; the
current adapter is written to a scratch directory before each call and attached as a
LoRARequest with a fresh id, so pi_t is always the policy being trained. Prefix caching shares
the KV of identical prompt prefixes (REFUEL's two continuations, REBEL's two responses).
Not exercised in CI (no GPU); the interface matches rlhf_engine.rollout.hf_backend.HFBackend, seeds
included: row i samples with row_seeds(seed, n)[i], vLLM's per-request generator.

vLLM's V1 engine runs its core in a child process, which a daemonic process may not start
("daemonic processes are not allowed to have children"); a Celery prefork job process is one.
There the engine runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set before vllm is imported).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import tempfile
from pathlib import Path

from rlhf_engine.rollout.generation import Completion, row_seeds

_ENGINES: dict[str, object] = {}  # one vLLM engine per base model path, shared by policy and user
_IDS = itertools.count(1)


def engine_environment() -> dict[str, str]:
    """vLLM settings this process needs before it builds an engine: in-process when daemonic.

    billiard (Celery's pool) installs its process object as multiprocessing's current process, so
    multiprocessing sees its daemon flag."""
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if multiprocessing.current_process().daemon else {}


class VLLMBackend:
    def __init__(self, llm, peft_model=None):
        self.llm, self.peft_model = llm, peft_model
        self.scratch = Path(tempfile.mkdtemp(prefix="vllm-lora-"))

    @classmethod
    def for_model(cls, model, tokenizer, *, use_adapter: bool = True):
        os.environ.update(engine_environment())  # before vllm is imported: it may read it then
        from vllm import LLM

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        path = str(base.config._name_or_path)
        if path not in _ENGINES:
            rank = max(c.r for c in model.peft_config.values()) if hasattr(model, "peft_config") else 8
            _ENGINES[path] = LLM(model=path, enable_lora=True, enable_prefix_caching=True,
                                 gpu_memory_utilization=0.3,  # the training copy shares the GPU
                                 max_lora_rank=max(8, 1 << (rank - 1).bit_length()))
        return cls(_ENGINES[path], model if use_adapter and hasattr(model, "peft_config") else None)

    def generate(self, prompts_token_ids, *, max_new_tokens, temperature=1.0, top_p=1.0, stop_token_ids=(),
                 seed=0) -> list[Completion]:
        from vllm import SamplingParams, TokensPrompt
        from vllm.lora.request import LoRARequest

        lora = None
        if self.peft_model is not None:  # sync the adapter being trained
            n = next(_IDS)
            self.peft_model.save_pretrained(self.scratch / str(n))
            lora = LoRARequest(f"policy-{n}", n, str(self.scratch / str(n)))
        # One seed per row: identical prompts (the two samples of a pair) must not get identical draws.
        params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                 stop_token_ids=list(stop_token_ids), seed=s, logprobs=0)
                  for s in row_seeds(seed, len(prompts_token_ids))]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts_token_ids], params,
                                 lora_request=lora, use_tqdm=False)
        result = []
        for o in outs:
            c = o.outputs[0]
            ids = list(c.token_ids)
            lp = sum(next(iter(d.values())).logprob for d in c.logprobs) if c.logprobs else None
            result.append(Completion(ids, lp, c.finish_reason == "stop"))
        return result
