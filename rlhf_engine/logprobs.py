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


def completion_logps(model, batch: dict, *, temperature: float = 1.0, return_token_logps: bool = False):
    """Sum of log pi(token) over each row's completion, and its token count.

    `batch` is either the plain right-padded layout of rlhf_engine/data/batching.py (one sequence
    per row, `loss_mask` marks completion tokens) or a prefix-shared pack from
    rlhf_engine/packing.py (`pred_index`/`targets`/`seq` address the completion tokens; sequence
    i < n is pair i's chosen side, n + i its rejected side). Both give the same numbers.

    Returns (sums [seqs], counts [seqs]) and, if asked, the flat per-token log-probs with their
    sequence ids (row ids in the plain layout).
    """
    lm = _unwrap(model)
    device = next(lm.parameters()).device
    input_ids = batch["input_ids"].to(device)

    if "pred_index" in batch:
        hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device),
                                  position_ids=batch["position_ids"].to(device)).last_hidden_state
        selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["pred_index"].to(device))
        targets = batch["targets"].to(device)
        rows = batch["seq"].to(device)
        num_rows = batch["num_seqs"]
    else:
        attention_mask = batch["attention_mask"].to(device)
        loss_mask = batch["loss_mask"].to(device)
        hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        predicts = loss_mask[:, 1:]  # hidden[:, t] predicts input_ids[:, t + 1]
        selected = hidden[:, :-1][predicts]
        targets = input_ids[:, 1:][predicts]
        num_rows = input_ids.shape[0]
        rows = torch.arange(num_rows, device=device)[:, None].expand_as(predicts)[predicts]

    logits = lm.get_output_embeddings()(selected).float()
    if temperature != 1.0:
        logits = logits / temperature
    token_logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    sums = torch.zeros(num_rows, device=device, dtype=token_logps.dtype).index_add_(0, rows, token_logps)
    counts = torch.bincount(rows, minlength=num_rows)
    if return_token_logps:
        return sums, counts, token_logps, rows
    return sums, counts
