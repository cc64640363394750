"""DPO and its family: what the training loop needs from an offline preference method.

The loop (rlhf_engine/train.py) owns optimisation; this file owns the batch and the loss. The
reference log-probs arrive precomputed (rlhf_engine/reference.py), so a step is one forward and
one backward over the chosen and rejected sides together.

Layout: by default each pair is packed prefix-shared and padding-free; `packing=False`
(TrainConfig.packing) selects the plain layout, two right-padded rows per pair
(rlhf_engine/pair_batches.py); both give the same log-probs.
"""

from __future__ import annotations

import torch

from rlhf_engine import losses
from rlhf_engine.algorithms.evaluation import evaluate_in_batches
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.job import Job, fit, load_pairs, load_policy, reference_logps, save_result
from rlhf_engine.logprobs import completion_logps
from rlhf_engine.outcome import RunResult
from rlhf_engine.pair_batches import make_batch
from rlhf_engine.samples import offline_samples
from rlhf_engine.spec import DpoHyperparameters


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
                 *, packing: bool = True):
        self.hp, self.pairs, self.ref, self.pad_id, self.packing = hp, pairs, ref_logps, pad_id, packing
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

    def evaluate(self, model) -> dict[str, torch.Tensor] | None:
        def measure(idx):
            loss, stats, _ = self._forward(model, [self.eval_pairs[i] for i in idx], self.eval_ref[idx])
            stats.pop("padding_fraction")
            return {"loss": loss, **stats}

        return evaluate_in_batches(list(range(len(self.eval_pairs))), measure)


def train(job: Job) -> RunResult:
    """`method.type = "dpo"`: the file's pairs against log-probs of the model the job starts from."""
    model, tokenizer = load_policy(job)
    pairs, eval_pairs = load_pairs(job, tokenizer)
    pad_id, packing = tokenizer.pad_token_id, job.config.packing
    ref, eval_ref = reference_logps(job, model, pad_id, pairs, eval_pairs)
    algo = DPO(job.hp, pairs, ref, pad_id, eval_pairs, eval_ref, packing=packing)
    samples = offline_samples(job, tokenizer)
    if samples:
        samples.base(model)
    return save_result(job, model, fit(job, model, algo, samples=samples), tokenizer=tokenizer)
