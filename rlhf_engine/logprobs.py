"""Per-sequence log-probabilities of completion tokens, computing vocabulary logits only there.

A causal LM's hidden state at position t predicts token t+1. Running the LM head over every
position wastes (prompt + padding) / total of its FLOPs and memory, the largest single tensor in
the step ([tokens, vocab]). We run the decoder, gather the hidden states that predict completion
tokens, and project only those.

Both layouts address those positions with flat indices (`pred_index`, `targets`, `seq`) so the
device never has to tell the host how many there are: the plain layout's are computed from its
mask while it is still on the CPU, and the per-sequence counts come from an index_add (bincount
and boolean-mask indexing make the host wait for the GPU to learn their output size). The
forwards ask for no KV cache (`use_cache=False`; transformers builds one by default, from
config.use_cache): nothing here reads it.
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
    logits, targets, rows, num_rows = _completion_logits(model, batch, temperature)
    token_logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    sums, counts = _per_sequence(token_logps, rows, num_rows)
    if return_token_logps:
        return sums, counts, token_logps, rows
    return sums, counts


def completion_logps_and_hits(model, batch: dict):
    """(sums, counts) as `completion_logps`, and how many completion tokens are the model's most
    likely next token (a 0-d tensor; hits / counts.sum() is OpenAI's mean token accuracy). From
    the same logits: no second forward."""
    logits, targets, rows, num_rows = _completion_logits(model, batch, 1.0)
    token_logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    sums, counts = _per_sequence(token_logps, rows, num_rows)
    return sums, counts, (logits.argmax(-1) == targets).sum()


def _completion_logits(model, batch: dict, temperature: float):
    """Float logits at the positions that predict completion tokens, with those tokens, their
    sequence ids and the number of sequences."""
    lm = _unwrap(model)
    device = next(lm.parameters()).device
    if "pred_index" in batch:
        positions = batch["position_ids"].to(device)
        pred_index, targets, rows, num_rows = batch["pred_index"], batch["targets"], batch["seq"], batch["num_seqs"]
    else:  # the model derives positions from the mask
        positions = None
        pred_index, targets, rows = _plain_addresses(batch["input_ids"], batch["loss_mask"])
        num_rows = batch["input_ids"].shape[0]
    hidden = lm.get_decoder()(input_ids=batch["input_ids"].to(device),
                              attention_mask=batch["attention_mask"].to(device),
                              position_ids=positions, use_cache=False).last_hidden_state
    selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pred_index.to(device))
    logits = lm.get_output_embeddings()(selected).float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits, targets.to(device), rows.to(device), num_rows


def _per_sequence(token_logps: torch.Tensor, rows: torch.Tensor, num_rows: int):
    device = token_logps.device
    sums = torch.zeros(num_rows, device=device, dtype=token_logps.dtype).index_add_(0, rows, token_logps)
    counts = torch.zeros(num_rows, device=device, dtype=torch.long).index_add_(0, rows, torch.ones_like(rows))
    return sums, counts


def _plain_addresses(input_ids: torch.Tensor, loss_mask: torch.Tensor):
    """(pred_index, targets, rows) of a right-padded batch, row-major: the hidden state at flat
    position b * T + t predicts input_ids[b, t + 1] for every completion token (loss_mask) there.
    Run on the collated CPU tensors, this costs the device no synchronisation."""
    width = input_ids.shape[1]
    rows, cols = loss_mask[:, 1:].nonzero(as_tuple=True)
    return rows * width + cols, input_ids[rows, cols + 1], rows
