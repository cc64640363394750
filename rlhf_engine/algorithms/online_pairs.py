"""One iteration's candidates -> the pairs REBEL and REFUEL regress on, on one process or on N ranks.

    share     rank r rolls out its contiguous share of the iteration's seeds (`my_rows`; collect.py
              keeps every seed's stream and plan), drops identical and too-long candidates and scores
              the rest: a reward model runs on that share only
    gather    every rank receives every rank's scored candidates (all_gather_object) in rank order:
              their concatenation is N=1's list, so every rank holds the whole collection
    log pi_t  on the micro-batches this rank trains on in the fit's first epoch (its share of each,
              as distributed.Ranks.share cuts them), so that at the iteration's start the training
              forward reproduces it bit for bit (log-ratio exactly 0: a tied pair gives no gradient);
              gathered likewise. log pi_ref the same way, only when kl_coef > 0.

With one process every step is the identity: all the rows, the whole micro-batches.
"""

from __future__ import annotations

from rlhf_engine.algorithms.regression import Pair, pair_logps
from rlhf_engine.distributed import gather, rank_slice
from rlhf_engine.rewards.turns import future_return
from rlhf_engine.rollout.collect import Candidate
from rlhf_engine.train import epoch_micro_batches


def my_rows(n: int) -> list[int]:
    """The indices of an iteration's n seeds that this rank rolls out."""
    return rank_slice(list(range(n)))


def score(candidates: list[Candidate], scorer, hp) -> tuple[list[tuple[Candidate, float, float]], dict[str, int]]:
    """([(candidate, return a, return b)] of the candidates kept, {reason: number dropped})."""
    kept = [c for c in candidates if c.a != c.b]
    fits = [c for c in kept if len(c.prompt) + max(len(c.a), len(c.b)) <= hp.max_length]
    # Per-turn rewards of both dialogues; turn h's target is its return (REFUEL: the rewards from h
    # to the end, rlhf_engine/rewards/turns.py) or, with credit "immediate", its own reward alone.
    # REBEL's single turn is h = 1 of a 1-turn dialogue, where the two agree.
    horizons = [c.meta.get("horizon", 1) for c in fits]
    rewards = scorer.score_turns([c.dialogue_a for c in fits] + [c.dialogue_b for c in fits],
                                 [c.info for c in fits] * 2, horizons * 2)
    target = (lambda r, h: r[h - 1]) if getattr(hp, "credit", "future") == "immediate" else future_return
    returns = [None if r is None else target(r, c.meta.get("h", 1)) for c, r in zip(fits * 2, rewards)]
    scored = [(c, ra, rb) for c, ra, rb in zip(fits, returns[:len(fits)], returns[len(fits):])
              if ra is not None and rb is not None]
    dropped = {"identical": len(candidates) - len(kept), "failed_score": len(fits) - len(scored),
               "too_long": len(kept) - len(fits)}
    return scored, dropped


def gather_scored(scored: list, dropped: dict[str, int]) -> tuple[list, dict[str, int]]:
    """Every rank's scored candidates in rank order, and the dropped counts summed over ranks."""
    parts = gather((scored, dropped))
    return [x for part, _ in parts for x in part], {k: sum(d[k] for _, d in parts) for k in dropped}


def shared_logps(model, pairs: list[Pair], batches: list[list[int]], pad_id: int, **kwargs):
    """pair_logps of every pair: this rank computes the rows of its `batches`, every rank gets all."""
    a, b = pair_logps(model, pairs, pad_id, batches=batches, **kwargs)
    every = {i: ab for part in gather({i: (a[i], b[i]) for batch in batches for i in batch}) for i, ab in part.items()}
    return [every[i][0] for i in range(len(pairs))], [every[i][1] for i in range(len(pairs))]


def build_pairs(model, candidates: list[Candidate], scorer, hp, pad_id: int, precision=None, fit_seed: int = 0,
                packing: bool = True):
    """This rank's candidates -> the iteration's training pairs (every rank's) with log pi_t, shaped
    returns and the iteration's statistics.

    log pi_t is computed in the job's `precision` and on the micro-batches `fit(seed=fit_seed)`
    will train on, so that it is the training forward's own value at the iteration's start. pi_ref
    enters the returns only through the KL term: with kl_coef 0 its forward pass is skipped (and
    the iteration reports no `rollout/kl_to_base`).
    """
    scored, dropped = gather_scored(*score(candidates, scorer, hp))
    unscored = [Pair(c.prompt, c.a, c.b, 0.0, 0.0, 0.0, 0.0) for c, _, _ in scored]
    batches = [mine for chunk in epoch_micro_batches(len(unscored), hp, fit_seed, 0) if (mine := rank_slice(chunk))]
    kwargs = {"temperature": hp.temperature, "precision": precision, "packing": packing}
    old_a, old_b = shared_logps(model, unscored, batches, pad_id, **kwargs)
    kl_a, kl_b = [0.0] * len(scored), [0.0] * len(scored)  # log pi_t - log pi_ref on the sampled tokens
    if hp.kl_coef:
        ref_a, ref_b = shared_logps(model, unscored, batches, pad_id, use_adapter=False, **kwargs)
        kl_a, kl_b = [o - r for o, r in zip(old_a, ref_a)], [o - r for o, r in zip(old_b, ref_b)]
    pairs, raw = [], []
    for i, (c, ra, rb) in enumerate(scored):
        # R = r - kl_coef (log pi_t - log pi_ref) + eos_penalty [unfinished]
        shaped_a = ra - hp.kl_coef * kl_a[i] + hp.eos_penalty * (not c.finished_a)
        shaped_b = rb - hp.kl_coef * kl_b[i] + hp.eos_penalty * (not c.finished_b)
        pairs.append(Pair(c.prompt, c.a, c.b, old_a[i], old_b[i], shaped_a, shaped_b))
        raw += [ra, rb]
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    stats = {
        "rollout/pairs": float(len(pairs)),
        **{f"rollout/dropped_{k}": float(v) for k, v in dropped.items()},
        "rollout/reward_mean": mean(raw),
        "rollout/reward_gap": mean([abs(ra - rb) for _, ra, rb in scored]),
        **({"rollout/kl_to_base": mean(kl_a + kl_b)} if hp.kl_coef else {}),
        "rollout/response_tokens": mean([len(p.a) + len(p.b) for p in pairs]) / 2,
        "rollout/unfinished": mean([float(not f) for c, _, _ in scored for f in (c.finished_a, c.finished_b)]),
    }
    return pairs, stats
