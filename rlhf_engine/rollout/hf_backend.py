"""The transformers generation backend: a short sampling loop with a KV cache.

`HFBackend` is nanoGPT style, so every step is visible: left-padded prompts, one prefill, one
token per step, rows leave the batch as soon as they emit an end-of-turn token. Identical prompts
are prefilled once and their cache rows copied: REBEL's two responses per prompt and REFUEL's two
continuations of the same dialogue prefix share one prefill (on CPU the prefill of a long dialogue
costs more than the decoding).

Each row samples from its own stream (rlhf_engine/rollout/generation.py, `row_seeds`). The
streams live on the model's device (a CUDA sampler refuses a CPU generator), and the decode loop
waits for the device once per step, to learn which rows stopped; tokens and log-probs stay there
until the batch is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from rlhf_engine.rollout.generation import Completion, row_seeds


def row_uniforms(seeds: Sequence[int], steps: int, device) -> torch.Tensor:
    """[rows, steps] uniforms in [0, 1): row i's are the first `steps` draws of a generator on
    `device` seeded with seeds[i], so they do not depend on which rows share its batch."""
    draws = [torch.rand(steps, generator=torch.Generator(device=device).manual_seed(s), device=device,
                        dtype=torch.float64) for s in seeds]
    return torch.stack(draws) if draws else torch.empty((0, steps), device=device, dtype=torch.float64)


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor | None):
    """Sample from softmax(logits / T) restricted to the top-p nucleus, one uniform per row; also
    return log pi(token) under the temperature-scaled distribution (before the nucleus cut, as
    training computes it)."""
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
    tok = inverse_cdf(probs, uniforms)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the first index whose cumulative weight exceeds u * total: a draw from the
    (unnormalised) weights that uses exactly one uniform, so each row can bring its own.

    Float64, so that a token far below float32's resolution of a running sum near 1 keeps its
    probability; a zero weight never holds an interval, and the clamp only guards u * total
    rounding up to the total."""
    cdf = weights.double().cumsum(-1)
    tok = torch.searchsorted(cdf, (uniforms.double() * cdf[:, -1])[:, None], right=True).squeeze(-1)
    return tok.clamp_(max=weights.shape[-1] - 1)


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
        seeds = row_seeds(seed, len(prompts_token_ids))
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
                    targets = [i for k in chunk for i in unique[k]]
                    results = self._generate_batch([list(k) for k in chunk], [len(unique[k]) for k in chunk],
                                                   [seeds[i] for i in targets], max_new_tokens, temperature, top_p,
                                                   stop_token_ids)
                    for i, completion in zip(targets, results):
                        out[i] = completion
        finally:
            self.model.train(was_training)
        return out

    def _generate_batch(self, prompts, copies, seeds, max_new_tokens, temperature, top_p, stop_token_ids):
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
        expand = torch.tensor([i for i, c in enumerate(copies) for _ in range(c)], device=device)
        cache.reorder_cache(expand)
        logits, mask, last_pos = prefill.logits[expand, -1], mask[expand], positions[expand, -1]

        n = len(seeds)
        uniforms = row_uniforms(seeds, max_new_tokens, device) if temperature > 0 else None
        stops = torch.tensor(sorted(set(stop_token_ids)), dtype=torch.long, device=device)
        tokens = torch.full((n, max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        logp_sums = torch.zeros(n, dtype=torch.float64, device=device)
        lengths, finished = [max_new_tokens] * n, [False] * n
        rows = list(range(n))  # original row of each batch row
        active = torch.arange(n, device=device)
        for step_i in range(max_new_tokens):
            tok, lp = sample_next(logits, temperature, top_p, None if uniforms is None else uniforms[active, step_i])
            tokens[active, step_i] = tok
            logp_sums.index_add_(0, active, lp.double())
            stopped = torch.isin(tok, stops).tolist()  # the step's one wait for the device
            for row, s in zip(rows, stopped):
                if s:
                    finished[row], lengths[row] = True, step_i + 1
            keep = [j for j, s in enumerate(stopped) if not s]
            if not keep or step_i == max_new_tokens - 1:
                break
            if len(keep) < len(rows):  # drop finished rows from the batch and the cache
                sel = torch.tensor(keep, device=device)
                cache.batch_select_indices(sel)
                rows = [rows[j] for j in keep]
                active, tok, mask, last_pos = active[sel], tok[sel], mask[sel], last_pos[sel]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last_pos = last_pos + 1
            step = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                              past_key_values=cache, use_cache=True)
            logits = step.logits[:, -1]
        tokens, logp_sums = tokens.tolist(), logp_sums.tolist()
        return [Completion(tokens[i][:lengths[i]], logp_sums[i], finished[i]) for i in range(n)]
