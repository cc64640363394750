"""Per-turn win rate of a trained policy against its base model, as in the REFUEL paper's tables.

For every evaluation seed, the policy (adapter on) and the base (adapter off) each roll out an
H-turn dialogue with the same user simulator, from the same random streams: dialogue i of both
sides draws turn k with the same seed (rlhf_engine/rollout/dialogue.py), whatever else shares its
batch. Where the policy has not moved, both sides produce the same dialogue, a tie: a zero adapter
ties the base on every dialogue, so the comparison's null is exactly 50% with no sampling noise.

The judge gives each assistant turn its own reward r_h (rlhf_engine/rewards: a per-turn reward, or
a scalar one split by differences). For each turn h:

    outcome_h = 1 if r_h(policy) > r_h(base), 1/2 on a tie, 0 otherwise        (turn h's reply)
    win_rate_h = mean outcome_h over dialogues, with a paired bootstrap 95% CI and the tie rate

`cumulative_win_rate` compares the rewards summed through turn h instead (what the dialogue so
far earned). Dialogues the judge cannot score are left out. The bootstrap resamples dialogues (and
first the seeds, when results of several training seeds are pooled: `bootstrap_ci`), 2000
resamples, percentile interval, from a fixed RNG seed so a rerun prints the same interval.

Online jobs end with this evaluation (algorithms/online.py); rlhf_engine/evals/dialogue.py runs it
on a saved adapter.
"""

from __future__ import annotations

import random

from rlhf_engine.rollout.dialogue import Dialogue, Roller
from rlhf_engine.rollout.hf_backend import HFBackend

RESAMPLES = 2000


def bootstrap_ci(groups: list[list[float]], *, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of the pooled values of `groups` (one group per training seed, each a
    list of per-dialogue outcomes): a percentile bootstrap that resamples groups, then values
    within each. None for no values (stored as JSON, so not NaN)."""
    groups = [g for g in groups if g]
    if not groups:
        return None, None, None
    pooled = [v for g in groups for v in g]
    rng, means = random.Random(seed), []
    for _ in range(resamples):
        picked = [rng.choice(groups) for _ in groups] if len(groups) > 1 else groups
        sample = [rng.choice(g) for g in picked for _ in g]
        means.append(sum(sample) / len(sample))
    means.sort()
    tail = (1 - level) / 2
    low, high = means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]
    return sum(pooled) / len(pooled), low, high


def outcome(policy: float, base: float) -> float:
    return 1.0 if policy > base else 0.5 if policy == base else 0.0


def rollout_side(model, tokenizer, seeds, *, use_adapter: bool, users, sampling, num_turns: int, seed: int):
    roller = Roller(tokenizer, HFBackend(model, tokenizer.pad_token_id, use_adapter=use_adapter), users, sampling)
    dialogues = [Dialogue.start(s, stream=i) for i, s in enumerate(seeds)]  # dialogue i: stream i, both sides
    roller.rollout(dialogues, [roller.horizon(d, num_turns) for d in dialogues], seed)
    return dialogues


def turn_rewards(judge, dialogues) -> list[list[float] | None]:
    return judge.score_turns([d.messages for d in dialogues], [d.seed.info for d in dialogues],
                             [len(d.turns) for d in dialogues])


def turn_outcomes(policy_rewards, base_rewards, num_turns: int) -> list[dict]:
    """Per turn h: the per-dialogue outcomes of turn h's reply and of the rewards through h."""
    rows = []
    for h in range(1, num_turns + 1):
        both = [(p, b) for p, b in zip(policy_rewards, base_rewards)
                if p is not None and b is not None and len(p) >= h and len(b) >= h]
        rows.append({"turn": h, "outcomes": [outcome(p[h - 1], b[h - 1]) for p, b in both],
                     "cumulative": [outcome(sum(p[:h]), sum(b[:h])) for p, b in both],
                     "reward_policy": [p[h - 1] for p, _ in both], "reward_base": [b[h - 1] for _, b in both]})
    return rows


def summarise(per_seed: list[list[dict]]) -> dict:
    """Win rates per turn from the turn_outcomes of one or several training seeds (pooled)."""
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    turns = []
    for h, rows in enumerate(zip(*per_seed), start=1):
        outcomes = [r["outcomes"] for r in rows]
        rate, lo, hi = bootstrap_ci(outcomes)
        flat = [o for g in outcomes for o in g]
        turns.append({"turn": h, "win_rate": rate, "ci95": [lo, hi], "n": len(flat),
                      "ties": sum(o == 0.5 for o in flat), "tie_rate": mean([float(o == 0.5) for o in flat]),
                      "cumulative_win_rate": mean([o for r in rows for o in r["cumulative"]]),
                      "reward_policy": mean([v for r in rows for v in r["reward_policy"]]),
                      "reward_base": mean([v for r in rows for v in r["reward_base"]])})
    rates = [t["win_rate"] for t in turns if t["n"]]
    return {"turns": turns, "average_win_rate": mean(rates), "seeds": len(per_seed),
            "ci_method": f"paired percentile bootstrap over dialogues{' within seeds' if len(per_seed) > 1 else ''}, "
                         f"{RESAMPLES} resamples, 95%; outcome win 1, tie 0.5, loss 0 on turn h's own reward"}


def evaluate_dialogue(model, tokenizer, seeds, *, judge, users, sampling, num_turns: int, seed: int = 0,
                      base_dialogues=None) -> dict:
    """Win rate of `model` with its adapter against the same model without it, per turn (see above).

    `base_dialogues` (rollout_side(use_adapter=False) with the same seeds, users, sampling, turns
    and seed) skips the base rollouts when several adapters are compared on the same seeds.
    """
    kw = dict(users=users, sampling=sampling, num_turns=num_turns, seed=seed)
    sides = {"policy": rollout_side(model, tokenizer, seeds, use_adapter=True, **kw),
             "base": base_dialogues or rollout_side(model, tokenizer, seeds, use_adapter=False, **kw)}
    rewards = {name: turn_rewards(judge, ds) for name, ds in sides.items()}
    result = summarise([turn_outcomes(rewards["policy"], rewards["base"], num_turns)])
    return {**result, "num_dialogues": len(seeds), "num_turns": num_turns,
            "samples": {name: [{"role": m.role, "content": m.content} for m in ds[0].messages]
                        for name, ds in sides.items()} if seeds else {}}
