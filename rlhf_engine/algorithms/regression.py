"""The regression both REBEL and REFUEL train on, as a train.fit algorithm.

For a state s and two responses a, a' sampled from pi_t with returns R, R':

    loss = mean( ((log pi(a|s) - log pi_t(a|s)) - (log pi(a'|s) - log pi_t(a'|s)) - eta (R - R'))^2 )

log pi are sums over the response tokens (no length normalisation) of log-softmax(logits / T), T
the sampling temperature. log pi_t is computed once at collection time through the same
rlhf_engine.logprobs.completion_logps call, batch layout and precision (rlhf_engine/precision.py)
the loss uses, so at the first step of every iteration the log-ratios are zero up to float noise.
That also needs the same function in both places: LoRA dropout is off for these methods
(rlhf_engine/run.py), since log pi_t is a deterministic (eval-mode) forward. The papers write (1/eta) on the log-ratio
term instead of eta on the reward: same minimiser, gradient scaled by eta^2.

Returns (Gao et al. 2024, sec. 4; the reference code): R = r - kl_coef (log pi_t(a|s) - log pi_ref(a|s))
+ eos_penalty [a did not finish], with pi_ref the base model (adapter disabled).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from rlhf_engine import losses
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.logprobs import completion_logps
from rlhf_engine.pair_batches import make_batch
from rlhf_engine.precision import Precision


@dataclass
class Pair:
    prompt: list[int]
    a: list[int]
    b: list[int]
    logp_a: float  # log pi_t(a|s), collection time
    logp_b: float
    reward_a: float  # the return R the loss regresses on (after KL and EOS shaping)
    reward_b: float


def regression_batch(pairs: list[Pair], pad_id: int, packing: bool = True,
                     model=None) -> tuple[dict, float, int]:
    """(batch, padding fraction, tokens) holding both responses of each pair: sequence i < n is a_i,
    n + i is b_i. Only response tokens are targets (for REFUEL: turn h's assistant reply; earlier
    turns sit in the prompt). Packed by default (rlhf_engine/packing.py): the shared prompt is
    computed once per pair, which for long dialogue prefixes is most of the work."""
    as_pairs = [TokenizedPair(p.prompt, p.a, p.b) for p in pairs]
    return make_batch(as_pairs, pad_id, packing, model)


@torch.no_grad()
def pair_logps(model, pairs: list[Pair], pad_id: int, *, temperature: float, use_adapter: bool = True,
               batches: list[list[int]] | None = None, batch_size: int = 8,
               precision: Precision | None = None, packing: bool = True) -> tuple[list[float], list[float]]:
    """(log pi(a|s), log pi(a'|s)) per pair in eval mode, through the loss's own batch layout,
    completion_logps and `precision` (the job's, as train.fit uses; default the weights' dtype);
    use_adapter=False gives the base model pi_ref.

    `batches` (lists of pair indices) fixes each forward's composition: given fit's own
    micro-batches (train.epoch_micro_batches), log pi_t equals the training forward's log pi at an
    unchanged policy bit for bit, so pairs whose returns tie give an exactly zero gradient instead
    of float noise that Adam would scale up to a full step. Default: length-sorted batches."""
    precision = precision or Precision.native(model)
    out_a, out_b = [0.0] * len(pairs), [0.0] * len(pairs)
    if batches is None:
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].prompt) + len(pairs[i].a) + len(pairs[i].b))
        batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter() if not use_adapter else contextlib.nullcontext(), precision.autocast():
            for idx in batches:
                batch = regression_batch([pairs[i] for i in idx], pad_id, packing, model)[0]
                sums, _ = completion_logps(model, batch, temperature=temperature)
                sums = sums.tolist()
                for k, i in enumerate(idx):
                    out_a[i], out_b[i] = sums[k], sums[len(idx) + k]
    finally:
        model.train(was_training)
    return out_a, out_b


def sign_agreement(logratio_diff: torch.Tensor, return_diff: torch.Tensor) -> dict[str, torch.Tensor]:
    """Does the policy prefer (relative to pi_t) the response with the higher return?

    `sign_agreement` is the fraction of agreeing signs among the pairs where both differences are
    non-zero (NaN, reported as null, when there is none); `sign_ties` is the fraction of pairs
    where either is 0 (equal returns, or a policy that does not separate the two), where the
    question has no answer. Counted as disagreements, ties pulled the agreement below its value.
    """
    product = logratio_diff * return_diff
    untied = product != 0
    return {"sign_agreement": (product > 0).sum() / untied.sum(), "sign_ties": (~untied).float().mean()}


class Regression:
    def __init__(self, pairs: list[Pair], *, eta: float, temperature: float, pad_id: int,
                 iteration_stats: dict[str, float] | None = None, packing: bool = True):
        self.pairs, self.eta, self.temperature, self.pad_id, self.packing = pairs, eta, temperature, pad_id, packing
        # Constant over the iteration; repeated in every step's metrics so a plot against steps shows them.
        self.iteration_stats = iteration_stats or {}

    @property
    def num_examples(self) -> int:
        return len(self.pairs)

    def _forward(self, model, pairs: list[Pair]):
        """(log-ratio of a, of b against pi_t, returns [n, 2], padding fraction, tokens)."""
        batch, padding, tokens = regression_batch(pairs, self.pad_id, self.packing, model)
        sums, _ = completion_logps(model, batch, temperature=self.temperature)
        n = len(pairs)
        old = torch.tensor([[p.logp_a, p.logp_b] for p in pairs], device=sums.device, dtype=sums.dtype)
        rew = torch.tensor([[p.reward_a, p.reward_b] for p in pairs], device=sums.device, dtype=sums.dtype)
        return sums[:n] - old[:, 0], sums[n:] - old[:, 1], rew, padding, tokens

    def loss(self, model, indices: list[int]):
        """Step statistics (tensors) come from the forward before the update: with one epoch every
        pair is seen by a policy that has not trained on it yet (at the first step of an iteration
        the log-ratios are 0 up to float noise, and the agreement says nothing); `evaluate`
        measures it after training."""
        ratio_a, ratio_b, rew, padding, tokens = self._forward(model, [self.pairs[i] for i in indices])
        per_pair = losses.regression(ratio_a, ratio_b, rew[:, 0], rew[:, 1], self.eta)
        stats = {**_statistics(per_pair, ratio_a, ratio_b, rew), "padding_fraction": padding, **self.iteration_stats}
        return per_pair.mean(), stats, tokens

    @torch.no_grad()
    def evaluate(self, model, batch_size: int = 8) -> dict[str, torch.Tensor]:
        """After the iteration's training, over all its own pairs at once: whether pi_{t+1} / pi_t
        now ranks the two responses of each pair as their returns do."""
        parts = [self._forward(model, self.pairs[s:s + batch_size])[:3] for s in range(0, len(self.pairs), batch_size)]
        ratio_a, ratio_b, rew = (torch.cat(x) for x in zip(*parts))
        per_pair = losses.regression(ratio_a, ratio_b, rew[:, 0], rew[:, 1], self.eta)
        return {f"eval/{k}": v for k, v in _statistics(per_pair, ratio_a, ratio_b, rew).items()}


@torch.no_grad()
def _statistics(per_pair, ratio_a, ratio_b, rew) -> dict[str, torch.Tensor]:
    return {"regression_loss": per_pair.mean(), **sign_agreement(ratio_a - ratio_b, rew[:, 0] - rew[:, 1]),
            "logratio_abs": torch.cat([ratio_a, ratio_b]).abs().mean()}
