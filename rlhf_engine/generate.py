"""Greedy chat answers from a model (with or without an adapter): demos and evaluation."""

from __future__ import annotations

import torch

from rlhf_engine.data.tokenize import render_prompt


@torch.no_grad()
def answer(model, tokenizer, messages, *, max_new_tokens: int = 64) -> str:
    """Messages are dicts or rlhf_engine Message objects; returns the assistant's reply text."""
    from rlhf_engine.data.formats import Message

    msgs = [m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages]
    ids = tokenizer(render_prompt(tokenizer, msgs), add_special_tokens=False, return_tensors="pt").input_ids
    ids = ids.to(next(model.parameters()).device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
