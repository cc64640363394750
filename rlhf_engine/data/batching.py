"""Collate tokenised pairs into one right-padded batch: all chosen rows, then all rejected rows.

One forward over both halves shares the weights' memory traffic; `loss_mask` marks the completion
tokens (the targets), so logits are only ever computed where the loss reads them.
"""

from __future__ import annotations

import torch

from rlhf_engine.data.tokenize import TokenizedPair


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int,
            masks: list[list[bool] | None] | None = None) -> dict[str, torch.Tensor]:
    """rows: (prompt_ids, completion_ids) per sequence; masks[i]: which completion tokens of row i
    are targets (None: all)."""
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        input_ids[i, :n] = torch.tensor(prompt + completion)
        attention_mask[i, :n] = 1
        mask = masks[i] if masks else None
        loss_mask[i, len(prompt):n] = True if mask is None else torch.tensor(mask, dtype=torch.bool)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def collate_pairs(pairs: list[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    rows = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    return collate(rows, pad_id, [p.chosen_mask for p in pairs] + [p.rejected_mask for p in pairs])


def padding_fraction(batch: dict[str, torch.Tensor]) -> float:
    mask = batch["attention_mask"]
    return 1.0 - mask.sum().item() / mask.numel()
