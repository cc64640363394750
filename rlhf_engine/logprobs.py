"""Per-sequence log-probabilities of completion tokens, computing vocabulary logits only there.

A causal LM's hidden state at position t predicts token t+1. Running the LM head over every
position wastes (prompt + padding) / total of its FLOPs and memory, the largest single tensor in
the step ([tokens, vocab]). We run the decoder, gather the hidden states that predict completion
tokens, and project only those.
"""

from __future__ import annotations

import torch


def _unwrap(model):
    """The transformers model under a peft wrapper (LoRA layers stay injected inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def completion_logps(model, batch: dict[str, torch.Tensor], *, temperature: float = 1.0,
                     return_token_logps: bool = False):
    """Sum of log pi(token) over each row's completion, and its token count.

    Returns (sums [rows], counts [rows]) and, if asked, the flat per-token log-probs with their row ids.
    """
    lm = _unwrap(model)
    device = next(lm.parameters()).device
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    loss_mask = batch["loss_mask"].to(device)

    hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    predicts = loss_mask[:, 1:]  # hidden[:, t] predicts input_ids[:, t + 1]
    selected = hidden[:, :-1][predicts]
    logits = lm.get_output_embeddings()(selected).float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, 1:][predicts]
    token_logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    rows = torch.arange(input_ids.shape[0], device=device)[:, None].expand_as(predicts)[predicts]
    sums = torch.zeros(input_ids.shape[0], device=device, dtype=token_logps.dtype).index_add_(0, rows, token_logps)
    counts = torch.bincount(rows, minlength=input_ids.shape[0])
    if return_token_logps:
        return sums, counts, token_logps, rows
    return sums, counts
