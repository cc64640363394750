"""Generation backends: token ids in, sampled completions out.

    generate(prompts_token_ids, *, max_new_tokens, temperature, top_p, stop_token_ids, seed)
        -> [Completion(token_ids, logprob_sum, finished)]

`HFBackend` is a short sampling loop over a transformers model with a KV cache (nanoGPT style,
so every step is visible): left-padded prompts, one prefill, one token per step, rows leave the
batch as soon as they emit an end-of-turn token. Identical prompts are prefilled once and their
cache rows copied: REBEL's two responses per prompt and REFUEL's two continuations of the same
dialogue prefix share one prefill (on CPU the prefill of a long dialogue costs more than the
decoding). `make_backend` picks vLLM only when the package and a GPU are both present.

`Completion.logprob_sum` is the sampler's own sum of log pi(token) (temperature-scaled logits); it
is diagnostic only: training recomputes log-probs through rlhf_engine.logprobs, so collection and
training share one code path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # up to and including the stop token when finished
    logprob_sum: float | None
    finished: bool  # emitted a stop token before max_new_tokens


class Backend(Protocol):
    def generate(self, prompts_token_ids: list[list[int]], *, max_new_tokens: int, temperature: float,
                 top_p: float, stop_token_ids: list[int], seed: int) -> list[Completion]: ...


def stop_ids(tokenizer) -> list[int]:
    """End-of-turn tokens: the tokenizer's EOS plus the chat template's turn terminator, if any."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator):
    """Sample from softmax(logits / T) restricted to the top-p nucleus; also return log pi(token)
    under the temperature-scaled distribution (before the nucleus cut, as training computes it)."""
    if temperature <= 0:  # greedy
        tok = logits.argmax(-1)
        return tok, torch.zeros_like(tok, dtype=torch.float)
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    probs = logp.exp()
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    tok = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


class HFBackend:
    """Sampling from a transformers causal LM (optionally a peft model with its adapter disabled)."""

    def __init__(self, model, pad_id: int, *, use_adapter: bool = True, batch_size: int = 32):
        self.model, self.pad_id, self.use_adapter, self.batch_size = model, pad_id, use_adapter, batch_size

    def _adapter_context(self):
        if not self.use_adapter and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    @torch.no_grad()
    def generate(self, prompts_token_ids, *, max_new_tokens, temperature=1.0, top_p=1.0, stop_token_ids=(),
                 seed=0) -> list[Completion]:
        gen = torch.Generator().manual_seed(seed)
        out: list[Completion | None] = [None] * len(prompts_token_ids)
        # Group identical prompts, then batch the unique ones by length (less padding).
        unique: dict[tuple, list[int]] = {}
        for i, p in enumerate(prompts_token_ids):
            unique.setdefault(tuple(p), []).append(i)
        keys = sorted(unique, key=len)
        was_training = self.model.training
        self.model.eval()
        try:
            with self._adapter_context():
                rows_done = 0
                while rows_done < len(keys):
                    # Fill a batch up to batch_size rows (after duplication), at least one prompt.
                    chunk, rows = [], 0
                    for k in keys[rows_done:]:
                        if chunk and rows + len(unique[k]) > self.batch_size:
                            break
                        chunk.append(k)
                        rows += len(unique[k])
                    rows_done += len(chunk)
                    results = self._generate_batch([list(k) for k in chunk], [len(unique[k]) for k in chunk],
                                                   max_new_tokens, temperature, top_p, set(stop_token_ids), gen)
                    targets = [i for k in chunk for i in unique[k]]
                    for i, completion in zip(targets, results):
                        out[i] = completion
        finally:
            self.model.train(was_training)
        return out

    def _generate_batch(self, prompts, copies, max_new_tokens, temperature, top_p, stops, gen):
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's last token sits in the last column
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        prefill = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=1)
        cache = prefill.past_key_values
        # Copy each unique prompt's cache row once per requested sample.
        expand = torch.repeat_interleave(torch.arange(len(prompts), device=device),
                                         torch.tensor(copies, device=device))
        cache.reorder_cache(expand)
        logits, mask, last_pos = prefill.logits[expand, -1], mask[expand], positions[expand, -1]

        n = len(expand)
        tokens = [[] for _ in range(n)]
        logps = [0.0] * n
        finished = [False] * n
        active = torch.arange(n, device=device)  # original row of each batch row
        for step_i in range(max_new_tokens):
            tok, lp = sample_next(logits, temperature, top_p, gen)
            keep = []
            for j, (row, t, l) in enumerate(zip(active.tolist(), tok.tolist(), lp.tolist())):
                tokens[row].append(t)
                logps[row] += l
                if t in stops:
                    finished[row] = True
                else:
                    keep.append(j)
            if not keep or step_i == max_new_tokens - 1:
                break
            if len(keep) < len(active):  # drop finished rows from the batch and the cache
                sel = torch.tensor(keep, device=device)
                cache.batch_select_indices(sel)
                active, tok, mask, last_pos = active[sel], tok[sel], mask[sel], last_pos[sel]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last_pos = last_pos + 1
            step = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                              past_key_values=cache, use_cache=True)
            logits = step.logits[:, -1]
        return [Completion(tokens[i], logps[i], finished[i]) for i in range(n)]


def make_backend(model, tokenizer, *, use_adapter: bool = True, batch_size: int = 32) -> Backend:
    """vLLM when importable and CUDA is present, else the HF loop."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        from rlhf_engine.rollout.vllm_backend import VLLMBackend

        return VLLMBackend.for_model(model, tokenizer, use_adapter=use_adapter)
    return HFBackend(model, tokenizer.pad_token_id, use_adapter=use_adapter, batch_size=batch_size)
