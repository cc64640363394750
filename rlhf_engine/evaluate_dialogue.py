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

    python -m rlhf_engine.evaluate_dialogue --config job.yaml --adapter runs/x/adapter \
        [--data seeds.jsonl] [--judge function:remember_rules] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from rlhf_engine.rollout.hf_backend import HFBackend
from rlhf_engine.rollout.dialogue import Dialogue, Roller

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


def format_table(rows: dict[str, dict]) -> str:
    """Markdown table: one row per method, one column per turn, plus the average."""
    num_turns = max(len(r["turns"]) for r in rows.values())
    head = "| method | " + " | ".join(f"turn {h}" for h in range(1, num_turns + 1)) + " | average |"
    lines = [head, "|" + "---|" * (num_turns + 2)]
    for name, r in rows.items():
        cells = [f"{t['win_rate'] * 100:.1f} [{t['ci95'][0] * 100:.0f}, {t['ci95'][1] * 100:.0f}] "
                 f"ties {t['tie_rate'] * 100:.0f}%" if t["n"] else "n/a" for t in r["turns"]]
        average = "n/a" if r["average_win_rate"] is None else f"{r['average_win_rate'] * 100:.1f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {average} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the job's TrainConfig (YAML or JSON)")
    parser.add_argument("--adapter", help="trained adapter directory; omitted: base against base")
    parser.add_argument("--data", help="dialogue/prompt seeds; default: the config's validation_file")
    parser.add_argument("--judge", help="TYPE:NAME reward source; default: the job's reward")
    parser.add_argument("--limit", type=int, default=0, help="use the first N seeds only")
    parser.add_argument("--out", help="write the result JSON here")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--registry", default=None, help="operator model-registry file")
    args = parser.parse_args(argv)

    import yaml
    from peft import PeftModel

    from rlhf_engine.algorithms.online import make_users
    from rlhf_engine.data import formats
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading
    from rlhf_engine.rewards import make_scorer
    from rlhf_engine.rollout.generation import stop_ids
    from rlhf_engine.rollout.dialogue import Sampling, seeds_from_examples
    from rlhf_engine.spec import LoraSpec, RewardSource, TrainConfig

    config = TrainConfig.model_validate(yaml.safe_load(Path(args.config).read_text()))
    hp = config.method.hyperparameters
    registry = ModelRegistry.load(args.registry)
    model_dir = loading.materialise(registry.get(config.model), args.cache_dir)
    tokenizer = loading.load_tokenizer(model_dir)
    base = loading.load_causal_lm(model_dir, device=loading.pick_device())
    model = PeftModel.from_pretrained(base, args.adapter) if args.adapter else loading.add_lora(base, LoraSpec(), seed=0)
    data = args.data or config.validation_file or config.training_file
    seeds = seeds_from_examples(formats.load_jsonl(data).examples)[: args.limit or None]
    source = RewardSource(type=args.judge.split(":", 1)[0], name=args.judge.split(":", 1)[1]) if args.judge else hp.reward
    judge = make_scorer(source, registry=registry, cache_dir=args.cache_dir)
    sampling = Sampling(hp.max_new_tokens, hp.temperature, hp.top_p, tuple(stop_ids(tokenizer)))
    users = make_users(hp, model, tokenizer, sampling, registry, args.cache_dir, config.model)
    result = evaluate_dialogue(model, tokenizer, seeds, judge=judge, users=users, sampling=sampling,
                               num_turns=getattr(hp, "num_turns", 1), seed=config.seed)
    result["judge"] = source.model_dump()
    print(format_table({args.adapter or "base": result}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
