"""DPO and its family: what the training loop needs from an offline preference method.

The loop (rlhf_engine/train.py) owns optimisation; this file owns the batch and the loss. The
reference log-probs arrive precomputed (rlhf_engine/reference.py), so a step is one forward and
one backward over the chosen and rejected sides together.

Layout: by default each pair is packed prefix-shared and padding-free (rlhf_engine/packing.py):
the prompt is run once for both completions. `packing=False` (or RLHF_ENGINE_PACKING=0) selects
the plain layout, two right-padded rows per pair; both give the same log-probs (tests prove it).
Packing only changes the layout inside a micro-batch, never which examples share a step.
"""

from __future__ import annotations

import os

import torch

from rlhf_engine import losses
from rlhf_engine.attention import uses_flex
from rlhf_engine.data.batching import collate_pairs, padding_fraction
from rlhf_engine.packing import pack_pairs
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.logprobs import completion_logps
from rlhf_engine.spec import DpoHyperparameters


def packing_default() -> bool:
    return os.environ.get("RLHF_ENGINE_PACKING", "1").lower() not in ("0", "false", "no", "off")


def make_batch(pairs: list[TokenizedPair], pad_id: int, packing: bool, model=None) -> tuple[dict, float, int]:
    """(batch, padding fraction, tokens the forward processes) in the packed or the plain layout;
    a packed batch's attention mask is built for `model`: on its device, as a flex BlockMask when
    it runs flex_attention (rlhf_engine/attention.py)."""
    if packing:
        device = next(model.parameters()).device if model is not None else None
        batch = pack_pairs(pairs, pad_id, device=device, block_mask=model is not None and uses_flex(model))
        return batch, batch["padding_fraction"], batch["tokens"]
    batch = collate_pairs(pairs, pad_id)
    return batch, padding_fraction(batch), int(batch["attention_mask"].sum())


def preference_loss(name: str, hp: DpoHyperparameters, pi_w, pi_l, ref_w, ref_l, len_w, len_l) -> torch.Tensor:
    beta = hp.beta_value
    if name == "sigmoid":
        return losses.dpo_sigmoid(losses.margin(pi_w, pi_l, ref_w, ref_l), beta, hp.label_smoothing)
    if name == "robust":
        return losses.robust(losses.margin(pi_w, pi_l, ref_w, ref_l), beta, hp.label_smoothing)
    if name == "hinge":
        return losses.hinge(losses.margin(pi_w, pi_l, ref_w, ref_l), beta)
    if name == "ipo":  # length-averaged log-probs, as IPO is usually run (and as TRL does)
        return losses.ipo(losses.margin(pi_w / len_w, pi_l / len_l, ref_w / len_w, ref_l / len_l), beta)
    if name == "simpo":
        return losses.simpo(pi_w / len_w, pi_l / len_l, beta, hp.simpo_gamma)
    if name == "sft":
        return losses.sft(pi_w / len_w)
    raise ValueError(f"unknown loss {name!r}")


class DPO:
    def __init__(self, hp: DpoHyperparameters, pairs: list[TokenizedPair], ref_logps: torch.Tensor, pad_id: int,
                 eval_pairs: list[TokenizedPair] | None = None, eval_ref_logps: torch.Tensor | None = None,
                 *, packing: bool | None = None):
        self.hp, self.pairs, self.ref, self.pad_id = hp, pairs, ref_logps, pad_id
        self.packing = packing_default() if packing is None else packing
        self.eval_pairs, self.eval_ref = eval_pairs or [], eval_ref_logps
        self.weights = hp.weighted_losses

    @property
    def num_examples(self) -> int:
        return len(self.pairs)

    def _forward(self, model, pairs, ref):
        """(mean loss, statistics as tensors on the model's device, tokens processed)."""
        batch, padding, tokens = make_batch(pairs, self.pad_id, self.packing, model)
        sums, counts = completion_logps(model, batch)
        n = len(pairs)
        pi_w, pi_l = sums[:n], sums[n:]
        len_w, len_l = counts[:n].to(sums.dtype), counts[n:].to(sums.dtype)
        ref = ref.to(device=sums.device, dtype=sums.dtype)
        ref_w, ref_l = ref[:, 0], ref[:, 1]
        per_example = sum(w * preference_loss(name, self.hp, pi_w, pi_l, ref_w, ref_l, len_w, len_l)
                          for name, w in self.weights.items())
        beta = self.hp.beta_value
        with torch.no_grad():
            r_w, r_l = beta * (pi_w - ref_w), beta * (pi_l - ref_l)
            stats = {
                "rewards/chosen": r_w.mean(),
                "rewards/rejected": r_l.mean(),
                "rewards/margins": (r_w - r_l).mean(),
                "rewards/accuracies": (r_w > r_l).float().mean(),
                "logps/chosen": pi_w.mean(),
                "logps/rejected": pi_l.mean(),
                "padding_fraction": padding,
            }
        return per_example.mean(), stats, tokens

    def loss(self, model, indices: list[int]):
        """Mean loss over the pairs at `indices`, step statistics, and tokens processed."""
        return self._forward(model, [self.pairs[i] for i in indices], self.ref[indices])

    @torch.no_grad()
    def evaluate(self, model, batch_size: int = 8) -> dict[str, torch.Tensor] | None:
        if not self.eval_pairs:
            return None
        totals: dict[str, torch.Tensor] = {}
        n = len(self.eval_pairs)
        for start in range(0, n, batch_size):
            idx = list(range(start, min(start + batch_size, n)))
            loss, stats, _ = self._forward(model, [self.eval_pairs[i] for i in idx], self.eval_ref[idx])
            stats.pop("padding_fraction")
            for key, value in {"loss": loss, **stats}.items():
                totals[key] = totals.get(key, 0.0) + value.double() * len(idx) / n
        return {f"eval/{k}": v for k, v in totals.items()}
