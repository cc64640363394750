"""Per-turn win rate of a saved adapter against its base model (rlhf_engine/evaluate_dialogue.py).

    python -m rlhf_engine.evals.dialogue --config job.yaml --adapter runs/x/adapter \
        [--data seeds.jsonl] [--judge function:remember_rules] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlhf_engine.evaluate_dialogue import evaluate_dialogue


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

    from rlhf_engine.data import formats
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading
    from rlhf_engine.precision import default_device
    from rlhf_engine.rewards import make_scorer
    from rlhf_engine.rollout.dialogue import Sampling, seeds_from_examples
    from rlhf_engine.rollout.generation import stop_ids
    from rlhf_engine.rollout.users import make_users
    from rlhf_engine.spec import LoraSpec, RewardSource, TrainConfig

    config = TrainConfig.model_validate(yaml.safe_load(Path(args.config).read_text()))
    hp = config.method.hyperparameters
    registry = ModelRegistry.load(args.registry)
    model_dir = loading.materialise(registry.get(config.model), args.cache_dir)
    tokenizer = loading.load_tokenizer(model_dir)
    base = loading.load_causal_lm(model_dir, device=default_device())
    model = (PeftModel.from_pretrained(base, args.adapter) if args.adapter
             else loading.add_lora(base, LoraSpec(), seed=0))
    data = args.data or config.validation_file or config.training_file
    seeds = seeds_from_examples(formats.load_jsonl(data).examples)[: args.limit or None]
    source = (RewardSource(type=args.judge.split(":", 1)[0], name=args.judge.split(":", 1)[1]) if args.judge
              else hp.reward)
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
