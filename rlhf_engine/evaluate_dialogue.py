"""Per-turn win rate of a trained policy against its base model, as in the REFUEL paper's tables.

For every evaluation seed, the policy (adapter on) and the base (adapter off) each roll out an
H-turn dialogue with the same user simulator (with dataset users both see the same user turns).
For each turn h = 1..H, the judge scores both dialogues truncated after assistant turn h:

    outcome_h = 1 if R_policy > R_base, 1/2 on a tie, 0 otherwise
    win_rate_h = mean outcome_h,   95% CI = win_rate_h -/+ 1.96 sd / sqrt(n)   (normal approximation
    on the per-dialogue outcomes, sample sd, clipped to [0, 1]; ties make the outcome three-valued,
    so a Wilson interval for a binomial does not apply)

plus the average of the per-turn win rates. Dialogues the judge cannot score are left out.

    python -m rlhf_engine.evaluate_dialogue --config job.yaml --adapter runs/x/adapter \
        [--data seeds.jsonl] [--judge function:remember_rules] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rlhf_engine.rollout.backend import HFBackend
from rlhf_engine.rollout.dialogue import Dialogue, Roller


def win_rate_ci(outcomes: list[float], z: float = 1.96) -> tuple[float | None, float | None, float | None]:
    n = len(outcomes)
    if n == 0:  # None, not NaN: the result is stored as JSON
        return None, None, None
    mean = sum(outcomes) / n
    sd = math.sqrt(sum((o - mean) ** 2 for o in outcomes) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def rollout_side(model, tokenizer, seeds, *, use_adapter: bool, users, sampling, num_turns: int, seed: int):
    roller = Roller(tokenizer, HFBackend(model, tokenizer.pad_token_id, use_adapter=use_adapter), users, sampling)
    dialogues = [Dialogue.start(s) for s in seeds]
    roller.rollout(dialogues, [roller.horizon(d, num_turns) for d in dialogues], seed)
    return dialogues


def evaluate_dialogue(model, tokenizer, seeds, *, judge, users, sampling, num_turns: int, seed: int = 0,
                      base_dialogues=None) -> dict:
    """Win rate of `model` with its adapter against the same model without it, per turn (see above).

    Both sides sample with the same seeds (common random numbers): where the policy has not moved
    they produce the same dialogue, a tie, instead of adding sampling noise to the comparison.
    `base_dialogues` (from rollout_side(use_adapter=False) with the same arguments) skips the base
    rollouts when several adapters are compared on the same seeds.
    """
    kw = dict(users=users, sampling=sampling, num_turns=num_turns, seed=seed + 7)
    sides = {"policy": rollout_side(model, tokenizer, seeds, use_adapter=True, **kw),
             "base": base_dialogues or rollout_side(model, tokenizer, seeds, use_adapter=False, **kw)}
    turns = []
    for h in range(1, num_turns + 1):
        idx = [i for i, d in enumerate(sides["policy"]) if len(d.turns) >= h and len(sides["base"][i].turns) >= h]
        scores = {name: judge.score([ds[i].upto(h) for i in idx], [ds[i].seed.info for i in idx])
                  for name, ds in sides.items()}
        outcomes, rp, rb = [], [], []
        for p, b in zip(scores["policy"], scores["base"]):
            if p is None or b is None:
                continue
            outcomes.append(1.0 if p > b else 0.5 if p == b else 0.0)
            rp.append(p)
            rb.append(b)
        rate, lo, hi = win_rate_ci(outcomes)
        turns.append({"turn": h, "win_rate": rate, "ci95": [lo, hi], "n": len(outcomes),
                      "ties": sum(o == 0.5 for o in outcomes),
                      "reward_policy": sum(rp) / len(rp) if rp else None,
                      "reward_base": sum(rb) / len(rb) if rb else None})
    rates = [t["win_rate"] for t in turns if t["n"]]
    return {"turns": turns, "average_win_rate": sum(rates) / len(rates) if rates else None,
            "ci_method": "normal approximation on per-dialogue outcomes (win 1, tie 0.5, loss 0), z=1.96",
            "num_dialogues": len(seeds), "num_turns": num_turns,
            "samples": {name: [{"role": m.role, "content": m.content} for m in ds[0].messages]
                        for name, ds in sides.items()} if seeds else {}}


def format_table(rows: dict[str, dict]) -> str:
    """Markdown table: one row per method, one column per turn, plus the average."""
    num_turns = max(len(r["turns"]) for r in rows.values())
    head = "| method | " + " | ".join(f"turn {h}" for h in range(1, num_turns + 1)) + " | average |"
    lines = [head, "|" + "---|" * (num_turns + 2)]
    for name, r in rows.items():
        cells = [f"{t['win_rate'] * 100:.1f} [{t['ci95'][0] * 100:.0f}, {t['ci95'][1] * 100:.0f}]"
                 if t["n"] else "n/a" for t in r["turns"]]
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

    from rlhf_engine.algorithms.online import _users
    from rlhf_engine.data import formats
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading
    from rlhf_engine.rewards import make_scorer
    from rlhf_engine.rollout.backend import stop_ids
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
    users = _users(hp, model, tokenizer, sampling, registry, args.cache_dir, config.model)
    result = evaluate_dialogue(model, tokenizer, seeds, judge=judge, users=users, sampling=sampling,
                               num_turns=getattr(hp, "num_turns", 1), seed=config.seed)
    result["judge"] = source.model_dump()
    print(format_table({args.adapter or "base": result}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
