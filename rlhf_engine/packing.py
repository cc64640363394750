"""Prefix-shared, padding-free packing of preference pairs for one forward pass.

The plain layout (rlhf_engine/data/batching.py) runs every pair as two right-padded rows,
`prompt + chosen` and `prompt + rejected`: the prompt is computed twice and the rows are padded to
the longest one. Here each pair becomes one *segment*

    [ prompt (P) | chosen (C) | rejected (R) ]      position ids 0..P-1 | P..P+C-1 | P..P+R-1

with an attention mask under which chosen tokens see the prompt and earlier chosen tokens,
rejected tokens see the prompt and earlier rejected tokens (never the chosen ones), and prompt
tokens see earlier prompt tokens. Every hidden state is then exactly what the plain layout
computes for that token (same visible keys, same positions), so log-probs and gradients agree up
to float rounding; the prompt costs P tokens instead of 2P. Segments are packed first-fit
(longest first) into rows no longer than the longest segment, so rows carry little padding.

Targets are addressed explicitly: the first chosen and the first rejected token are both
predicted by the last prompt position, which is why a batch carries `pred_index` (flat position
of the predicting hidden state) instead of a shifted mask. A completion may hold tokens that are
context only (`TokenizedPair.chosen_mask` / `rejected_mask`: the user turns inside a multi-turn
DPO completion): they sit in the segment like any other token and get no address.

The mask is a function of two small [rows, L] id tensors (segment and branch of each token,
`may_attend`). It is built from them on the model's device, never as a [rows, 1, L, L] tensor on
the host copied over each micro-batch: dense for SDPA, or as flex_attention's BlockMask
(`block_mask=True`, for a model set up by rlhf_engine/attention.py).
"""

from __future__ import annotations

import torch

from rlhf_engine.data.tokenize import TokenizedPair

PROMPT, CHOSEN, REJECTED = 0, 1, 2


def _place(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: rows of segment indices, each row's total length <= capacity.

    Ties are broken by index, so the layout is a pure function of the lengths.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def may_attend(seg_q, seg_k, branch_q, branch_k, q, k):
    """The packed layout's attention rule for query token q and key token k of one row.

    Elementwise over tensors: broadcast [rows, L, 1] against [rows, 1, L] for the dense mask,
    or scalars inside flex_attention's mask_mod; the one statement of the rule for both.
    A padding token (segment -1) attends to itself only, so no softmax row is empty.
    """
    same_branch = (branch_k == PROMPT) | (branch_q == branch_k)
    return ((seg_q == seg_k) & (seg_q >= 0) & same_branch & (k <= q)) | (q == k)


def dense_mask(segment: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """[rows, 1, L, L] bool (True = may attend) from [rows, L] ids, on their device."""
    idx = torch.arange(segment.shape[1], device=segment.device)
    mask = may_attend(segment[:, :, None], segment[:, None, :], branch[:, :, None], branch[:, None, :],
                      idx[:, None], idx[None, :])
    return mask[:, None]


def _block_mask(segment: torch.Tensor, branch: torch.Tensor):
    """The same rule as a flex_attention BlockMask, on the ids' device."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, _h, q, k):
        return may_attend(segment[b, q], segment[b, k], branch[b, q], branch[b, k], q, k)

    rows, width = segment.shape
    return create_block_mask(mask_mod, rows, None, width, width, device=segment.device)


def pack_pairs(pairs: list[TokenizedPair], pad_id: int, *, row_capacity: int | None = None,
               device: torch.device | str | None = None, block_mask: bool = False) -> dict:
    """Pack pairs into prefix-shared rows.

    Returns input_ids/position_ids [rows, L], segment_ids/branch_ids [rows, L] (on `device`),
    attention_mask [rows, 1, L, L] (bool, True = may attend; built on `device`, default the
    host; a BlockMask with `block_mask=True`), and for every completion token: pred_index (flat
    index into [rows * L] of the hidden state predicting it), targets (its id) and seq (0..n-1
    chosen of pair i, n..2n-1 rejected).
    `num_seqs` = 2n; `tokens` = real tokens in the batch; `padding_fraction` of [rows, L].
    """
    n = len(pairs)
    lengths = [len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs]
    capacity = max(row_capacity or 0, max(lengths))
    rows = _place(lengths, capacity)
    width = max(sum(lengths[i] for i in row) for row in rows)

    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    group = torch.full((len(rows), width), -1, dtype=torch.long)  # segment id; -1 = padding
    branch = torch.full((len(rows), width), -1, dtype=torch.long)
    pred_index, targets, seq = [], [], []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            p, c, j = pairs[i].prompt, pairs[i].chosen, pairs[i].rejected
            if not p:
                raise ValueError("a pair needs at least one prompt token to predict its first completion token")
            P = len(p)
            input_ids[r, at:at + P + len(c) + len(j)] = torch.tensor(p + c + j, dtype=torch.long)
            position_ids[r, at:at + P] = torch.arange(P)
            position_ids[r, at + P:at + P + len(c)] = torch.arange(P, P + len(c))
            position_ids[r, at + P + len(c):at + P + len(c) + len(j)] = torch.arange(P, P + len(j))
            group[r, at:at + P + len(c) + len(j)] = i
            branch[r, at:at + P] = PROMPT
            branch[r, at + P:at + P + len(c)] = CHOSEN
            branch[r, at + P + len(c):at + P + len(c) + len(j)] = REJECTED
            base = r * width + at
            last_prompt = base + P - 1
            sides = ((c, pairs[i].chosen_mask, P, i), (j, pairs[i].rejected_mask, P + len(c), n + i))
            for ids, mask, start, sid in sides:
                # token 0 is predicted by the last prompt position, token t>0 by token t-1 of its own branch
                predicted_by = [last_prompt, *range(base + start, base + start + len(ids) - 1)][:len(ids)]
                kept = range(len(ids)) if mask is None else [t for t, target in enumerate(mask) if target]
                pred_index.extend(predicted_by[t] for t in kept)
                targets.extend(ids[t] for t in kept)
                seq.extend([sid] * len(kept))
            at += lengths[i]

    group, branch = group.to(device), branch.to(device)
    tokens = sum(lengths)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "segment_ids": group,
        "branch_ids": branch,
        "attention_mask": (_block_mask if block_mask else dense_mask)(group, branch),
        "pred_index": torch.tensor(pred_index, dtype=torch.long),
        "targets": torch.tensor(targets, dtype=torch.long),
        "seq": torch.tensor(seq, dtype=torch.long),
        "num_seqs": 2 * n,
        "tokens": tokens,
        "padding_fraction": 1.0 - tokens / input_ids.numel(),
    }

